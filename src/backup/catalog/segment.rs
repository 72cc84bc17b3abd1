//! Segment manifests: what one archived piece of binlog holds, where it
//! lies, and how it links to the one before. A segment exists only once its
//! manifest does (written after the artifact, signed like backup manifests).
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::gtid::{Gtid, GtidState};
use super::{Catalog, ChainLink};
use crate::error::{Error, Result};
use crate::store;

/// The top-level store folder of the binlog archive (reserved: no job may use it).
pub const PREFIX: &str = "binlog";

pub const FORMAT: u32 = 1;

/// The server a segment was read from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerIdentity {
    pub server_id: u32,
    /// MySQL's `@@server_uuid`; MariaDB has none (null).
    pub server_uuid: Option<String>,
    pub hostname: String,
    pub version: String,
    /// `host:port` the archiver connected to (no credentials).
    pub address: String,
}

/// A run of consecutive transactions of one domain with the same commit
/// second: enough to translate a time into a GTID without reading segments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Run {
    /// Commit time, Unix seconds (MariaDB's GTID event has whole seconds).
    pub ts: i64,
    /// The last GTID of the run.
    pub last: String,
    pub transactions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentManifest {
    pub format: u32,
    /// Always "binlog-segment".
    pub kind: String,
    pub job: String,
    pub timeline: u32,
    pub seq: u64,
    /// The artifact (a standalone binlog file: magic, FDE, whole transactions).
    pub key: String,
    pub server: ServerIdentity,
    /// Source binlog file; a segment never spans two files.
    pub file: String,
    /// Server file offsets of the first byte and one past the last event.
    pub start_pos: u64,
    pub end_pos: u64,
    /// True when the segment ends with the file's ROTATE or STOP event.
    pub file_closed: bool,
    /// The file the ROTATE names (where the next segment starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_file: Option<String>,
    /// GTID position before and after the segment.
    pub gtid_start: GtidState,
    pub gtid_end: GtidState,
    /// First and last GTID per domain inside the segment.
    pub gtid_first: BTreeMap<String, String>,
    pub gtid_last: BTreeMap<String, String>,
    /// Commit times of the first and last transaction; `commit_precision`
    /// says what the server records ("s" for MariaDB).
    pub first_commit: Option<DateTime<Utc>>,
    pub last_commit: Option<DateTime<Utc>>,
    pub commit_precision: String,
    pub runs: Vec<Run>,
    pub events: u64,
    pub transactions: u64,
    /// Binlog bytes (before compression), stored bytes, SHA-256 of the stored object.
    pub source_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    pub compression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::pipeline::encrypt::EncryptionInfo>,
    /// The previous segment of the job (id = its seq): a deleted segment
    /// leaves a visible break in this chain.
    pub previous: Option<ChainLink>,
    /// How this archiver session started reading, on its first segment:
    /// "first-binlog", "position" or "gtid".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub closed_at: DateTime<Utc>,
    pub archiver_server_id: u32,
    pub host: String,
    pub tool_version: String,
}

/// `NNNN-s<server_id>`.
pub fn timeline_dir(timeline: u32, server_id: u32) -> String {
    format!("{timeline:04}-s{server_id}")
}

pub fn job_prefix(job: &str) -> String {
    format!("{PREFIX}/{job}/")
}

pub fn manifest_key(job: &str, timeline: u32, server_id: u32, seq: u64) -> String {
    format!(
        "{PREFIX}/{job}/{}/{seq:012}.json",
        timeline_dir(timeline, server_id)
    )
}

pub fn artifact_key(
    job: &str,
    timeline: u32,
    server_id: u32,
    seq: u64,
    file: &str,
    pos: u64,
    suffix: &str,
) -> String {
    let safe: String = file
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{PREFIX}/{job}/{}/{seq:012}-{safe}-{pos}.binlog{suffix}",
        timeline_dir(timeline, server_id)
    )
}

/// Gap records: what the archiver found missing (a purged binlog).
pub fn gap_key(job: &str, at: DateTime<Utc>) -> String {
    format!(
        "{PREFIX}/{job}/gaps/{}-{:06x}.json",
        at.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GapRecord {
    pub job: String,
    pub at: DateTime<Utc>,
    /// Archived up to here (the last segment's end).
    pub after_seq: Option<u64>,
    pub after_gtid: GtidState,
    pub file: String,
    pub reason: String,
    pub host: String,
}

/// A segment as listed: its manifest, its stored bytes' SHA-256 (chain
/// links point at it) and whether its artifact is present.
#[derive(Debug, Clone)]
pub struct Listed {
    pub manifest: SegmentManifest,
    pub manifest_key: String,
    pub manifest_sha256: String,
    pub artifact_present: bool,
    pub signature_status: Option<crate::backup::catalog::signing::SigStatus>,
}

/// Everything archived for `job`: segments by seq, gap records, and
/// artifacts without a manifest (an interrupted segment: prune removes them).
#[derive(Debug, Default)]
pub struct Archive {
    pub segments: Vec<Listed>,
    pub gaps: Vec<GapRecord>,
    pub orphans: Vec<store::ObjectMeta>,
    /// Manifests that could not be read (named in `catalog pitr` as gaps).
    pub broken: Vec<(String, String)>,
}

impl Archive {
    pub fn newest(&self) -> Option<&Listed> {
        self.segments.last()
    }
}

fn parse_err(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Store {
        store: "-".into(),
        op: "parse",
        key: key.into(),
        msg: msg.to_string(),
    }
}

pub async fn load(cat: &Catalog, job: &str, check_signatures: bool) -> Result<Archive> {
    let st = cat.store();
    let objects = st.list(&job_prefix(job)).await?;
    let keys: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let trusted = if check_signatures {
        Some(cat.published_keys().await?)
    } else {
        None
    };
    let mut out = Archive::default();
    let mut referenced = std::collections::BTreeSet::new();
    for o in &objects {
        let rest = &o.key[job_prefix(job).len()..];
        if rest.starts_with("gaps/") && rest.ends_with(".json") {
            let raw = store::get_bytes(st.as_ref(), &o.key).await?;
            match serde_json::from_slice::<GapRecord>(&raw) {
                Ok(g) => out.gaps.push(g),
                Err(e) => out.broken.push((o.key.clone(), e.to_string())),
            }
            continue;
        }
        if !(rest.ends_with(".json") && rest.matches('/').count() == 1) {
            continue;
        }
        let raw = store::get_bytes(st.as_ref(), &o.key).await?;
        let m: SegmentManifest = match serde_json::from_slice(&raw) {
            Ok(m) => m,
            Err(e) => {
                out.broken.push((o.key.clone(), e.to_string()));
                continue;
            }
        };
        let expect = manifest_key(job, m.timeline, m.server.server_id, m.seq);
        if m.job != job || expect != o.key || !m.key.starts_with(&job_prefix(job)) {
            out.broken.push((
                o.key.clone(),
                "manifest does not belong under this key".into(),
            ));
            continue;
        }
        let signature_status = match &trusted {
            Some(t) => {
                let sig_key = format!("{}.sig", o.key);
                let sig = if keys.contains(sig_key.as_str()) {
                    let s = store::get_bytes(st.as_ref(), &sig_key).await?;
                    Some(serde_json::from_slice(&s).map_err(|e| parse_err(&sig_key, e))?)
                } else {
                    None
                };
                Some(crate::backup::catalog::signing::check(
                    &raw,
                    sig.as_ref(),
                    t,
                ))
            }
            None => None,
        };
        referenced.insert(m.key.clone());
        out.segments.push(Listed {
            artifact_present: keys.contains(m.key.as_str()),
            manifest_key: o.key.clone(),
            manifest_sha256: hex::encode(Sha256::digest(&raw)),
            manifest: m,
            signature_status,
        });
    }
    out.segments.sort_by_key(|l| l.manifest.seq);
    out.gaps.sort_by_key(|g| g.at);
    for o in objects {
        let rest = &o.key[job_prefix(job).len()..];
        if rest.contains(".binlog") && !referenced.contains(&o.key) {
            out.orphans.push(o);
        }
    }
    Ok(out)
}

/// The newest segment's manifest and link, read without loading every
/// manifest (keys sort by timeline, then seq; seq grows across timelines).
pub async fn newest(cat: &Catalog, job: &str) -> Result<Option<Listed>> {
    let objects = cat.store().list(&job_prefix(job)).await?;
    let mut best: Option<(u64, String)> = None;
    for o in &objects {
        let rest = &o.key[job_prefix(job).len()..];
        if rest.starts_with("gaps/") || rest.matches('/').count() != 1 {
            continue;
        }
        let Some(name) = rest.split('/').nth(1).and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let Ok(seq) = name.parse::<u64>() else {
            continue;
        };
        if best.as_ref().map(|b| seq > b.0).unwrap_or(true) {
            best = Some((seq, o.key.clone()));
        }
    }
    let Some((_, key)) = best else {
        return Ok(None);
    };
    let raw = store::get_bytes(cat.store().as_ref(), &key).await?;
    let m: SegmentManifest = serde_json::from_slice(&raw).map_err(|e| parse_err(&key, e))?;
    Ok(Some(Listed {
        artifact_present: true,
        manifest_key: key,
        manifest_sha256: hex::encode(Sha256::digest(&raw)),
        manifest: m,
        signature_status: None,
    }))
}

pub async fn write_manifest(cat: &Catalog, m: &SegmentManifest) -> Result<String> {
    let key = manifest_key(&m.job, m.timeline, m.server.server_id, m.seq);
    let data = serde_json::to_vec_pretty(m).expect("segment manifest serialises");
    let sha = hex::encode(Sha256::digest(&data));
    cat.put_signed(&key, data).await?;
    Ok(sha)
}

pub async fn write_gap(cat: &Catalog, g: &GapRecord) -> Result<()> {
    let data = serde_json::to_vec_pretty(g).expect("gap record serialises");
    cat.put_signed(&gap_key(&g.job, g.at), data).await
}

impl SegmentManifest {
    /// Every GTID of the segment by domain: (first, last).
    pub fn ranges(&self) -> BTreeMap<u32, (Gtid, Gtid)> {
        let mut out = BTreeMap::new();
        for (d, f) in &self.gtid_first {
            if let (Ok(dom), Ok(f), Some(Ok(l))) = (
                d.parse::<u32>(),
                f.parse::<Gtid>(),
                self.gtid_last.get(d).map(|l| l.parse::<Gtid>()),
            ) {
                out.insert(dom, (f, l));
            }
        }
        out
    }
}
