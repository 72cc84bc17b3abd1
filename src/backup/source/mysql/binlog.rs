//! The `binlog = { … }` keys of a mysql job: how its continuous binlog
//! archive (`backup::binlog::archive`) cuts and names segments and how long
//! prune keeps them. A spec, checked before any I/O, beside the job's other
//! mysql keys.
use std::time::Duration;

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

pub const DEFAULT_FLUSH: Duration = Duration::from_secs(5);
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// The default archiver server id: 0xC0DE0000 + a 16-bit hash of the job
/// name (3235774464..=3235839999), far above the small ids people give
/// real servers and replicas, and stable for a job across restarts.
pub fn default_server_id(job: &str) -> u32 {
    let h = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(job.as_bytes());
    0xC0DE_0000 | (h & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

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
