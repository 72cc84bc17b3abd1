//! The continuous archiver: connects to the server as a replica with its
//! own server id, streams binlog events, and stores them in segments.
//!
//! A segment is a standalone binlog file (magic, the source file's FDE,
//! then whole transactions), closed at the first transaction boundary once
//! `segment-size` is reached or so that it is durable `flush-interval` after
//! its first event arrived (`FlushClock`), at a ROTATE / STOP (it never
//! spans two source files), and on shutdown. It goes through the backup pipeline
//! (compression, age, SHA-256) into the store; its manifest is written last
//! and links to the previous one. Durable = manifest written: the archiver
//! resumes after the newest manifest, so a segment cut short by a crash,
//! a server restart or a network cut is simply read again (a repeat, never
//! a hole).
//!
//! Starting point, per session:
//! - no archive yet: the server's first binlog (`first-binlog`), timeline 1;
//! - same server id as the newest segment: its file and end position (`position`);
//! - another server (a promoted replica): `@slave_connect_state` = the newest
//!   segment's GTID end (`gtid`), on a new timeline, so nothing is overwritten;
//! - after a recorded gap (the server purged what we needed): the first binlog
//!   it still has, on a new timeline; the gap stays visible in `catalog pitr`.
//!
//! mysql_async traps (shared/notes/pitr-and-replicas.md §2): capability 4
//! is requested so GTID events arrive; the ROTATE that precedes the first
//! FDE carries 4 CRC bytes the library leaves in the name (stripped here);
//! Annotate_rows events are NOT requested (mysql_async 0.37 cannot set the
//! dump flag): segments lack the SQL-text annotations, which replay does not
//! need, and their event `end_log_pos` values are the server's offsets.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::gtid::{Gtid, GtidState};
use crate::backup::catalog::segment::{self, Run, SegmentManifest, ServerIdentity};
use crate::backup::catalog::{Catalog, ChainLink, TOOL_VERSION};
use crate::backup::source::mysql::binlog::BinlogSpec;
use crate::backup::source::mysql::conn::{explain, MysqlError, Server};
use crate::backup::source::mysql::MysqlSpec;
use crate::error::{one_line, Error, Result};
use crate::pipeline;
use crate::pipeline::encrypt::EncryptionSpec;
use crate::pipeline::Compression;

use super::event::{
    FDE, HEARTBEAT, INCIDENT, MARIA_GTID, MARIA_GTID_LIST, QUERY, ROTATE, STOP, XA_PREPARE, XID,
};
/// LOG_EVENT_ARTIFICIAL_F: made up by the dump thread, not in the file.
const ARTIFICIAL: u16 = 0x20;
/// LOG_EVENT_BINLOG_IN_USE_F on an FDE: cleared in segment headers.
const IN_USE: u16 = 0x1;
/// MariaDB GTID event flags2: a single statement without BEGIN/COMMIT.
const FL_STANDALONE: u8 = 1;
/// Events are sent to the store in chunks of about this size.
const CHUNK: usize = 256 << 10;
/// Heartbeat asked from the server; no byte for `DEAD_AFTER` = a dead link.
const HEARTBEAT_NS: u64 = 1_000_000_000;
const DEAD_AFTER: Duration = Duration::from_secs(10);

/// Counters for `/metrics` and the archiver's log.
#[derive(Debug, Default)]
pub struct Stats {
    pub segments: AtomicU64,
    pub bytes: AtomicU64,
    pub transactions: AtomicU64,
    pub reconnects: AtomicU64,
    /// Unix seconds of the newest archived commit (0: none yet).
    pub newest_commit: AtomicI64,
    /// Unix seconds when the last segment became durable.
    pub last_segment_at: AtomicI64,
    pub gaps: AtomicU64,
    /// Gap records in the store for this job (read at each session start).
    pub gap_records: AtomicU64,
    /// Unix seconds since which the archiver has been caught up (a heartbeat
    /// with everything received stored); 0 while it is behind.
    pub idle_since: AtomicI64,
    /// 1 while streaming from the server, 0 while (re)connecting.
    pub connected: AtomicU64,
    /// 1 while this archiver holds the job's binlog lease (set by
    /// `pitr::archive`; the daemon shows only archivers that hold it).
    pub lease_held: AtomicU64,
}

impl Stats {
    /// Archive lag: 0 when caught up (idle server), else now minus the
    /// newest archived commit; None before anything was archived.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        if self.idle_since.load(Ordering::Relaxed) > 0 {
            return Some(0);
        }
        let t = self.newest_commit.load(Ordering::Relaxed);
        (t > 0).then(|| (now.timestamp() - t).max(0))
    }

    /// The archiver's series as (name, type, help, value): the textfile
    /// of `cexdr binlog archive` and the daemon's `/metrics` both render
    /// these, so the names never drift apart.
    pub fn samples(
        &self,
        now: DateTime<Utc>,
    ) -> Vec<(&'static str, &'static str, &'static str, String)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        vec![
            (
                "cexdr_binlog_newest_commit_timestamp_seconds",
                "gauge",
                "Commit time of the newest archived transaction (whole seconds).",
                self.newest_commit.load(Ordering::Relaxed).to_string(),
            ),
            (
                "cexdr_binlog_lag_seconds",
                "gauge",
                "Now minus the newest archived commit; 0 while caught up with an idle server.",
                self.lag_seconds(now)
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "NaN".into()),
            ),
            (
                "cexdr_binlog_segments_total",
                "counter",
                "Segments stored by this archiver process.",
                g(&self.segments),
            ),
            (
                "cexdr_binlog_stored_bytes_total",
                "counter",
                "Bytes stored by this archiver process.",
                g(&self.bytes),
            ),
            (
                "cexdr_binlog_transactions_total",
                "counter",
                "Transactions archived by this archiver process.",
                g(&self.transactions),
            ),
            (
                "cexdr_binlog_reconnects_total",
                "counter",
                "Sessions that ended and were retried (server restart, network cut).",
                g(&self.reconnects),
            ),
            (
                "cexdr_binlog_gap_records",
                "gauge",
                "Gap records in the archive (binlog purged before it was read).",
                (self.gap_records.load(Ordering::Relaxed) + self.gaps.load(Ordering::Relaxed))
                    .to_string(),
            ),
            (
                "cexdr_binlog_connected",
                "gauge",
                "1 while streaming from the server.",
                g(&self.connected),
            ),
            (
                "cexdr_binlog_metrics_timestamp_seconds",
                "gauge",
                "When the archiver wrote these metrics.",
                now.timestamp().to_string(),
            ),
        ]
    }

    /// Prometheus text of the archiver of `job` (node_exporter textfile).
    pub fn render(&self, job: &str, now: DateTime<Utc>) -> String {
        use std::fmt::Write;
        let j = job.replace('\\', "\\\\").replace('"', "\\\"");
        let mut s = String::new();
        for (name, kind, help, v) in self.samples(now) {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{cexdr_job=\"{j}\"}} {v}"
            );
        }
        s
    }
}

pub struct Archiver<'a> {
    pub cat: &'a Catalog,
    pub job: String,
    pub mysql: MysqlSpec,
    pub spec: BinlogSpec,
    pub compression: Compression,
    pub encryption: Option<EncryptionSpec>,
    pub stats: Arc<Stats>,
}

/// Why a session ended.
enum End {
    /// Cancelled: the archive is durable up to the last closed segment.
    Stopped,
    /// Worth another try (connection lost, server restarting, store hiccup).
    Retry(Error),
}

/// Where the newest durable segment ends.
#[derive(Debug, Clone)]
struct Last {
    timeline: u32,
    server_id: u32,
    seq: u64,
    file: String,
    end_pos: u64,
    next_file: Option<String>,
    gtid_end: GtidState,
    link: ChainLink,
}

impl Archiver<'_> {
    fn what(&self) -> String {
        Server::new(&self.mysql.url, &crate::base::Secret::None, None)
            .map(|s| s.describe())
            .unwrap_or_else(|_| self.mysql.url.clone())
    }

    /// Runs until `cancel`: reconnects (1 s, doubling to 30 s) after any
    /// retryable failure; returns the first fatal one (binlog off, wrong
    /// format, missing privilege, purged binlog, duplicate server id).
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        let mut backoff = Duration::from_secs(1);
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let t0 = Instant::now();
            match self.session(&cancel).await {
                Ok(End::Stopped) => return Ok(()),
                Ok(End::Retry(e)) => {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    if t0.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(job = %self.job, error = %one_line(&e), retry_in_s = backoff.as_secs(), "binlog archiver: reconnecting");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e.in_job(&self.job)),
            }
        }
    }

    async fn last(&self) -> Result<(Option<Last>, bool)> {
        let newest = segment::newest(self.cat, &self.job).await?;
        let last = newest.map(|l| {
            let m = &l.manifest;
            Last {
                timeline: m.timeline,
                server_id: m.server.server_id,
                seq: m.seq,
                file: m.file.clone(),
                end_pos: m.end_pos,
                next_file: m.next_file.clone(),
                gtid_end: m.gtid_end.clone(),
                link: ChainLink {
                    id: m.seq.to_string(),
                    manifest_sha256: l.manifest_sha256.clone(),
                },
            }
        });
        // A gap recorded after the newest segment: its position is gone.
        let gap_after = match &last {
            Some(l) => {
                let objs = self
                    .cat
                    .store()
                    .list(&format!("{}gaps/", segment::job_prefix(&self.job)))
                    .await?;
                let mut after = false;
                self.stats.gap_records.store(
                    objs.iter().filter(|o| o.key.ends_with(".json")).count() as u64,
                    Ordering::Relaxed,
                );
                for o in objs.iter().filter(|o| o.key.ends_with(".json")) {
                    let raw = crate::store::get_bytes(self.cat.store().as_ref(), &o.key).await?;
                    if let Ok(g) = serde_json::from_slice::<segment::GapRecord>(&raw) {
                        after |= g.after_seq == Some(l.seq);
                    }
                }
                after
            }
            None => false,
        };
        Ok((last, gap_after))
    }

    async fn session(&self, cancel: &CancellationToken) -> Result<End> {
        let what = self.what();
        let server = Server::new(
            &self.mysql.url,
            &self.mysql.password,
            self.mysql.tls.as_ref(),
        )?;
        let mut conn = match server.connect().await {
            Ok(c) => c,
            Err(e) => return Ok(End::Retry(e)),
        };
        let (ident, crc) = match self.preflight(&mut conn, &server).await {
            Ok(i) => i,
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => return Ok(End::Retry(e)),
        };
        let (last, gap_after) = self.last().await?;
        let (mode, timeline, file, pos, state) = match &last {
            None => ("first-binlog", 1, String::new(), 4, GtidState::default()),
            Some(l) if gap_after => (
                "first-binlog",
                l.timeline + 1,
                String::new(),
                4,
                l.gtid_end.clone(),
            ),
            Some(l) if l.server_id == ident.server_id => match &l.next_file {
                Some(n) => ("position", l.timeline, n.clone(), 4, l.gtid_end.clone()),
                None => (
                    "position",
                    l.timeline,
                    l.file.clone(),
                    l.end_pos,
                    l.gtid_end.clone(),
                ),
            },
            Some(l) => ("gtid", l.timeline + 1, String::new(), 4, l.gtid_end.clone()),
        };
        let setup = async {
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
            conn.query_drop(format!("SET @master_heartbeat_period = {HEARTBEAT_NS}"))
                .await?;
            if mode == "gtid" {
                conn.query_drop(format!("SET @slave_connect_state = '{state}'"))
                    .await?;
                conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
            }
            Ok::<_, mysql_async::Error>(())
        };
        if let Err(e) = setup.await {
            return Ok(End::Retry(Error::source_from(&what, MysqlError(e))));
        }
        tracing::info!(job = %self.job, server = %what, mode, timeline, file = %file, pos, gtid = %state, archiver_server_id = self.spec.server_id, "binlog archiver: streaming");
        let req = BinlogStreamRequest::new(self.spec.server_id)
            .with_filename(file.as_bytes())
            .with_pos(pos);
        let stream = match conn.get_binlog_stream(req).await {
            Ok(s) => s,
            Err(e) => return self.classify(e, &last, &file, &what).await,
        };
        self.stats.connected.store(1, Ordering::Relaxed);
        let mut s = Session {
            a: self,
            ident,
            crc,
            timeline,
            file: file.clone(),
            fde: None,
            seen_fde: false,
            state,
            last,
            seg: None,
            in_group: false,
            standalone: false,
            group_gtid: None,
            group_ts: 0,
            start_hint: None,
            resumed: Some(mode.to_string()),
            take_gtid_list: mode == "first-binlog",
            clock: FlushClock::new(self.spec.flush_interval),
            arrived: Instant::now(),
        };
        let r = s.stream(stream, cancel, &what, &file).await;
        self.stats.connected.store(0, Ordering::Relaxed);
        self.stats.idle_since.store(0, Ordering::Relaxed);
        r
    }

    /// Maps a dump error: a purged binlog becomes a recorded gap (fatal),
    /// a privilege / id problem is fatal, anything else is retried.
    async fn classify(
        &self,
        e: mysql_async::Error,
        last: &Option<Last>,
        file: &str,
        what: &str,
    ) -> Result<End> {
        if let mysql_async::Error::Server(se) = &e {
            match se.code {
                1236 => {
                    let (seq, gtid) = last
                        .as_ref()
                        .map(|l| (Some(l.seq), l.gtid_end.clone()))
                        .unwrap_or((None, GtidState::default()));
                    let g = segment::GapRecord {
                        job: self.job.clone(),
                        at: Utc::now(),
                        after_seq: seq,
                        after_gtid: gtid.clone(),
                        file: file.to_string(),
                        reason: format!("the server can no longer send what the archive needs next ({}); transactions after {gtid} up to the server's oldest binlog are not archived", se.message),
                        host: crate::base::host_name(),
                    };
                    segment::write_gap(self.cat, &g).await?;
                    self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::source_err(
                        what,
                        format!(
                            "binary log {} needed after GTID {gtid} is gone from the server (error 1236: {}); recorded a gap in the archive (see `cexdr catalog pitr`); the next run continues from the oldest binlog the server has, on a new timeline",
                            if file.is_empty() { "(first)" } else { file },
                            se.message
                        ),
                    ));
                }
                1045 | 1227 | 1044 | 1142 => {
                    return Err(Error::Source {
                        what: what.to_owned(),
                        msg: format!(
                            "{} (the archiver's user needs REPLICATION SLAVE)",
                            explain(&e)
                        ),
                        cause: Some(Box::new(MysqlError(e))),
                    })
                }
                4052 => {
                    return Err(Error::source_err(
                        what,
                        format!(
                            "another replica or archiver is connected with server id {} ({}); set a distinct binlog.server-id",
                            self.spec.server_id, se.message
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(End::Retry(Error::source_from(what, MysqlError(e))))
    }

    async fn preflight(
        &self,
        conn: &mut Conn,
        server: &Server,
    ) -> std::result::Result<(ServerIdentity, bool), Fail> {
        let what = server.describe();
        let q = |e: mysql_async::Error| Fail::Retry(Error::source_from(&what, MysqlError(e)));
        // One variable per SELECT (10.11 returned wrong values otherwise).
        let version: String = conn
            .query_first("SELECT @@version")
            .await
            .map_err(q)?
            .unwrap_or_default();
        if !version.contains("MariaDB") {
            return Err(Fail::Fatal(Error::source_err(
                &what,
                format!("server {version} is MySQL; the binlog archiver supports MariaDB only in this build (docs/pitr.md: MySQL 8)"),
            )));
        }
        let log_bin: i64 = conn
            .query_first("SELECT @@log_bin")
            .await
            .map_err(q)?
            .unwrap_or(0);
        if log_bin != 1 {
            return Err(Fail::Fatal(Error::source_err(
                &what,
                "binary logging is off (log_bin = 0): nothing to archive; start the server with --log-bin",
            )));
        }
        let format: String = conn
            .query_first("SELECT @@global.binlog_format")
            .await
            .map_err(q)?
            .unwrap_or_default();
        if !format.eq_ignore_ascii_case("ROW") {
            return Err(Fail::Fatal(Error::source_err(
                &what,
                format!("binlog_format is {format}, not ROW: point-in-time replay needs row events (SET GLOBAL binlog_format = ROW and in the server config)"),
            )));
        }
        let server_id: u32 = conn
            .query_first("SELECT @@server_id")
            .await
            .map_err(q)?
            .unwrap_or(0);
        if server_id == self.spec.server_id {
            return Err(Fail::Fatal(Error::source_err(
                &what,
                format!("the server itself has server id {server_id}, the archiver's binlog.server-id; choose another"),
            )));
        }
        let hostname: String = conn
            .query_first("SELECT @@hostname")
            .await
            .map_err(q)?
            .unwrap_or_default();
        let checksum: String = conn
            .query_first("SELECT @@global.binlog_checksum")
            .await
            .map_err(q)?
            .unwrap_or_default();
        Ok((
            ServerIdentity {
                server_id,
                server_uuid: None,
                hostname,
                version,
                address: match &server.target.socket {
                    Some(s) => format!("socket {s}"),
                    None => format!("{}:{}", server.target.host, server.target.port),
                },
            },
            checksum.eq_ignore_ascii_case("CRC32"),
        ))
    }
}

enum Fail {
    Fatal(Error),
    Retry(Error),
}

/// One open segment: its upload runs while events arrive.
struct Open {
    seq: u64,
    key: String,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: BytesMut,
    upload: tokio::task::JoinHandle<(Result<u64>, Arc<pipeline::Tally>, Arc<pipeline::Tally>)>,
    encryption: Option<crate::pipeline::encrypt::EncryptionInfo>,
    file: String,
    start_pos: u64,
    end_pos: u64,
    gtid_start: GtidState,
    gtid_first: BTreeMap<String, String>,
    gtid_last: BTreeMap<String, String>,
    first_commit: Option<i64>,
    last_commit: Option<i64>,
    runs: Vec<Run>,
    events: u64,
    transactions: u64,
    bytes: u64,
    opened: Instant,
    opened_at: DateTime<Utc>,
}

struct Session<'s, 'a> {
    a: &'s Archiver<'a>,
    ident: ServerIdentity,
    /// `@@binlog_checksum` = CRC32 (for the pre-FDE rotate trap).
    crc: bool,
    timeline: u32,
    file: String,
    /// The current file's FDE, re-encoded without the in-use flag.
    fde: Option<Vec<u8>>,
    seen_fde: bool,
    state: GtidState,
    last: Option<Last>,
    seg: Option<Open>,
    in_group: bool,
    standalone: bool,
    group_gtid: Option<Gtid>,
    group_ts: i64,
    /// Offset to record as the next segment's start (4 right after a file's FDE).
    start_hint: Option<u64>,
    resumed: Option<String>,
    /// first-binlog mode: the file's GTID_LIST gives the starting position.
    take_gtid_list: bool,
    /// When the open segment must close (see `FlushClock`).
    clock: FlushClock,
    /// When the event being handled arrived (a segment it opens counts from here).
    arrived: Instant,
}

/// Closes kept to estimate how long the next one takes.
const CLOSE_SAMPLES: usize = 8;

/// Segment-close timing. `flush-interval` promises that a transaction the
/// archiver has received is durable in the store within it, so a segment's
/// close starts at (its first event's arrival + flush-interval - the time a
/// close takes): the slowest of the last `CLOSE_SAMPLES` closes, at most half
/// the interval. While a close runs the stream is not read, so an event found
/// already waiting afterwards is counted as arrived when that close began.
#[derive(Debug)]
struct FlushClock {
    interval: Duration,
    closes: std::collections::VecDeque<Duration>,
    /// Since when the stream has not been read (a close began); cleared once
    /// a read finds nothing waiting.
    unread_since: Option<Instant>,
}

impl FlushClock {
    fn new(interval: Duration) -> FlushClock {
        FlushClock {
            interval,
            closes: std::collections::VecDeque::with_capacity(CLOSE_SAMPLES),
            unread_since: None,
        }
    }

    /// The close time allowed for, plus 1/50 of the interval for the time
    /// between a commit and its event reaching us (lag is counted from the
    /// commit; measured p99 5.03 s without it on a loaded 2-core box).
    fn allowance(&self) -> Duration {
        let slowest = self.closes.iter().max().copied().unwrap_or_default();
        (slowest + self.interval / 50).min(self.interval / 2)
    }

    /// When to start closing a segment whose first event arrived at `first`.
    fn deadline(&self, first: Instant) -> Instant {
        first + self.interval - self.allowance()
    }

    /// A close begins: the stream is not read until it ends.
    fn close_started(&mut self) -> Instant {
        let now = Instant::now();
        self.unread_since.get_or_insert(now);
        now
    }

    fn close_done(&mut self, started: Instant) {
        if self.closes.len() == CLOSE_SAMPLES {
            self.closes.pop_front();
        }
        self.closes.push_back(started.elapsed());
    }

    /// Arrival of an event read now: `waiting` = it was ready at once when
    /// reading resumed, so it may have come any time since `unread_since`.
    fn arrived(&mut self, waiting: bool) -> Instant {
        let now = Instant::now();
        if waiting {
            self.unread_since.unwrap_or(now)
        } else {
            self.unread_since = None;
            now
        }
    }
}

fn crc32(b: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(b)
}

impl Session<'_, '_> {
    async fn stream(
        &mut self,
        mut stream: mysql_async::BinlogStream,
        cancel: &CancellationToken,
        what: &str,
        file: &str,
    ) -> Result<End> {
        let mut first = true;
        loop {
            if cancel.is_cancelled() && self.seg.is_none() && !self.in_group {
                let _ = stream.close().await;
                return Ok(End::Stopped);
            }
            // Right after a close, an event already waiting may have arrived
            // while it ran (FlushClock): look before waiting.
            let waiting = if self.seg.is_none() && self.clock.unread_since.is_some() {
                let n = futures::FutureExt::now_or_never(stream.next());
                if n.is_none() {
                    self.clock.arrived(false);
                }
                n
            } else {
                None
            };
            let was_waiting = waiting.is_some();
            let deadline = self.seg.as_ref().map(|s| self.clock.deadline(s.opened));
            let due = deadline.filter(|_| !self.in_group);
            let next = if let Some(n) = waiting {
                Ok(n)
            } else {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        if self.in_group {
                            self.abandon();
                        } else {
                            self.close(false, None).await?;
                        }
                        let _ = stream.close().await;
                        return Ok(End::Stopped);
                    }
                    _ = async { tokio::time::sleep_until(due.unwrap()).await }, if due.is_some() => {
                        if let Err(e) = self.close(false, None).await {
                            self.abandon();
                            return Ok(End::Retry(e));
                        }
                        continue;
                    }
                    n = tokio::time::timeout(DEAD_AFTER, stream.next()) => n,
                }
            };
            self.arrived = self.clock.arrived(was_waiting);
            let ev = match next {
                Err(_) => {
                    self.abandon();
                    return Ok(End::Retry(Error::source_err(
                        what,
                        format!(
                            "no event or heartbeat for {} s: connection presumed dead",
                            DEAD_AFTER.as_secs()
                        ),
                    )));
                }
                Ok(None) => {
                    // Clean shutdown of the server (or it ended the dump).
                    self.finish_or_abandon().await;
                    return Ok(End::Retry(Error::source_err(
                        what,
                        "the server ended the binlog stream (shutdown?)",
                    )));
                }
                Ok(Some(Err(e))) => {
                    self.finish_or_abandon().await;
                    if first {
                        let last = self.last.clone();
                        return self.a.classify(e, &last, file, what).await;
                    }
                    return Ok(End::Retry(Error::source_from(what, MysqlError(e))));
                }
                Ok(Some(Ok(ev))) => ev,
            };
            first = false;
            if let Err(e) = self.event(ev).await {
                self.abandon();
                return match e {
                    Fail::Fatal(e) => Err(e),
                    Fail::Retry(e) => Ok(End::Retry(e)),
                };
            }
        }
    }

    /// On a lost stream, keep what is complete (a boundary) and drop the rest.
    async fn finish_or_abandon(&mut self) {
        if self.in_group {
            self.abandon();
        } else if let Err(e) = self.close(false, None).await {
            tracing::warn!(job = %self.a.job, error = %one_line(&e), "binlog archiver: could not store the last segment; it will be read again");
            self.abandon();
        }
    }

    async fn event(
        &mut self,
        ev: mysql_async::binlog::events::Event,
    ) -> std::result::Result<(), Fail> {
        let h = ev.header();
        let ty = h.event_type_raw();
        let flags = h.flags_raw();
        let retry = |e: Error| Fail::Retry(e);
        match ty {
            HEARTBEAT => {
                self.heartbeat();
                return Ok(());
            }
            ROTATE => return self.rotate(&ev).await.map_err(retry),
            FDE => return self.format_description(&ev),
            _ => {}
        }
        if flags & ARTIFICIAL != 0 {
            return Ok(());
        }
        if ty == INCIDENT {
            tracing::error!(job = %self.a.job, file = %self.file, pos = h.log_pos(), "binlog archiver: the server logged an INCIDENT event (it lost events); archived as is, replay will stop there");
        }
        if ty == MARIA_GTID_LIST && self.take_gtid_list {
            // The binlog state at the start of the first file (first-binlog mode).
            if let Some(s) = parse_gtid_list(ev.data()) {
                self.state = s;
            }
            self.take_gtid_list = false;
        }
        if ty == MARIA_GTID {
            self.gtid(&ev)?;
        }
        self.append(&ev, h.log_pos()).await.map_err(retry)?;
        if self.ends_group(ty, &ev) {
            self.in_group = false;
            self.commit_group();
        }
        if ty == STOP {
            self.close(true, None).await.map_err(retry)?;
            return Ok(());
        }
        if !self.in_group {
            let full = self
                .seg
                .as_ref()
                .map(|s| s.bytes >= self.a.spec.segment_size)
                .unwrap_or(false);
            if full {
                self.close(false, None).await.map_err(retry)?;
            }
        }
        Ok(())
    }

    /// A heartbeat with nothing open: the server is idle since now (unless
    /// it already was).
    fn heartbeat(&self) {
        if self.seg.is_none() && !self.in_group {
            let st = &self.a.stats;
            let _ = st.idle_since.compare_exchange(
                0,
                Utc::now().timestamp(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A ROTATE: an artificial one (or one at position 0) names the file
    /// being read; a real one ends the file, and the segment with it.
    async fn rotate(&mut self, ev: &mysql_async::binlog::events::Event) -> Result<()> {
        let h = ev.header();
        // position (8) + name; before the first FDE the library does
        // not know about the CRC, so the name still carries it.
        let d = ev.data();
        let mut name = d.get(8..).unwrap_or_default().to_vec();
        if !self.seen_fde && name.len() > 4 && self.crc {
            name.truncate(name.len() - 4);
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        if h.flags_raw() & ARTIFICIAL != 0 || h.log_pos() == 0 {
            if name != self.file && self.seg.is_some() {
                self.close(false, None).await?;
            }
            self.file = name;
            return Ok(());
        }
        self.append(ev, h.log_pos()).await?;
        self.close(true, Some(name.clone())).await?;
        self.file = name;
        Ok(())
    }

    /// A format description: kept (without the in-use flag, its checksum
    /// redone) to start each segment of the file with.
    fn format_description(
        &mut self,
        ev: &mysql_async::binlog::events::Event,
    ) -> std::result::Result<(), Fail> {
        self.seen_fde = true;
        let mut b = Vec::with_capacity(128);
        ev.write(mysql_async::binlog::BinlogVersion::Version4, &mut b)
            .map_err(|e| Fail::Retry(Error::io("encoding an FDE", e)))?;
        let f = u16::from_le_bytes([b[17], b[18]]) & !IN_USE;
        b[17..19].copy_from_slice(&f.to_le_bytes());
        if ev.fde().footer().get_checksum_alg().ok().flatten()
            == Some(mysql_async::binlog::BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)
        {
            let n = b.len();
            let c = crc32(&b[..n - 4]);
            b[n - 4..].copy_from_slice(&c.to_le_bytes());
        }
        self.fde = Some(b);
        if ev.header().log_pos() != 0 {
            // The file's own FDE (a new file): segments of it start at 4.
            self.start_hint = Some(4);
        }
        Ok(())
    }

    /// A MariaDB GTID event: a transaction group starts.
    fn gtid(&mut self, ev: &mysql_async::binlog::events::Event) -> std::result::Result<(), Fail> {
        let h = ev.header();
        let d = ev.data();
        if d.len() < 13 {
            return Err(Fail::Retry(Error::source_err(
                &self.a.job,
                "short GTID event",
            )));
        }
        let g = Gtid {
            seq: u64::from_le_bytes(d[0..8].try_into().unwrap()),
            domain: u32::from_le_bytes(d[8..12].try_into().unwrap()),
            server: h.server_id(),
        };
        if self.in_group {
            tracing::warn!(job = %self.a.job, gtid = %g, "binlog archiver: a GTID event inside an unfinished group");
        }
        let known = self.state.seq(g.domain);
        if known != 0 && g.seq > known + 1 {
            tracing::warn!(job = %self.a.job, gtid = %g, after = %self.state, "binlog archiver: GTID sequence jumps (gtid_seq_no set by hand, or transactions missing upstream)");
        }
        self.in_group = true;
        self.standalone = d[12] & FL_STANDALONE != 0;
        self.group_gtid = Some(g);
        self.group_ts = h.timestamp() as i64;
        Ok(())
    }

    /// Whether the event (of type `ty`) ends the open transaction group.
    fn ends_group(&self, ty: u8, ev: &mysql_async::binlog::events::Event) -> bool {
        match ty {
            XID | XA_PREPARE => self.in_group,
            QUERY if self.in_group => {
                self.standalone || {
                    let q = query_text(ev.data());
                    let q = q.trim();
                    q.eq_ignore_ascii_case("COMMIT")
                        || q.eq_ignore_ascii_case("ROLLBACK")
                        || q.len() > 9 && q[..9].eq_ignore_ascii_case("XA COMMIT")
                        || q.len() > 11 && q[..11].eq_ignore_ascii_case("XA ROLLBACK")
                }
            }
            _ => false,
        }
    }

    /// A group has ended: its GTID joins the state and the open segment's
    /// GTID range, commit times and runs.
    fn commit_group(&mut self) {
        let Some(g) = self.group_gtid.take() else {
            return;
        };
        self.state.apply(g);
        let ts = self.group_ts;
        let seg = self.seg.as_mut().expect("append opened it");
        let d = g.domain.to_string();
        seg.gtid_first
            .entry(d.clone())
            .or_insert_with(|| g.to_string());
        seg.gtid_last.insert(d, g.to_string());
        seg.first_commit.get_or_insert(ts);
        seg.last_commit = Some(ts);
        seg.transactions += 1;
        match seg.runs.last_mut() {
            Some(r) if r.ts == ts && r.last.parse::<Gtid>().map(|x| x.domain) == Ok(g.domain) => {
                r.last = g.to_string();
                r.transactions += 1;
            }
            _ => seg.runs.push(Run {
                ts,
                last: g.to_string(),
                transactions: 1,
            }),
        }
    }

    async fn append(
        &mut self,
        ev: &mysql_async::binlog::events::Event,
        log_pos: u32,
    ) -> Result<()> {
        let mut b = Vec::with_capacity(ev.header().event_size() as usize);
        ev.write(mysql_async::binlog::BinlogVersion::Version4, &mut b)
            .map_err(|e| Error::io("encoding a binlog event", e))?;
        self.a.stats.idle_since.store(0, Ordering::Relaxed);
        if self.seg.is_none() {
            let start = self
                .start_hint
                .take()
                .unwrap_or_else(|| (log_pos as u64).saturating_sub(b.len() as u64));
            self.open(start).await?;
        }
        let seg = self.seg.as_mut().expect("opened");
        seg.buf.extend_from_slice(&b);
        seg.events += 1;
        seg.bytes += b.len() as u64;
        seg.end_pos = log_pos as u64;
        if seg.buf.len() >= CHUNK {
            let chunk = seg.buf.split().freeze();
            if seg.tx.send(Ok(chunk)).await.is_err() {
                return Err(Error::source_err(&seg.key, "the segment upload stopped"));
            }
        }
        Ok(())
    }

    async fn open(&mut self, start_pos: u64) -> Result<()> {
        let fde = self.fde.clone().ok_or_else(|| {
            Error::source_err(
                &self.a.job,
                "binlog events before any format description event",
            )
        })?;
        let seq = self.last.as_ref().map(|l| l.seq + 1).unwrap_or(1);
        let key = segment::artifact_key(
            &self.a.job,
            self.timeline,
            self.ident.server_id,
            seq,
            &self.file,
            start_pos,
            self.a.compression.suffix(),
        );
        let (recipients, encryption) = match &self.a.encryption {
            Some(spec) => {
                let (r, info) = crate::pipeline::encrypt::Recipients::from_spec(spec)?;
                (Some(r), Some(info))
            }
            None => (None, None),
        };
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let body: crate::base::ByteStream = Box::pin(tokio_stream_from(rx));
        let staged = pipeline::stage(
            body,
            self.a.compression,
            1,
            recipients,
            CancellationToken::new(),
        );
        let store = self.a.cat.store().clone();
        let k = key.clone();
        let upload = tokio::spawn(async move {
            let r = store.put(&k, staged.stream).await;
            (r, staged.source, staged.stored)
        });
        let mut buf = BytesMut::with_capacity(CHUNK * 2);
        buf.extend_from_slice(&[0xfe, 0x62, 0x69, 0x6e]);
        buf.extend_from_slice(&fde);
        self.seg = Some(Open {
            seq,
            key,
            tx,
            bytes: buf.len() as u64,
            buf,
            upload,
            encryption,
            file: self.file.clone(),
            start_pos,
            end_pos: start_pos,
            gtid_start: self.state.clone(),
            gtid_first: BTreeMap::new(),
            gtid_last: BTreeMap::new(),
            first_commit: None,
            last_commit: None,
            runs: Vec::new(),
            events: 0,
            transactions: 0,
            opened: self.arrived,
            opened_at: Utc::now(),
        });
        Ok(())
    }

    /// Drops the open segment: its upload is aborted, nothing is listed.
    fn abandon(&mut self) {
        if let Some(seg) = self.seg.take() {
            let _ = seg.tx.try_send(Err(Error::Interrupted.into_io()));
            drop(seg.tx);
            // The store removes the partial object when the stream fails.
            tokio::spawn(async move {
                let _ = seg.upload.await;
            });
        }
        self.in_group = false;
        self.group_gtid = None;
    }

    /// Completes the upload, then writes the manifest (the commit point).
    async fn close(&mut self, file_closed: bool, next_file: Option<String>) -> Result<()> {
        let Some(mut seg) = self.seg.take() else {
            return Ok(());
        };
        let started = self.clock.close_started();
        let rest = seg.buf.split().freeze();
        if !rest.is_empty() && seg.tx.send(Ok(rest)).await.is_err() {
            return Err(Error::source_err(&seg.key, "the segment upload stopped"));
        }
        drop(seg.tx);
        let (put, src, stored) = seg
            .upload
            .await
            .map_err(|e| Error::source_with(&seg.key, "upload task", e))?;
        let stored_bytes = put?;
        let ts = |t: Option<i64>| t.and_then(|t| Utc.timestamp_opt(t, 0).single());
        let m = SegmentManifest {
            format: segment::FORMAT,
            kind: "binlog-segment".into(),
            job: self.a.job.clone(),
            timeline: self.timeline,
            seq: seg.seq,
            key: seg.key.clone(),
            server: self.ident.clone(),
            file: seg.file.clone(),
            start_pos: seg.start_pos,
            end_pos: seg.end_pos,
            file_closed,
            next_file: next_file.clone(),
            gtid_start: seg.gtid_start.clone(),
            gtid_end: self.state.clone(),
            gtid_first: seg.gtid_first,
            gtid_last: seg.gtid_last,
            first_commit: ts(seg.first_commit),
            last_commit: ts(seg.last_commit),
            commit_precision: "s".into(),
            runs: seg.runs,
            events: seg.events,
            transactions: seg.transactions,
            source_bytes: src.bytes(),
            stored_bytes,
            sha256: stored.sha256(),
            compression: self.a.compression.name().into(),
            encryption: seg.encryption,
            previous: self.last.as_ref().map(|l| l.link.clone()),
            resumed: self.resumed.take(),
            opened_at: seg.opened_at,
            closed_at: Utc::now(),
            archiver_server_id: self.a.spec.server_id,
            host: crate::base::host_name(),
            tool_version: TOOL_VERSION.into(),
        };
        let sha = segment::write_manifest(self.a.cat, &m).await?;
        self.clock.close_done(started);
        let st = &self.a.stats;
        st.segments.fetch_add(1, Ordering::Relaxed);
        st.bytes.fetch_add(stored_bytes, Ordering::Relaxed);
        st.transactions.fetch_add(m.transactions, Ordering::Relaxed);
        if let Some(t) = seg.last_commit {
            st.newest_commit.fetch_max(t, Ordering::Relaxed);
        }
        st.last_segment_at
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        tracing::debug!(job = %self.a.job, seq = m.seq, file = %m.file, start = m.start_pos, end = m.end_pos, transactions = m.transactions, gtid_end = %m.gtid_end, "binlog segment stored");
        self.last = Some(Last {
            timeline: self.timeline,
            server_id: self.ident.server_id,
            seq: m.seq,
            file: m.file.clone(),
            end_pos: m.end_pos,
            next_file,
            gtid_end: m.gtid_end.clone(),
            link: ChainLink {
                id: m.seq.to_string(),
                manifest_sha256: sha,
            },
        });
        Ok(())
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A Query event's SQL text (after the fixed part, status vars and db name).
pub fn query_text(d: &[u8]) -> String {
    // thread_id 4, exec_time 4, db_len 1, error_code 2, status_vars_len 2
    if d.len() < 13 {
        return String::new();
    }
    let db_len = d[8] as usize;
    let sv = u16::from_le_bytes([d[11], d[12]]) as usize;
    let start = 13 + sv + db_len + 1;
    d.get(start..)
        .map(|q| String::from_utf8_lossy(q).into_owned())
        .unwrap_or_default()
}

/// MariaDB GTID_LIST: count (low 28 bits), then (domain u32, server u32, seq u64) each.
pub fn parse_gtid_list(d: &[u8]) -> Option<GtidState> {
    let n = (u32::from_le_bytes(d.get(0..4)?.try_into().ok()?) & 0x0fff_ffff) as usize;
    let mut s = GtidState::default();
    for i in 0..n {
        let o = 4 + i * 16;
        let e = d.get(o..o + 16)?;
        s.apply(Gtid {
            domain: u32::from_le_bytes(e[0..4].try_into().ok()?),
            server: u32::from_le_bytes(e[4..8].try_into().ok()?),
            seq: u64::from_le_bytes(e[8..16].try_into().ok()?),
        });
    }
    Some(s)
}

#[cfg(test)]
mod flush_clock_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_received_commit_is_durable_within_the_interval() {
        let f = Duration::from_secs(5);
        let mut c = FlushClock::new(f);
        let d = f / 50;
        // First segment: nothing measured yet, the interval less the delivery margin.
        let t0 = c.arrived(false);
        assert_eq!(c.deadline(t0), t0 + f - d);
        // Its close takes 300 ms; events keep arriving meanwhile.
        tokio::time::advance(f).await;
        let started = c.close_started();
        tokio::time::advance(Duration::from_millis(300)).await;
        c.close_done(started);
        // The next event was waiting: it counts from the close's start, and
        // the next close starts 300 ms early, so the close ends by then + 5 s.
        let t1 = c.arrived(true);
        assert_eq!(t1, started);
        assert_eq!(c.deadline(t1), started + f - Duration::from_millis(300) - d);
        tokio::time::advance(c.deadline(t1) - Instant::now()).await;
        let s2 = c.close_started();
        tokio::time::advance(Duration::from_millis(300)).await;
        c.close_done(s2);
        assert!(Instant::now() <= t1 + f);
        // A read that found nothing waiting: the next event counts from its
        // own arrival, however long the server was idle.
        tokio::time::advance(Duration::from_secs(60)).await;
        let idle = c.arrived(false);
        assert_eq!(idle, Instant::now());
        assert_eq!(c.arrived(true), Instant::now(), "cleared by the idle read");
    }

    #[tokio::test(start_paused = true)]
    async fn the_allowance_is_the_slowest_recent_close_capped_at_half() {
        let f = Duration::from_secs(5);
        let mut c = FlushClock::new(f);
        for ms in [100, 900, 200] {
            let s = c.close_started();
            tokio::time::advance(Duration::from_millis(ms)).await;
            c.close_done(s);
        }
        let d = f / 50;
        assert_eq!(c.allowance(), Duration::from_millis(900) + d);
        // The slow close ages out after CLOSE_SAMPLES more.
        for _ in 0..CLOSE_SAMPLES {
            let s = c.close_started();
            tokio::time::advance(Duration::from_millis(50)).await;
            c.close_done(s);
        }
        assert_eq!(c.allowance(), Duration::from_millis(50) + d);
        // A store that stalls for 10 s never makes segments shorter than f/2.
        let s = c.close_started();
        tokio::time::advance(Duration::from_secs(10)).await;
        c.close_done(s);
        assert_eq!(c.allowance(), f / 2);
        let t = c.arrived(false);
        assert_eq!(c.deadline(t), t + f / 2);
    }
}
