//! The catalog: one JSON manifest per backup, stored beside its artifacts
//! and written last; verification records appended beside it (a manifest
//! is never rewritten). A backup whose manifest is missing is incomplete:
//! never listed, and cleaned up by prune.
//!
//! Layout: `<job>/<yyyy>/<mm>/<dd>/<id>/manifest.json`, artifacts in the
//! same folder, verifications in `<id>/verify/<time>-<rand>.json`.
//!
//! This folder is the vocabulary of the backup flow and imports nothing
//! else of it: backup manifests (here), what they hold (`kind`), GTIDs
//! (`gtid`), binlog segment manifests and the archive listing (`segment`),
//! and signatures (`signing`).
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

pub mod gtid;
pub mod kind;
pub mod segment;
pub mod signing;

use crate::error::{Error, Result};
use crate::store::{self, DynStore, ObjectMeta};
pub use kind::Kind;
use signing::{Detached, SigStatus, Signer};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: u32 = 1;
pub const TOOL_VERSION: &str = concat!("cexdr ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub job: String,
    pub kind: Kind,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Bytes read from the source (before compression), all artifacts.
    pub source_bytes: u64,
    /// Bytes stored, all artifacts.
    pub stored_bytes: u64,
    /// SHA-256 of the (first) stored artifact, as `sha256sum` prints it.
    pub sha256: String,
    pub compression: crate::pipeline::Compression,
    /// Key of the (first) artifact; `artifacts` lists every one.
    pub key: String,
    pub tool_version: String,
    pub artifacts: Vec<Artifact>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The job's previous backup when this one was taken: a deleted backup
    /// leaves a visible gap in this chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ChainLink>,
    /// What the store applied to the objects (SSE, KMS key id, storage
    /// class, Object Lock).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub storage: serde_json::Value,
    /// Client-side encryption, if any (`sha256` is of the encrypted bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::pipeline::encrypt::EncryptionInfo>,
    pub details: serde_json::Value,
}

impl Manifest {
    /// The backups a restore of this one needs first, oldest first (an
    /// incremental physical backup's chain, its full first); retention
    /// keeps them while this one is kept.
    pub fn depends_on(&self) -> Vec<String> {
        self.details["incremental"]["chain"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A link to the previous manifest of the same job: its id and the SHA-256
/// of its exact bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainLink {
    pub id: String,
    pub manifest_sha256: String,
}

/// Left by prune for each backup it removes, so the chain's gap is explained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tombstone {
    pub id: String,
    pub job: String,
    pub manifest_sha256: String,
    /// The removed manifest's own link, so the chain can be followed across it.
    pub previous: Option<ChainLink>,
    pub removed_at: DateTime<Utc>,
    pub reason: String,
    pub host: String,
    pub tool_version: String,
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

/// Verification levels, weakest first, as `catalog list` and the metrics
/// name them.
pub const CHECKSUM: &str = "checksum";
pub const RESTORE_TESTED: &str = "restore-test";

/// The level a verification method proves: a restore test, or the
/// checksum + full decompression of `verify` and the read-back.
pub fn level_of(method: &str) -> &'static str {
    if method == "restore-test" {
        RESTORE_TESTED
    } else {
        CHECKSUM
    }
}

/// What the catalog can say of one backup's verification.
#[derive(Debug, Clone, PartialEq)]
pub enum Level<'a> {
    Never,
    /// The latest verification failed.
    Failed(&'a Verification),
    Checksum(&'a Verification),
    /// A passed restore test (the newest), with its measured restore time.
    RestoreTested(&'a Verification),
}

impl<'a> Level<'a> {
    pub fn word(&self) -> &'static str {
        match self {
            Level::Never => "never",
            Level::Failed(_) => "failed",
            Level::Checksum(_) => CHECKSUM,
            Level::RestoreTested(_) => "restore-tested",
        }
    }
    pub fn record(&self) -> Option<&'a Verification> {
        match self {
            Level::Never => None,
            Level::Failed(v) | Level::Checksum(v) | Level::RestoreTested(v) => Some(v),
        }
    }
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Level::RestoreTested(v) => v.details["seconds"].as_f64(),
            _ => None,
        }
    }
}

/// A backup as the catalog shows it: its manifest and its verifications (oldest first).
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest: Manifest,
    pub verifications: Vec<Verification>,
    /// Keys of every verification record, also those not loaded.
    pub verification_keys: Vec<String>,
    /// SHA-256 of the manifest's exact stored bytes (what the chain links to).
    pub manifest_sha256: String,
    /// The manifest's stored bytes (what its signature covers).
    pub manifest_bytes: Vec<u8>,
    /// The detached signature of the manifest, if any.
    pub signature: Option<Detached>,
    /// Its check against the keys published in the store (set by `list`).
    pub signature_status: Option<SigStatus>,
}

impl Entry {
    pub fn latest_verification(&self) -> Option<&Verification> {
        self.verifications.iter().max_by_key(|v| v.at)
    }

    /// The strongest level proven: FAILED if the latest verification
    /// failed (a failure is never hidden by an older pass), else a passed
    /// restore test if any, else a passed checksum check, else never.
    /// Needs the full history (`Catalog::list_full`).
    pub fn level(&self) -> Level<'_> {
        let Some(latest) = self.latest_verification() else {
            return Level::Never;
        };
        if latest.status == Status::Failed {
            return Level::Failed(latest);
        }
        let ok = |lvl: &str| {
            self.verifications
                .iter()
                .filter(|v| v.status == Status::Ok && level_of(&v.method) == lvl)
                .max_by_key(|v| v.at)
        };
        match ok(RESTORE_TESTED) {
            Some(v) => Level::RestoreTested(v),
            None => Level::Checksum(latest),
        }
    }
    /// The JSON shape of `catalog list --json`: the manifest's fields plus
    /// `verification: {status, at, method}` or null.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.manifest).expect("manifest serialises");
        let ver = self
            .latest_verification()
            .map(|x| serde_json::json!({"status": x.status, "at": x.at, "method": x.method}));
        v["verification"] = ver.unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(o) = &mut v["verification"] {
            let lvl = self.level();
            let rec = lvl.record();
            o.insert("level".into(), serde_json::json!(lvl.word()));
            // `at`, `method` of the record that proves the level.
            if let Some(r) = rec {
                o.insert("at".into(), serde_json::json!(r.at));
                o.insert("method".into(), serde_json::json!(r.method));
                o.insert("status".into(), serde_json::json!(r.status));
            }
            o.insert("duration_s".into(), serde_json::json!(lvl.seconds()));
        }
        if let Some(st) = &self.signature_status {
            v["signature"] = serde_json::json!(st.word());
        }
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
    identities: Option<crate::pipeline::encrypt::Identities>,
    signer: Option<Arc<Signer>>,
    /// Where backup, restore and verify report progress (default: nowhere).
    progress: crate::base::progress::DynProgress,
}

pub const KEYS_PREFIX: &str = "keys/";

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
            signer: None,
            progress: crate::base::progress::silent(),
        }
    }

    /// Reports the progress of backups, restores and verifications through it.
    pub fn with_progress(mut self, progress: crate::base::progress::DynProgress) -> Self {
        self.progress = progress;
        self
    }

    pub fn progress(&self) -> &crate::base::progress::DynProgress {
        &self.progress
    }

    /// Signs every manifest, verification record and tombstone it writes.
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        self.signer = signer;
        self
    }

    /// Keys (or the passphrase) for reading encrypted backups.
    pub fn with_identities(mut self, ids: Option<crate::pipeline::encrypt::Identities>) -> Self {
        self.identities = ids;
        self
    }

    pub fn identities(&self) -> Option<&crate::pipeline::encrypt::Identities> {
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
    pub async fn load_manifest(&self, dir: &str, key: &str) -> Result<(Manifest, Vec<u8>)> {
        let raw = store::get_bytes(self.store.as_ref(), key).await?;
        let m: Manifest = serde_json::from_slice(&raw).map_err(|e| Error::Store {
            store: self.store.describe(),
            op: "parse",
            key: key.into(),
            msg: e.to_string(),
        })?;
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
        Ok((m, raw))
    }

    /// A detached signature object, if the folder listing has one.
    async fn load_sig(&self, key: &str, f: &Folder) -> Result<Option<Detached>> {
        let sig_key = format!("{key}.sig");
        if f.others.iter().any(|o| o.key == sig_key) {
            Ok(Some(self.load_json(&sig_key).await?))
        } else {
            Ok(None)
        }
    }

    async fn entry(&self, dir: &str, f: &Folder, all_verifications: bool) -> Result<Option<Entry>> {
        let Some(mkey) = &f.manifest else {
            return Ok(None);
        };
        let (manifest, raw) = self.load_manifest(dir, mkey).await?;
        let signature = self.load_sig(mkey, f).await?;
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
            manifest_sha256: hex::encode(Sha256::digest(&raw)),
            manifest_bytes: raw,
            signature,
            signature_status: None,
        }))
    }

    /// Complete backups, oldest first. A folder with a broken manifest is
    /// never shown as a backup; callers that report to people use
    /// [`Catalog::scan`], which names it.
    pub async fn list(&self, job: Option<&str>) -> Result<Vec<Entry>> {
        Ok(self.scan_with(job, false).await?.0)
    }

    /// `list` with every verification record of each backup loaded (for
    /// verification levels: a restore test followed by a checksum check).
    pub async fn list_full(&self, job: Option<&str>) -> Result<Vec<Entry>> {
        Ok(self.scan_with(job, true).await?.0)
    }

    /// Complete backups (oldest first) and the folders whose manifest
    /// cannot be used (unreadable, unparsable, or describing another folder).
    pub async fn scan(&self, job: Option<&str>) -> Result<(Vec<Entry>, Vec<Damaged>)> {
        self.scan_with(job, false).await
    }

    /// `scan` with every verification record of each backup loaded.
    pub async fn scan_full(&self, job: Option<&str>) -> Result<(Vec<Entry>, Vec<Damaged>)> {
        self.scan_with(job, true).await
    }

    async fn scan_with(
        &self,
        job: Option<&str>,
        all_verifications: bool,
    ) -> Result<(Vec<Entry>, Vec<Damaged>)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for (dir, f) in self.folders(job).await? {
            match self.entry(&dir, &f, all_verifications).await {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err(e) => {
                    let error = crate::error::one_line(&e);
                    tracing::warn!(folder = %dir, error = %error, "backup folder with an unusable manifest");
                    damaged.push(Damaged { folder: dir, error });
                }
            }
        }
        out.sort_by(|a, b| {
            (a.manifest.started_at, &a.manifest.id).cmp(&(b.manifest.started_at, &b.manifest.id))
        });
        let trusted = self.published_keys().await?;
        for e in &mut out {
            e.signature_status = Some(signing::check(
                &e.manifest_bytes,
                e.signature.as_ref(),
                &trusted,
            ));
        }
        Ok((out, damaged))
    }

    /// Public keys published in the store (`keys/<key-id>.pub`).
    pub async fn published_keys(&self) -> Result<BTreeMap<String, VerifyingKey>> {
        let mut out = BTreeMap::new();
        for o in self.store.list(KEYS_PREFIX).await? {
            let data = store::get_bytes(self.store.as_ref(), &o.key).await?;
            if let Some(k) = signing::parse_public(&String::from_utf8_lossy(&data)) {
                out.insert(signing::key_id(&k), k);
            }
        }
        Ok(out)
    }

    /// The link to the job's newest complete backup, for a new manifest.
    pub async fn chain_head(&self, job: &str) -> Result<Option<ChainLink>> {
        Ok(self.newest(job).await?.map(|e| ChainLink {
            id: e.manifest.id,
            manifest_sha256: e.manifest_sha256,
        }))
    }

    /// The job's newest complete backup (without its verifications).
    pub async fn newest(&self, job: &str) -> Result<Option<Entry>> {
        let mut best: Option<(String, Folder)> = None;
        for (dir, f) in self.folders(Some(job)).await? {
            if f.manifest.is_some() {
                best = Some((dir, f)); // folders sort by date, then id (time)
            }
        }
        let Some((dir, f)) = best else {
            return Ok(None);
        };
        Ok(Some(
            self.entry(&dir, &f, false).await?.expect("has a manifest"),
        ))
    }

    /// Writes `data` under `key`, with its detached signature first when
    /// this catalog signs (so the object never appears unsigned).
    pub async fn put_signed(&self, key: &str, data: Vec<u8>) -> Result<()> {
        if let Some(signer) = &self.signer {
            let pub_key = format!("{KEYS_PREFIX}{}.pub", signer.key_id);
            if self.store.head(&pub_key).await?.is_none() {
                self.store
                    .put_if_absent(&pub_key, bytes::Bytes::from(signer.public_hex()))
                    .await?;
            }
            let sig = serde_json::to_vec_pretty(&signer.sign(&data)).expect("signature serialises");
            store::put_bytes(self.store.as_ref(), &format!("{key}.sig"), sig).await?;
        }
        store::put_bytes(self.store.as_ref(), key, data).await?;
        Ok(())
    }

    /// Records that prune removed a backup (signed when this catalog signs).
    pub async fn record_removal(&self, e: &Entry, reason: &str) -> Result<()> {
        let t = Tombstone {
            id: e.manifest.id.clone(),
            job: e.manifest.job.clone(),
            manifest_sha256: e.manifest_sha256.clone(),
            previous: e.manifest.previous.clone(),
            removed_at: Utc::now(),
            reason: reason.to_owned(),
            host: crate::base::host_name(),
            tool_version: TOOL_VERSION.into(),
        };
        let key = format!("{}/pruned/{}.json", e.manifest.job, e.manifest.id);
        self.put_signed(
            &key,
            serde_json::to_vec_pretty(&t).expect("tombstone serialises"),
        )
        .await
    }

    /// Tombstones of a job by backup id, each with its signature check.
    pub async fn tombstones(
        &self,
        job: &str,
        trusted: &BTreeMap<String, VerifyingKey>,
    ) -> Result<BTreeMap<String, (Tombstone, SigStatus)>> {
        let prefix = format!("{job}/pruned/");
        let objects = self.store.list(&prefix).await?;
        let mut out = BTreeMap::new();
        for o in objects.iter().filter(|o| o.key.ends_with(".json")) {
            let raw = store::get_bytes(self.store.as_ref(), &o.key).await?;
            let Ok(t) = serde_json::from_slice::<Tombstone>(&raw) else {
                continue;
            };
            let sig_key = format!("{}.sig", o.key);
            let sig = if objects.iter().any(|x| x.key == sig_key) {
                Some(self.load_json::<Detached>(&sig_key).await?)
            } else {
                None
            };
            let st = signing::check(&raw, sig.as_ref(), trusted);
            out.insert(t.id.clone(), (t, st));
        }
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
        self.put_signed(&key, data).await
    }

    pub async fn record_verification(&self, m: &Manifest, v: &Verification) -> Result<()> {
        let key = format!(
            "{}/verify/{}-{:08x}.json",
            backup_dir(&m.job, &m.id, m.started_at),
            v.at.format("%Y%m%dT%H%M%S%.3fZ"),
            rand::random::<u32>()
        );
        let data = serde_json::to_vec_pretty(v).expect("verification serialises");
        self.put_signed(&key, data).await
    }
}

/// A backup folder whose manifest cannot be used.
#[derive(Debug, Clone, Serialize)]
pub struct Damaged {
    pub folder: String,
    pub error: String,
}

impl Damaged {
    /// For `--json` listings next to backups.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "folder": self.folder, "damaged": true, "error": self.error })
    }
}

/// One finding of `catalog verify-signatures`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub job: String,
    pub id: String,
    /// `manifest` or `verification`.
    pub object: String,
    pub key: String,
    pub signature: SigStatus,
    /// Chain problems (a missing or altered previous backup).
    pub problems: Vec<String>,
}

impl AuditRow {
    pub fn is_ok(&self) -> bool {
        self.signature.is_ok() && self.problems.is_empty()
    }
}

impl Catalog {
    /// Checks every manifest's and verification record's signature against
    /// `trusted`, and each job's chain of manifests (gaps must be explained
    /// by a validly signed prune record).
    pub async fn audit(
        &self,
        job: Option<&str>,
        trusted: &BTreeMap<String, VerifyingKey>,
    ) -> Result<Vec<AuditRow>> {
        let folders = self.folders(job).await?;
        let mut by_job: BTreeMap<String, Vec<(Entry, Vec<AuditRow>)>> = BTreeMap::new();
        let mut damaged_rows = Vec::new();
        for (dir, f) in &folders {
            let mut e = match self.entry(dir, f, false).await {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(err) => {
                    // Counted as a finding: an audit never passes over a
                    // folder it could not read.
                    let mut parts = dir.split('/');
                    damaged_rows.push(AuditRow {
                        job: parts.next().unwrap_or_default().to_owned(),
                        id: dir.rsplit('/').next().unwrap_or_default().to_owned(),
                        object: "manifest".into(),
                        key: f.manifest.clone().unwrap_or_else(|| dir.clone()),
                        signature: SigStatus::Unreadable,
                        problems: vec![format!(
                            "damaged backup folder {dir}: {}",
                            crate::error::one_line(&err)
                        )],
                    });
                    continue;
                }
            };
            e.signature_status = Some(signing::check(
                &e.manifest_bytes,
                e.signature.as_ref(),
                trusted,
            ));
            let mut rows = Vec::new();
            for vkey in &f.verifications {
                let raw = store::get_bytes(self.store.as_ref(), vkey).await?;
                let sig = self.load_sig(vkey, f).await?;
                rows.push(AuditRow {
                    job: e.manifest.job.clone(),
                    id: e.manifest.id.clone(),
                    object: "verification".into(),
                    key: vkey.clone(),
                    signature: signing::check(&raw, sig.as_ref(), trusted),
                    problems: vec![],
                });
            }
            by_job
                .entry(e.manifest.job.clone())
                .or_default()
                .push((e, rows));
        }
        let mut out = Vec::new();
        for (job, mut entries) in by_job {
            entries.sort_by(|a, b| {
                (a.0.manifest.started_at, &a.0.manifest.id)
                    .cmp(&(b.0.manifest.started_at, &b.0.manifest.id))
            });
            let tombs = self.tombstones(&job, trusted).await?;
            for i in 0..entries.len() {
                let expected = if i > 0 { Some(&entries[i - 1].0) } else { None };
                let (e, vrows) = &entries[i];
                let problems = chain_problems(e, expected, &tombs);
                out.push(AuditRow {
                    job: job.clone(),
                    id: e.manifest.id.clone(),
                    object: "manifest".into(),
                    key: format!(
                        "{}/{MANIFEST}",
                        backup_dir(&e.manifest.job, &e.manifest.id, e.manifest.started_at)
                    ),
                    signature: e.signature_status.clone().expect("set above"),
                    problems,
                });
                out.extend(vrows.iter().cloned());
            }
        }
        out.extend(damaged_rows);
        Ok(out)
    }
}

/// Follows `e`'s link back to `expected` (the job's previous listed backup),
/// across backups that prune removed and recorded.
fn chain_problems(
    e: &Entry,
    expected: Option<&Entry>,
    tombs: &BTreeMap<String, (Tombstone, SigStatus)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut link = e.manifest.previous.clone();
    for _ in 0..100_000 {
        match (&link, expected) {
            (None, None) => return problems,
            (None, Some(x)) => {
                problems.push(format!(
                    "does not link to the previous backup {} (chain restarts here)",
                    x.manifest.id
                ));
                return problems;
            }
            (Some(l), Some(x)) if l.id == x.manifest.id => {
                if l.manifest_sha256 != x.manifest_sha256 {
                    problems.push(format!("previous backup {} was altered after this one was taken (manifest sha256 differs)", l.id));
                }
                return problems;
            }
            (Some(l), _) => match tombs.get(&l.id) {
                Some((t, st)) if st.is_ok() && t.manifest_sha256 == l.manifest_sha256 => {
                    link = t.previous.clone()
                }
                Some((_, st)) => {
                    problems.push(format!(
                        "previous backup {} was removed, and its prune record is {}",
                        l.id,
                        st.word()
                    ));
                    return problems;
                }
                None => {
                    problems.push(format!(
                        "previous backup {} is missing and no prune record explains it",
                        l.id
                    ));
                    return problems;
                }
            },
        }
    }
    problems
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
