//! The catalog: one JSON manifest per backup, stored beside its artifacts
//! and written last; verification records appended beside it (a manifest
//! is never rewritten). A backup whose manifest is missing is incomplete:
//! never listed, and cleaned up by prune.
//!
//! Layout: `<job>/<yyyy>/<mm>/<dd>/<id>/manifest.json`, artifacts in the
//! same folder, verifications in `<id>/verify/<time>-<rand>.json`.
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{self, DynStore, ObjectMeta};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: u32 = 1;
pub const TOOL_VERSION: &str = concat!("cexdr ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub job: String,
    pub kind: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Bytes read from the source (before compression), all artifacts.
    pub source_bytes: u64,
    /// Bytes stored, all artifacts.
    pub stored_bytes: u64,
    /// SHA-256 of the (first) stored artifact, as `sha256sum` prints it.
    pub sha256: String,
    pub compression: String,
    /// Key of the (first) artifact; `artifacts` lists every one.
    pub key: String,
    pub tool_version: String,
    pub artifacts: Vec<Artifact>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Client-side encryption, if any (`sha256` is of the encrypted bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::encryption::EncryptionInfo>,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    pub name: String,
    pub key: String,
    pub source_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    pub backup_id: String,
    pub job: String,
    pub at: DateTime<Utc>,
    pub status: Status,
    /// `stream` (checksum + full decompression) or `restore-test`.
    pub method: String,
    pub tool_version: String,
    pub host: String,
    /// What was checked, in words an auditor can read.
    pub checks: Vec<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// A backup as the catalog shows it: its manifest and its verifications (oldest first).
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest: Manifest,
    pub verifications: Vec<Verification>,
    /// Keys of every verification record, also those not loaded.
    pub verification_keys: Vec<String>,
}

impl Entry {
    pub fn latest_verification(&self) -> Option<&Verification> {
        self.verifications.iter().max_by_key(|v| v.at)
    }
    /// The JSON shape of `catalog list --json`: the manifest's fields plus
    /// `verification: {status, at, method}` or null.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.manifest).expect("manifest serialises");
        let ver = self
            .latest_verification()
            .map(|x| serde_json::json!({"status": x.status, "at": x.at, "method": x.method}));
        v["verification"] = ver.unwrap_or(serde_json::Value::Null);
        v
    }
}

/// A new backup id: sorts by time, unique across hosts in practice.
pub fn new_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// The folder holding one backup's objects.
pub fn backup_dir(job: &str, id: &str, started: DateTime<Utc>) -> String {
    format!(
        "{job}/{:04}/{:02}/{:02}/{id}",
        started.year(),
        started.month(),
        started.day()
    )
}

pub struct Catalog {
    store: DynStore,
    identities: Option<crate::encryption::Identities>,
}

/// Objects of one backup folder, grouped.
#[derive(Debug, Default)]
pub struct Folder {
    pub manifest: Option<String>,
    pub verifications: Vec<String>,
    pub others: Vec<ObjectMeta>,
}

impl Catalog {
    pub fn new(store: DynStore) -> Self {
        Catalog {
            store,
            identities: None,
        }
    }

    /// Keys (or the passphrase) for reading encrypted backups.
    pub fn with_identities(mut self, ids: Option<crate::encryption::Identities>) -> Self {
        self.identities = ids;
        self
    }

    pub fn identities(&self) -> Option<&crate::encryption::Identities> {
        self.identities.as_ref()
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Every backup folder under `prefix` (a job name or empty), by folder key.
    pub async fn folders(&self, job: Option<&str>) -> Result<BTreeMap<String, Folder>> {
        let prefix = job.map(|j| format!("{j}/")).unwrap_or_default();
        let objects = self.store.list(&prefix).await?;
        let mut out: BTreeMap<String, Folder> = BTreeMap::new();
        for o in objects {
            // <job>/<yyyy>/<mm>/<dd>/<id>/<rest...>
            let parts: Vec<&str> = o.key.splitn(6, '/').collect();
            if parts.len() < 6 {
                continue; // not a backup object (a lease, a key file)
            }
            let dir = parts[..5].join("/");
            let rest = parts[5];
            let f = out.entry(dir).or_default();
            if rest == MANIFEST {
                f.manifest = Some(o.key);
            } else if rest.starts_with("verify/") && rest.ends_with(".json") {
                f.verifications.push(o.key);
            } else {
                f.others.push(o);
            }
        }
        Ok(out)
    }

    async fn load_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let data = store::get_bytes(self.store.as_ref(), key).await?;
        serde_json::from_slice(&data).map_err(|e| Error::Store {
            store: self.store.describe(),
            op: "parse",
            key: key.into(),
            msg: e.to_string(),
        })
    }

    /// Loads a manifest and checks that it describes its own folder: its job,
    /// id and artifact keys must all lie inside the folder it was found in.
    pub async fn load_manifest(&self, dir: &str, key: &str) -> Result<Manifest> {
        let m: Manifest = self.load_json(key).await?;
        let bad = |msg: String| Error::Store {
            store: self.store.describe(),
            op: "check",
            key: key.into(),
            msg,
        };
        if backup_dir(&m.job, &m.id, m.started_at) != dir {
            return Err(bad(format!(
                "manifest of {}/{} does not belong in {dir}",
                m.job, m.id
            )));
        }
        for a in &m.artifacts {
            let inside = a.key.strip_prefix(dir).and_then(|r| r.strip_prefix('/'));
            if inside
                .map(|r| r.is_empty() || r.contains('/') || r == MANIFEST)
                .unwrap_or(true)
            {
                return Err(bad(format!(
                    "artifact key {} lies outside its backup folder",
                    a.key
                )));
            }
        }
        Ok(m)
    }

    async fn entry(&self, dir: &str, f: &Folder, all_verifications: bool) -> Result<Option<Entry>> {
        let Some(mkey) = &f.manifest else {
            return Ok(None);
        };
        let manifest = self.load_manifest(dir, mkey).await?;
        let mut keys = f.verifications.clone();
        keys.sort();
        let load: Vec<&String> = if all_verifications {
            keys.iter().collect()
        } else {
            keys.last().into_iter().collect()
        };
        let mut verifications = Vec::new();
        for k in load {
            verifications.push(self.load_json::<Verification>(k).await?);
        }
        Ok(Some(Entry {
            manifest,
            verifications,
            verification_keys: keys,
        }))
    }

    /// Complete backups, oldest first. A folder with a broken manifest is
    /// reported in the log and skipped, never shown as a backup.
    pub async fn list(&self, job: Option<&str>) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for (dir, f) in self.folders(job).await? {
            match self.entry(&dir, &f, false).await {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(folder = %dir, error = %crate::error::one_line(&e), "skipping a backup folder with an unusable manifest")
                }
            }
        }
        out.sort_by(|a, b| {
            (a.manifest.started_at, &a.manifest.id).cmp(&(b.manifest.started_at, &b.manifest.id))
        });
        Ok(out)
    }

    /// One backup by id, with all its verification records.
    pub async fn find(&self, id: &str) -> Result<Entry> {
        if id.is_empty() || id.contains('/') {
            return Err(Error::NotFound(id.into()));
        }
        for (dir, f) in self.folders(None).await? {
            if dir.rsplit('/').next() == Some(id) {
                if let Some(e) = self.entry(&dir, &f, true).await? {
                    return Ok(e);
                }
            }
        }
        Err(Error::NotFound(id.into()))
    }

    pub async fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let key = format!("{}/{MANIFEST}", backup_dir(&m.job, &m.id, m.started_at));
        let data = serde_json::to_vec_pretty(m).expect("manifest serialises");
        store::put_bytes(self.store.as_ref(), &key, data).await?;
        Ok(())
    }

    pub async fn record_verification(&self, m: &Manifest, v: &Verification) -> Result<()> {
        let key = format!(
            "{}/verify/{}-{:08x}.json",
            backup_dir(&m.job, &m.id, m.started_at),
            v.at.format("%Y%m%dT%H%M%S%.3fZ"),
            rand::random::<u32>()
        );
        let data = serde_json::to_vec_pretty(v).expect("verification serialises");
        store::put_bytes(self.store.as_ref(), &key, data).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_dirs_follow_the_layout() {
        let t1: DateTime<Utc> = "2026-11-25T19:23:42.001Z".parse().unwrap();
        let t2: DateTime<Utc> = "2026-11-25T19:23:42.010Z".parse().unwrap();
        let (a, b) = (new_id(t1), new_id(t2));
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("20261125T192342.001Z-"), "{a}");
        assert_eq!(backup_dir("db", &a, t1), format!("db/2026/11/25/{a}"));
    }
}
