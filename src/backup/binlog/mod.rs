//! Point-in-time recovery for MySQL/MariaDB (issue 13): a continuous binlog
//! archive and replay on top of a base backup.
//!
//! ```text
//! Archive:  server (as a replica, own server id) ─► events ─► segment (closed every
//!           flush-interval / segment-size, at a transaction boundary) ─► pipeline ─► store
//!           ─► segment manifest (written last, signed, chained)
//! Windows:  base backups' GTID positions + segment manifests ─► recoverable windows, named gaps
//! Restore:  target time ─► GTID (from the manifests' commit-second runs) ─► newest base at or
//!           before it ─► restore ─► exact GTID filter over the segments ─► mariadb-binlog ─► target
//! ```
//!
//! Store layout (outside the backup folders, which prune would otherwise
//! treat as incomplete backups): `binlog/<job>/<timeline>/<seq>.json` (the
//! manifest, `.sig` beside it when signing) and
//! `binlog/<job>/<timeline>/<seq>-<file>-<pos>.binlog[.gz|.zst]` (the
//! segment: a standalone binlog file, magic + FDE + whole transactions).
//! `<timeline>` is `NNNN-s<server_id>`: it changes whenever the source
//! server changes, so a promoted replica's `binlog.000001` never overwrites
//! the old primary's. `<seq>` grows across timelines.
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub mod archive;
pub mod commands;
pub mod replay;
pub mod retention;
pub mod segment;
pub mod topup;
pub mod window;

/// The top-level store folder of the archive (reserved: no job may use it).
pub const PREFIX: &str = "binlog";

/// `binlog = { flush-interval = "5s", segment-size = "16MiB", server-id = 4242, keep = "2d" }`
#[derive(Debug, Clone, PartialEq)]
pub struct BinlogSpec {
    /// A segment is closed at the first transaction boundary after this.
    pub flush_interval: Duration,
    /// ... or once it holds this many bytes (whichever comes first).
    pub segment_size: u64,
    /// The replica server id the archiver registers with.
    pub server_id: u32,
    /// Prune keeps segments this much older than the oldest kept base too.
    pub keep: Option<Duration>,
}

impl BinlogSpec {
    /// Range-checks the `binlog` table of job `job` (messages name the key).
    pub fn validate(
        job: &str,
        flush_interval: Option<&str>,
        segment_size: Option<&str>,
        server_id: Option<i64>,
        keep: Option<&str>,
    ) -> Result<BinlogSpec, BinlogSpecError> {
        use BinlogSpecError as E;
        let flush_interval = match flush_interval {
            Some(f) => crate::base::parse_duration(f).map_err(|source| E::Duration {
                key: "flush-interval",
                source,
            })?,
            None => DEFAULT_FLUSH,
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&flush_interval) {
            return Err(E::FlushInterval);
        }
        let segment_size = match segment_size {
            Some(s) => crate::base::parse_size(s).map_err(E::Size)?,
            None => DEFAULT_SEGMENT_SIZE,
        };
        if !(64 << 10..=1 << 30).contains(&segment_size) {
            return Err(E::SegmentSize);
        }
        let server_id = match server_id {
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n != 0)
                .ok_or(E::ServerId(n))?,
            None => default_server_id(job),
        };
        let keep = match keep {
            Some(k) => Some(
                crate::base::parse_duration(k).map_err(|source| E::Duration {
                    key: "keep",
                    source,
                })?,
            ),
            None => None,
        };
        Ok(BinlogSpec {
            flush_interval,
            segment_size,
            server_id,
            keep,
        })
    }
}

/// Why a `binlog = { … }` table is refused; the text names the key.
#[derive(Debug, thiserror::Error)]
pub enum BinlogSpecError {
    #[error("{key}: {source}")]
    Duration {
        key: &'static str,
        #[source]
        source: crate::base::DurationError,
    },
    #[error("segment-size: {0}")]
    Size(#[source] crate::base::SizeError),
    #[error("flush-interval: must be between 1s and 1h")]
    FlushInterval,
    #[error("segment-size: must be between 64KiB and 1GiB")]
    SegmentSize,
    #[error("server-id: {0} is not between 1 and 4294967295")]
    ServerId(i64),
}

/// A GTID or GTID position that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidError {
    #[error("{0:?} is not a MariaDB GTID (domain-server-sequence, e.g. 0-1-42)")]
    NotAGtid(String),
    #[error("{pos:?} names domain {domain} twice")]
    DomainTwice { pos: String, domain: u32 },
}

pub const DEFAULT_FLUSH: Duration = Duration::from_secs(5);
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// The default archiver server id: 0xC0DE0000 + a 16-bit hash of the job
/// name (3235774464..=3235839999), far above the small ids people give
/// real servers and replicas, and stable for a job across restarts.
pub fn default_server_id(job: &str) -> u32 {
    let h = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(job.as_bytes());
    0xC0DE_0000 | (h & 0xffff)
}

/// One MariaDB GTID: domain-server-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl std::str::FromStr for Gtid {
    type Err = GtidError;
    fn from_str(s: &str) -> Result<Self, GtidError> {
        let p: Vec<&str> = s.trim().split('-').collect();
        let bad = || GtidError::NotAGtid(s.to_owned());
        if p.len() != 3 {
            return Err(bad());
        }
        Ok(Gtid {
            domain: p[0].parse().map_err(|_| bad())?,
            server: p[1].parse().map_err(|_| bad())?,
            seq: p[2].parse().map_err(|_| bad())?,
        })
    }
}

/// A GTID position: the last GTID per domain (`@@gtid_binlog_pos` shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(pub BTreeMap<u32, Gtid>);

impl GtidState {
    pub fn parse(s: &str) -> Result<Self, GtidError> {
        let mut m = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: Gtid = part.parse()?;
            if m.insert(g.domain, g).is_some() {
                return Err(GtidError::DomainTwice {
                    pos: s.to_owned(),
                    domain: g.domain,
                });
            }
        }
        Ok(GtidState(m))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn seq(&self, domain: u32) -> u64 {
        self.0.get(&domain).map(|g| g.seq).unwrap_or(0)
    }
    pub fn apply(&mut self, g: Gtid) {
        self.0.insert(g.domain, g);
    }
    /// True when every domain of `self` is at or before `other`'s.
    pub fn le(&self, other: &GtidState) -> bool {
        self.0.values().all(|g| g.seq <= other.seq(g.domain))
    }
    /// True when `g` is already contained in this position.
    pub fn contains(&self, g: &Gtid) -> bool {
        g.seq <= self.seq(g.domain)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(|g| g.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl serde::Serialize for GtidState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for GtidState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GtidState::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_states_parse_compare_and_print() {
        let a = GtidState::parse("0-1-5, 1-2-7").unwrap();
        assert_eq!(a.to_string(), "0-1-5,1-2-7");
        let b = GtidState::parse("0-3-9,1-2-7").unwrap();
        assert!(a.le(&b) && !b.le(&a));
        assert!(GtidState::parse("").unwrap().le(&a));
        assert!(GtidState::parse("0-1-5,0-1-6").is_err());
        assert!(GtidState::parse("0-1").is_err());
        assert!(a.contains(&"1-9-7".parse().unwrap()));
        assert!(!a.contains(&"2-1-1".parse().unwrap()));
    }

    #[test]
    fn binlog_tables_are_range_checked() {
        let d = BinlogSpec::validate("j", None, None, None, None).unwrap();
        assert_eq!(d.flush_interval, DEFAULT_FLUSH);
        assert_eq!(d.segment_size, 16 << 20);
        assert_eq!(d.server_id, default_server_id("j"));
        let ok =
            BinlogSpec::validate("j", Some("2s"), Some("1MiB"), Some(4242), Some("2d")).unwrap();
        assert_eq!((ok.server_id, ok.segment_size), (4242, 1 << 20));
        for (f, s, id, k, want) in [
            (Some("0s"), None, None, None, "flush-interval"),
            (Some("2h"), None, None, None, "flush-interval"),
            (None, Some("1KiB"), None, None, "segment-size"),
            (None, Some("2GiB"), None, None, "segment-size"),
            (
                None,
                Some("99999999999999999GiB"),
                None,
                None,
                "out of range",
            ),
            (None, None, Some(0), None, "server-id"),
            (None, None, Some(-1), None, "server-id"),
            (None, None, Some(1 << 32), None, "server-id"),
            (None, None, None, Some("x"), "keep"),
        ] {
            let e = BinlogSpec::validate("j", f, s, id, k).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn default_server_ids_are_stable_and_high() {
        let a = default_server_id("ledger");
        assert_eq!(a, default_server_id("ledger"));
        assert!(a >= 0xC0DE_0000);
    }
}
