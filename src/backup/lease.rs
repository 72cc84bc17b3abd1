//! Job locks as lease objects in the store itself, so that they hold across
//! hosts (two daemons, a daemon and a manual `cexdr backup`, Kubernetes
//! CronJobs on different nodes) with no other coordination service.
//!
//! `.locks/<job>.json` is created with `put_if_absent` (local: link(2),
//! S3: `If-None-Match: *`) and holds owner token, host, pid, acquisition
//! and expiry times. The holder renews it every third of its TTL; a lease
//! is taken over only once expired (a killed holder stops renewing). The
//! takeover of an expired lease is itself claimed with `put_if_absent` on
//! a marker named after the expired owner, so two takers cannot both win.
//! Expiry compares wall clocks of different hosts: keep them in NTP sync;
//! the TTL (minutes) dwarfs normal skew.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{one_line, Error, Result};
use crate::store::{self, DynStore};

/// Long enough to ride out a store hiccup, short enough that a killed run
/// blocks the next one only briefly.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    pub job: String,
    /// Random token naming this holder; renewals and release check it.
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub acquired_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LeaseRecord {
    fn holder(&self) -> String {
        format!("{} pid {}", self.host, self.pid)
    }
}

pub fn lease_key(job: &str) -> String {
    format!(".locks/{job}.json")
}

fn takeover_key(job: &str, expired_owner: &str) -> String {
    format!(".locks/{job}.takeover-{expired_owner}")
}

/// A held lease; renewed in the background until `release` (or drop).
pub struct Lease {
    store: DynStore,
    key: String,
    record: Arc<Mutex<LeaseRecord>>,
    /// Cancelled when the lease was lost (taken over, or not renewable
    /// before it expired): the job must stop.
    lost: CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
    /// Marker of the takeover that produced this lease, removed on release.
    takeover: Option<String>,
    released: bool,
}

async fn read(store: &DynStore, key: &str) -> Result<Option<LeaseRecord>> {
    if store.head(key).await?.is_none() {
        return Ok(None);
    }
    let data = match store::get_bytes(store.as_ref(), key).await {
        Ok(d) => d,
        // Released between head and get.
        Err(_) if store.head(key).await?.is_none() => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| Error::Store {
            store: store.describe(),
            op: "parse",
            key: key.into(),
            msg: format!("unreadable lease ({e}); delete it by hand if no run holds it"),
        })
}

fn encode(r: &LeaseRecord) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(r).expect("lease serialises"))
}

impl Lease {
    /// Takes the lease of `job`, or fails with `Error::Locked` naming the
    /// live holder.
    pub async fn acquire(store: DynStore, job: &str, ttl: Duration) -> Result<Lease> {
        let key = lease_key(job);
        let ttl_c = chrono::Duration::from_std(ttl).expect("ttl fits");
        let mut takeover = None;
        for attempt in 0..5 {
            let now = Utc::now();
            let rec = LeaseRecord {
                job: job.to_owned(),
                owner: format!("{:016x}", rand::random::<u64>()),
                host: crate::base::host_name(),
                pid: std::process::id(),
                acquired_at: now,
                renewed_at: now,
                expires_at: now + ttl_c,
            };
            if store.put_if_absent(&key, encode(&rec)).await? {
                tracing::debug!(job, owner = %rec.owner, "lease acquired");
                return Ok(Lease::start(store, key, rec, ttl, takeover));
            }
            let Some(cur) = read(&store, &key).await? else {
                continue; // released meanwhile: try again
            };
            if cur.expires_at > Utc::now() {
                // A faster taker got the lease after our takeover deleted the
                // expired one: our marker must not outlive this refusal.
                if let Some(m) = takeover.take() {
                    let _ = store.delete(&m).await;
                }
                return Err(Error::Locked {
                    job: job.to_owned(),
                    holder: cur.holder(),
                    since: cur.acquired_at.to_rfc3339(),
                });
            }
            // Expired: only the run that creates the takeover marker for
            // this very holder may delete it.
            let marker = takeover_key(job, &cur.owner);
            if store.put_if_absent(&marker, Bytes::new()).await? {
                // Re-read: the lease must still be the expired one (a
                // faster taker may have replaced it and removed its marker).
                match read(&store, &key).await? {
                    Some(again) if again.owner == cur.owner => {
                        tracing::warn!(job, holder = %cur.holder(), expired = %cur.expires_at, "taking over an expired lease");
                        store.delete(&key).await?;
                        takeover = Some(marker);
                    }
                    _ => {
                        let _ = store.delete(&marker).await;
                    }
                }
                continue;
            }
            // Someone else is taking over; give them a moment.
            tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
        }
        if let Some(m) = takeover.take() {
            let _ = store.delete(&m).await;
        }
        let cur = read(&store, &key).await?;
        Err(Error::Locked {
            job: job.to_owned(),
            holder: cur
                .as_ref()
                .map(LeaseRecord::holder)
                .unwrap_or_else(|| "another run (taking over an expired lease)".into()),
            since: cur
                .map(|c| c.acquired_at.to_rfc3339())
                .unwrap_or_else(|| Utc::now().to_rfc3339()),
        })
    }

    fn start(
        store: DynStore,
        key: String,
        rec: LeaseRecord,
        ttl: Duration,
        takeover: Option<String>,
    ) -> Lease {
        let record = Arc::new(Mutex::new(rec));
        let lost = CancellationToken::new();
        let renewer = tokio::spawn(renew_loop(
            store.clone(),
            key.clone(),
            record.clone(),
            ttl,
            lost.clone(),
        ));
        Lease {
            store,
            key,
            record,
            lost,
            renewer: Some(renewer),
            takeover,
            released: false,
        }
    }

    /// Cancelled when the lease is lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    pub async fn record(&self) -> LeaseRecord {
        self.record.lock().await.clone()
    }

    /// Stops renewing and deletes the lease if it is still ours.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        if let Some(t) = self.renewer.take() {
            t.abort();
        }
        let mine = self.record.lock().await.owner.clone();
        let res = match read(&self.store, &self.key).await {
            Ok(Some(cur)) if cur.owner == mine => self.store.delete(&self.key).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Some(m) = self.takeover.take() {
            let _ = self.store.delete(&m).await;
        }
        res
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(t) = self.renewer.take() {
            t.abort();
        }
        if self.released {
            return;
        }
        // Dropped without release (a panic, a cancelled task): free the
        // lease in the background rather than make the next run wait for
        // the expiry.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, key, record) = (self.store.clone(), self.key.clone(), self.record.clone());
            let marker = self.takeover.take();
            rt.spawn(async move {
                let mine = record.lock().await.owner.clone();
                if let Ok(Some(cur)) = read(&store, &key).await {
                    if cur.owner == mine {
                        let _ = store.delete(&key).await;
                    }
                }
                if let Some(m) = marker {
                    let _ = store.delete(&m).await;
                }
            });
        }
    }
}

enum Renewal {
    Renewed,
    Expired,
    TakenOver,
}

async fn renew_loop(
    store: DynStore,
    key: String,
    record: Arc<Mutex<LeaseRecord>>,
    ttl: Duration,
    lost: CancellationToken,
) {
    let every = ttl / 3;
    let ttl_c = chrono::Duration::from_std(ttl).expect("ttl fits");
    loop {
        tokio::time::sleep(every).await;
        let mine = record.lock().await.clone();
        let outcome = async {
            match read(&store, &key).await? {
                // Past its expiry our lease may be mid-takeover (a taker read
                // it, claimed the marker and is about to replace it): writing
                // it again would leave two holders. It is lost.
                Some(cur) if cur.owner == mine.owner && Utc::now() >= mine.expires_at => {
                    Ok(Renewal::Expired)
                }
                Some(cur) if cur.owner == mine.owner => {
                    let now = Utc::now();
                    let next = LeaseRecord {
                        renewed_at: now,
                        expires_at: now + ttl_c,
                        ..mine.clone()
                    };
                    store::put_bytes(store.as_ref(), &key, encode(&next).to_vec()).await?;
                    *record.lock().await = next;
                    Ok(Renewal::Renewed)
                }
                _ => Ok::<Renewal, Error>(Renewal::TakenOver),
            }
        }
        .await;
        match outcome {
            Ok(Renewal::Renewed) => tracing::trace!(key = %key, "lease renewed"),
            Ok(Renewal::Expired) => {
                tracing::error!(job = %mine.job, "lease expired before it could be renewed; stopping");
                lost.cancel();
                return;
            }
            Ok(Renewal::TakenOver) => {
                tracing::error!(job = %mine.job, "lease lost: another run took it over; stopping");
                lost.cancel();
                return;
            }
            Err(e) => {
                if Utc::now() >= mine.expires_at {
                    tracing::error!(job = %mine.job, error = %one_line(&e), "lease expired before it could be renewed; stopping");
                    lost.cancel();
                    return;
                }
                tracing::warn!(job = %mine.job, error = %one_line(&e), "could not renew the lease; retrying");
            }
        }
    }
}

/// Runs `f` while holding `job`'s lease; `f` gets a token cancelled by
/// `cancel` or by the loss of the lease. A lost lease turns an interrupted
/// run into `Error::Locked` naming the new holder.
pub async fn with_lease<T, F, Fut>(
    store: DynStore,
    job: &str,
    ttl: Duration,
    cancel: CancellationToken,
    f: F,
) -> Result<T>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let lease = Lease::acquire(store.clone(), job, ttl).await?;
    let token = cancel.child_token();
    let lost = lease.lost();
    let watcher = {
        let (lost, token) = (lost.clone(), token.clone());
        tokio::spawn(async move {
            lost.cancelled().await;
            token.cancel();
        })
    };
    let res = f(token).await;
    watcher.abort();
    let res = match res {
        Err(Error::Interrupted) if lost.is_cancelled() && !cancel.is_cancelled() => {
            let cur = read(&store, &lease_key(job)).await.ok().flatten();
            Err(Error::Locked {
                job: job.to_owned(),
                holder: cur
                    .as_ref()
                    .map(|c| format!("{} (our lease was lost)", c.holder()))
                    .unwrap_or_else(|| "nobody (our lease was lost)".into()),
                since: cur
                    .map(|c| c.acquired_at.to_rfc3339())
                    .unwrap_or_else(|| Utc::now().to_rfc3339()),
            })
        }
        r => r,
    };
    if let Err(e) = lease.release().await {
        tracing::warn!(job, error = %one_line(&e), "could not release the lease; it expires by itself");
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn second_acquire_is_locked_and_release_frees() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let a = Lease::acquire(store.clone(), "db", DEFAULT_TTL)
            .await
            .unwrap();
        let e = Lease::acquire(store.clone(), "db", DEFAULT_TTL)
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("is locked by"), "{e}");
        a.release().await.unwrap();
        let b = Lease::acquire(store.clone(), "db", DEFAULT_TTL)
            .await
            .unwrap();
        b.release().await.unwrap();
        assert!(store.list(".locks/").await.unwrap().is_empty());
    }
}
