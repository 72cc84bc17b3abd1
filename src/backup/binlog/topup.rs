//! The archive side of a promotion's top-up (issue 14): what the archive
//! holds of the old primary's timeline, the commit time of an archived
//! GTID, and applying the archived transactions a replica never received,
//! with the same exact GTID filter as a point-in-time restore
//! (`replay.rs`), but with the binlog on and the original GTIDs kept
//! (`Session::KeepGtids`). failover never imports this: the CLI adapts it to
//! `failover::archive::ArchiveTopUp`.

use chrono::{DateTime, TimeZone, Utc};

use super::replay::{self, Plan, Replayed, Session};
use super::window;
use crate::backup::catalog::gtid::{Gtid, GtidState};
use crate::backup::catalog::segment::{self, Archive};
use crate::backup::catalog::Catalog;
use crate::error::{Error, Result};

/// One job's archive, opened for a top-up.
pub struct TopUp {
    cat: Catalog,
    job: String,
    /// The policy signs manifests: every applied segment must carry a valid signature.
    signed: bool,
    /// The manifests as last loaded: commit times are looked up there (an
    /// archived transaction's time never changes; `head` and `apply` reload).
    loaded: tokio::sync::Mutex<Option<std::sync::Arc<Archive>>>,
}

/// The newest continuous stretch of the archive and its newest segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub timeline: String,
    pub server_id: u32,
    pub server_address: String,
    pub position: GtidState,
    pub stretch_start: GtidState,
    pub newest_commit: Option<DateTime<Utc>>,
    pub newest_seq: u64,
}

/// Where and as whom the transactions are applied.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub lock: String,
}

fn refuse(msg: String) -> Error {
    Error::RestoreRefused(msg)
}

impl TopUp {
    /// The archive of `job` in `cat`; `signed`: the policy signs manifests,
    /// so every applied segment must carry a valid signature.
    pub fn new(cat: Catalog, job: &str, signed: bool) -> TopUp {
        TopUp {
            cat,
            job: job.into(),
            signed,
            loaded: tokio::sync::Mutex::new(None),
        }
    }

    /// Reads every manifest of the job (one GET each) and keeps them.
    async fn load(&self) -> Result<std::sync::Arc<Archive>> {
        let a = std::sync::Arc::new(segment::load(&self.cat, &self.job, self.signed).await?);
        *self.loaded.lock().await = Some(a.clone());
        Ok(a)
    }

    /// The newest stretch (None: nothing archived).
    pub async fn head(&self) -> Result<Option<Head>> {
        Ok(head_of(&*self.load().await?))
    }

    /// The commit second of `g`, when a segment of the archive holds it.
    pub async fn commit_time(&self, g: &Gtid) -> Result<Option<DateTime<Utc>>> {
        let cached = self.loaded.lock().await.clone();
        if let Some(t) = cached.as_ref().and_then(|a| commit_time(a, g)) {
            return Ok(Some(t));
        }
        Ok(commit_time(&*self.load().await?, g))
    }

    /// Applies the archived transactions after `from` up to the head:
    /// refuses (before touching the target) when the newest stretch does
    /// not reach back to `from`, or a segment is damaged or badly signed.
    pub async fn apply(&self, from: &GtidState, to: &Target) -> Result<Replayed> {
        let a = self.load().await?;
        let plan = plan(&self.job, &a, from)?;
        let none = Replayed {
            transactions: 0,
            rows: 0,
            events: 0,
            seconds: 0.0,
            last_gtid: from.to_string(),
            first_gtid: String::new(),
            skipped: 0,
        };
        if plan.segments.is_empty() {
            return Ok(none);
        }
        replay::find_program(&["mariadb-binlog", "mysqlbinlog"])?;
        replay::find_program(&["mariadb", "mysql"])?;
        for seq in &plan.segments {
            let s = a
                .segments
                .iter()
                .find(|s| s.manifest.seq == *seq)
                .expect("planned from this archive");
            if self.signed {
                match &s.signature_status {
                    Some(st) if st.is_ok() => {}
                    st => {
                        return Err(refuse(format!(
                            "segment {} of job {}: manifest signature {}; the policy signs, so it is not applied",
                            seq,
                            self.job,
                            st.as_ref().map(|x| x.word()).unwrap_or("unchecked")
                        )))
                    }
                }
            }
        }
        replay::check_segments(&self.cat, &a, &plan).await?;
        replay::replay(
            &self.cat,
            &a,
            &plan,
            &replay::Target {
                host: to.host.clone(),
                port: to.port,
                user: to.user.clone(),
                socket: None,
                password: to.password.clone(),
                batch: 1,
                session: Session::KeepGtids {
                    lock: to.lock.clone(),
                },
            },
        )
        .await
    }
}

/// The newest continuous run of segments, as a `Head`.
pub fn head_of(a: &Archive) -> Option<Head> {
    let (runs, _) = window::runs(a);
    let r = runs.last()?;
    let first = &a.segments[r.first].manifest;
    let last = &a.segments[r.last].manifest;
    Some(Head {
        timeline: segment::timeline_dir(last.timeline, last.server.server_id),
        server_id: last.server.server_id,
        server_address: last.server.address.clone(),
        position: last.gtid_end.clone(),
        stretch_start: first.gtid_start.clone(),
        newest_commit: window::newest_commit(a, r),
        newest_seq: last.seq,
    })
}

/// The commit second of `g` from the manifests' commit-second runs: the
/// segment whose range holds `g`, then the first run ending at or after it.
pub fn commit_time(a: &Archive, g: &Gtid) -> Option<DateTime<Utc>> {
    for s in &a.segments {
        let m = &s.manifest;
        if !(m.gtid_start.seq(g.domain) < g.seq && g.seq <= m.gtid_end.seq(g.domain)) {
            continue;
        }
        for run in &m.runs {
            if let Ok(l) = run.last.parse::<Gtid>() {
                if l.domain == g.domain && l.seq >= g.seq {
                    return Utc.timestamp_opt(run.ts, 0).single();
                }
            }
        }
    }
    None
}

/// The top-up as a replay plan: from the replica's position to the newest
/// archived one, over the newest continuous stretch.
pub fn plan(job: &str, a: &Archive, from: &GtidState) -> Result<Plan> {
    let (runs, gaps) = window::runs(a);
    let Some(r) = runs.last() else {
        return Err(refuse(format!("job {job} has no archived binlog segments")));
    };
    let first = &a.segments[r.first].manifest;
    let last = &a.segments[r.last].manifest;
    // Domains where the archive is ahead must be covered from `from` on.
    let holes: Vec<String> = last
        .gtid_end
        .0
        .values()
        .filter(|g| {
            g.seq > from.seq(g.domain) && first.gtid_start.seq(g.domain) > from.seq(g.domain)
        })
        .map(|g| {
            format!(
                "domain {}: the replica is at {}, the archive's continuous stretch starts after {}",
                g.domain,
                from.0
                    .get(&g.domain)
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "nothing".into()),
                first
                    .gtid_start
                    .0
                    .get(&g.domain)
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "-".into())
            )
        })
        .collect();
    if !holes.is_empty() {
        return Err(refuse(format!(
            "the archive of job {job} cannot top the replica up without a hole ({}){}",
            holes.join("; "),
            if gaps.is_empty() {
                String::new()
            } else {
                format!(
                    "; gaps: {}",
                    gaps.iter()
                        .map(|g| g.detail.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        )));
    }
    let mut cut = from.clone();
    for g in last.gtid_end.0.values() {
        if g.seq > from.seq(g.domain) {
            cut.apply(*g);
        }
    }
    let needed: Vec<&segment::Listed> = a.segments[r.first..=r.last]
        .iter()
        .filter(|s| !s.manifest.gtid_end.le(from))
        .collect();
    Ok(Plan {
        job: job.into(),
        until: format!("the archive's newest position {}", last.gtid_end),
        base: "the replica".into(),
        base_gtid: from.to_string(),
        cut_gtid: cut.to_string(),
        excluded_same_second: 0,
        include_them_with: None,
        segments: needed.iter().map(|s| s.manifest.seq).collect(),
        segment_keys: needed.iter().map(|s| s.manifest.key.clone()).collect(),
        stored_bytes: needed.iter().map(|s| s.manifest.stored_bytes).sum(),
        binlog_bytes: needed.iter().map(|s| s.manifest.source_bytes).sum(),
        transactions_at_most: needed.iter().map(|s| s.manifest.transactions).sum(),
        // A top-up is logged (its GTIDs kept) for the promoted server's replicas.
        target_binlog: crate::backup::source::artifact::TargetBinlog::On,
        only_databases: None,
        database_map: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::binlog::replay::tests::seg;

    #[test]
    fn the_top_up_plan_starts_at_the_replica_and_refuses_holes() {
        // 0-1-1..=3 at 100..=102, 0-1-4..=5 at 105, 106.
        let a = Archive {
            segments: vec![seg(1, 1, &[100, 101, 102]), seg(2, 4, &[105, 106])],
            ..Archive::default()
        };
        let from = GtidState::parse("0-1-2").unwrap();
        let p = plan("j", &a, &from).unwrap();
        assert_eq!(
            (p.segments.as_slice(), p.cut_gtid.as_str()),
            (&[1u64, 2][..], "0-1-5")
        );
        let p = plan("j", &a, &GtidState::parse("0-1-3").unwrap()).unwrap();
        assert_eq!(p.segments, vec![2]);
        let p = plan("j", &a, &GtidState::parse("0-1-5").unwrap()).unwrap();
        assert!(p.segments.is_empty(), "nothing to apply");
        // Another domain of the replica is kept in the cut.
        let p = plan("j", &a, &GtidState::parse("0-1-4,1-9-3").unwrap()).unwrap();
        assert_eq!(p.cut_gtid, "0-1-5,1-9-3");
        // The newest stretch starts after the replica: refused, naming the hole.
        let a = Archive {
            segments: vec![seg(5, 10, &[200, 201])],
            ..Archive::default()
        };
        let e = plan("j", &a, &from).unwrap_err().to_string();
        assert!(
            e.contains("without a hole") && e.contains("replica is at 0-1-2"),
            "{e}"
        );
    }

    #[test]
    fn commit_times_and_the_head_come_from_the_manifests() {
        let a = Archive {
            segments: vec![seg(1, 1, &[100, 101, 102]), seg(2, 4, &[105, 106])],
            ..Archive::default()
        };
        let at = |s: &str| commit_time(&a, &s.parse().unwrap()).map(|t| t.timestamp());
        assert_eq!(at("0-1-2"), Some(101));
        assert_eq!(at("0-1-4"), Some(105));
        assert_eq!(at("0-1-5"), Some(106));
        assert_eq!(at("0-1-9"), None);
        assert_eq!(at("1-1-2"), None);
        let h = head_of(&a).unwrap();
        assert_eq!(
            (
                h.position.to_string(),
                h.stretch_start.to_string(),
                h.timeline.as_str(),
                h.newest_seq
            ),
            ("0-1-5".into(), "0-1-0".into(), "0001-s1", 2)
        );
        assert_eq!(h.newest_commit.map(|t| t.timestamp()), Some(106));
        assert!(head_of(&Archive::default()).is_none());
    }
}
