//! `cexdr restore --job J --until TIME|--until-gtid G --to mysql://…`:
//! plan (pure), check every byte it needs, restore the base, replay.
//!
//! Time → GTID: MariaDB stamps a transaction's GTID event with its commit
//! time in whole seconds. A transaction stamped S committed in [S, S+1), so
//! for a target T the transactions stamped before floor(T) are certainly
//! committed at or before T and are replayed; those stamped floor(T) may lie
//! on either side of T and are left out (never a transaction after T); the
//! plan counts them and names the GTID that would include them. In binlog
//! order the cut is the first transaction stamped at or after floor(T), as
//! `mariadb-binlog --stop-datetime` does, but in UTC and without its silent
//! rounding of fractions or its reading of the local time zone.
//!
//! Replay is exact: cexdr filters the segments' events itself, passing a
//! transaction on only when its GTID lies after the base's position and at
//! or before the cut (per domain; repeats across segments are dropped), into
//! `mariadb-binlog -` (the decoder users trust), whose SQL goes to the
//! `mariadb` client with `SET SESSION sql_log_bin = 0` first and consecutive
//! row transactions merged into one commit per `batch` (the cost of a
//! replay is per commit). A promotion's top-up (`Session::KeepGtids`,
//! `topup.rs`) uses the same filter and pipes with the binlog on, every
//! transaction committed on its own under its original GTID.
use std::process::Stdio;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::event::{FDE, MARIA_GTID};
use super::window::{self, Base, Run};
use crate::backup::catalog::gtid::{Gtid, GtidState};
use crate::backup::catalog::segment::{Archive, Listed};
use crate::backup::catalog::Catalog;
use crate::backup::source::artifact::TargetBinlog;
use crate::error::{Error, Result};
use crate::pipeline;
use crate::pipeline::Compression;

#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    Time(DateTime<Utc>),
    Gtid(GtidState),
}

impl std::fmt::Display for Until {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Until::Time(t) => write!(
                f,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
            Until::Gtid(g) => write!(f, "GTID {g}"),
        }
    }
}

/// Parses `--until`: RFC 3339 (`2026-12-01T10:42:17.250Z`, any offset) or
/// `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC (never the local zone).
pub fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, TimeError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(s.trim(), f) {
            return Ok(Utc.from_utc_datetime(&n));
        }
    }
    Err(TimeError(s.to_owned()))
}

/// An `--until` time in neither accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--until {0:?}: expected RFC 3339 (2026-12-01T10:42:17Z) or \"YYYY-MM-DD HH:MM:SS\" in UTC"
)]
pub struct TimeError(pub String);

/// What a point-in-time restore will do (`--dry-run` prints it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub job: String,
    pub until: String,
    pub base: String,
    pub base_gtid: String,
    /// The last GTID per domain that will be applied.
    pub cut_gtid: String,
    /// Transactions stamped in the target's own second, left out (time targets).
    pub excluded_same_second: u64,
    /// `--until-gtid` that would include them too.
    pub include_them_with: Option<String>,
    pub segments: Vec<u64>,
    pub segment_keys: Vec<String>,
    pub stored_bytes: u64,
    pub binlog_bytes: u64,
    /// Upper bound: transactions in the chosen segments after the base.
    pub transactions_at_most: u64,
    /// Whether the target's binary log records the base and the replay: the
    /// request's choice (`plan` gives the default, the caller sets it).
    pub target_binlog: TargetBinlog,
    /// The databases the replay takes (the base's, when the job selects
    /// databases or `--database-map` renames): others' transactions are
    /// skipped and counted. `None`: every transaction in range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_databases: Option<Vec<String>>,
    /// `--database-map` renames, applied to the replay too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub database_map: Vec<(String, String)>,
}

impl Plan {
    pub fn render(&self) -> String {
        let mut s = format!(
            "point-in-time restore of job {} until {}\n  base backup {} at GTID {}\n  replay after {} up to and including {}\n",
            self.job, self.until, self.base, if self.base_gtid.is_empty() { "(empty)" } else { &self.base_gtid }, self.base_gtid, self.cut_gtid
        );
        if self.excluded_same_second > 0 {
            s.push_str(&format!(
                "  {} transaction(s) committed in the target's own second are left out (the server records commit times in whole seconds); include them with --until-gtid {}\n",
                self.excluded_same_second,
                self.include_them_with.as_deref().unwrap_or("-")
            ));
        }
        s.push_str(&format!(
            "  {} segment(s) {}, {} bytes stored, {} bytes of binlog, at most {} transaction(s)\n",
            self.segments.len(),
            match (self.segments.first(), self.segments.last()) {
                (Some(a), Some(b)) => format!("{a}..{b}"),
                _ => "-".into(),
            },
            self.stored_bytes,
            self.binlog_bytes,
            self.transactions_at_most
        ));
        if let Some(dbs) = &self.only_databases {
            s.push_str(&format!(
                "  replay limited to database(s) {}: transactions of other databases are skipped (and counted); one that mixes both is refused\n",
                dbs.join(", ")
            ));
        }
        for (old, new) in &self.database_map {
            s.push_str(&format!(
                "  database {old} restored and replayed as {new}\n"
            ));
        }
        s.push_str(match self.target_binlog {
            TargetBinlog::On => "  target binlog on: the base and the replay are written to the target's binary log under its own GTIDs, so its replicas (and an archive of its binlog) get the whole restore\n",
            TargetBinlog::Off => "  target binlog off: neither the base nor the replay is written to the target's binary log (sql_log_bin = 0); replicas of the target will NOT get this restore and differ from it afterwards\n",
        });
        s
    }
}

fn refuse(msg: String) -> Error {
    Error::RestoreRefused(msg)
}

/// The cut for `until` inside run `r`: (state, excluded same-second count, GTID including them).
fn cut_in(a: &Archive, r: &Run, until: &Until) -> (GtidState, u64, Option<String>) {
    let mut state = a.segments[r.first].manifest.gtid_start.clone();
    match until {
        Until::Time(t) => {
            let c = t.timestamp();
            let mut excluded = 0;
            let mut with = state.clone();
            let mut stopped = false;
            for s in &a.segments[r.first..=r.last] {
                for run in &s.manifest.runs {
                    let Ok(g) = run.last.parse::<Gtid>() else {
                        continue;
                    };
                    if !stopped && run.ts < c {
                        state.apply(g);
                        with.apply(g);
                    } else if run.ts == c {
                        stopped = true;
                        excluded += run.transactions;
                        with.apply(g);
                    } else {
                        stopped = true;
                    }
                }
            }
            (
                state.clone(),
                excluded,
                (excluded > 0).then(|| with.to_string()),
            )
        }
        Until::Gtid(target) => {
            let mut reached = GtidState::default();
            'outer: for s in &a.segments[r.first..=r.last] {
                for run in &s.manifest.runs {
                    if target.le(&reached) {
                        break 'outer;
                    }
                    let Ok(g) = run.last.parse::<Gtid>() else {
                        continue;
                    };
                    match target.0.get(&g.domain) {
                        Some(t) if g.seq > t.seq => reached.apply(*t),
                        Some(_) => {
                            state.apply(g);
                            reached.apply(g);
                        }
                        None => state.apply(g),
                    }
                }
            }
            for g in target.0.values() {
                state.apply(*g);
            }
            (state, 0, None)
        }
    }
}

/// Chooses base, cut and segments; refuses (naming why) when the archive
/// does not cover the target. `base_id`: `ID --until` picks the base.
pub fn plan(
    job: &str,
    a: &Archive,
    bases: &[Base],
    until: &Until,
    base_id: Option<&str>,
) -> Result<Plan> {
    let (runs, gaps) = window::runs(a);
    if runs.is_empty() {
        return Err(refuse(format!("job {job} has no archived binlog segments (is its binlog archiver running? see `cexdr catalog pitr --job {job}`)")));
    }
    let newest_stamp = |r: &Run| window::newest_commit(a, r).map(|t| t.timestamp());
    let run = match until {
        Until::Time(t) => {
            let c = t.timestamp();
            match runs.iter().find(|r| newest_stamp(r).map(|n| c <= n).unwrap_or(false)) {
                Some(r) => r.clone(),
                None => {
                    let newest = runs.iter().filter_map(|r| window::newest_commit(a, r)).max();
                    return Err(refuse(format!(
                        "{} is after the newest archived commit of job {job} ({}); the archive cannot prove what happened after it",
                        until,
                        newest.map(|n| n.to_rfc3339()).unwrap_or_else(|| "none".into())
                    )));
                }
            }
        }
        Until::Gtid(g) => match runs.iter().find(|r| {
            let first = &a.segments[r.first].manifest;
            let last = &a.segments[r.last].manifest;
            g.0.values().all(|x| first.gtid_start.seq(x.domain) <= x.seq && x.seq <= last.gtid_end.seq(x.domain))
        }) {
            Some(r) => r.clone(),
            None => {
                return Err(refuse(format!(
                    "{until} is not inside any continuous stretch of the archive of job {job} (see `cexdr catalog pitr --job {job}`{})",
                    if gaps.is_empty() { String::new() } else { format!("; gaps: {}", gaps.iter().map(|g| g.detail.clone()).collect::<Vec<_>>().join("; ")) }
                )))
            }
        },
    };
    let (cut, excluded, with) = cut_in(a, &run, until);
    let gap_before = gaps
        .iter()
        .find(|g| g.before_seq == Some(a.segments[run.first].manifest.seq));
    let candidates: Vec<&Base> = bases
        .iter()
        .filter(|b| window::covers(a, &run, &b.gtid) && b.gtid.le(&cut))
        .collect();
    let base = match base_id {
        Some(id) => {
            let b = bases.iter().find(|b| b.id == id).ok_or_else(|| refuse(format!("backup {id} is not a mysql base backup of job {job} with a recorded GTID position")))?;
            if !candidates.iter().any(|c| c.id == id) {
                return Err(refuse(format!(
                    "backup {id} (GTID {}) cannot be rolled forward to {until}: it is {} ",
                    b.gtid,
                    if !b.gtid.le(&cut) { "newer than the target".to_string() } else { format!("outside the archive's continuous stretch that holds the target (segments {}..{})", a.segments[run.first].manifest.seq, a.segments[run.last].manifest.seq) }
                )));
            }
            b
        }
        None => match candidates.iter().max_by_key(|b| (b.started_at, b.id.clone())) {
            Some(b) => b,
            None => {
                return Err(refuse(format!(
                    "no base backup of job {job} at or before {until} within the continuous stretch of archive that holds it (segments {}..{}){}",
                    a.segments[run.first].manifest.seq,
                    a.segments[run.last].manifest.seq,
                    match gap_before {
                        Some(g) => format!("; the archive has a gap before it: {} ({})", g.detail, g.kind),
                        None => "; take a base backup, or pick a later target".into(),
                    }
                )))
            }
        },
    };
    let needed: Vec<&Listed> = a.segments[run.first..=run.last]
        .iter()
        .filter(|s| !s.manifest.gtid_end.le(&base.gtid) && !cut.le(&s.manifest.gtid_start))
        .collect();
    Ok(Plan {
        job: job.into(),
        until: until.to_string(),
        base: base.id.clone(),
        base_gtid: base.gtid.to_string(),
        cut_gtid: cut.to_string(),
        excluded_same_second: excluded,
        include_them_with: with,
        segments: needed.iter().map(|s| s.manifest.seq).collect(),
        segment_keys: needed.iter().map(|s| s.manifest.key.clone()).collect(),
        stored_bytes: needed.iter().map(|s| s.manifest.stored_bytes).sum(),
        binlog_bytes: needed.iter().map(|s| s.manifest.source_bytes).sum(),
        transactions_at_most: needed.iter().map(|s| s.manifest.transactions).sum(),
        target_binlog: TargetBinlog::On,
        only_databases: None,
        database_map: Vec::new(),
    })
}

/// Opens a segment's stored object: decrypted, decompressed, and the tally
/// of the stored bytes for the SHA-256 check.
async fn open_segment(
    cat: &Catalog,
    s: &Listed,
) -> Result<(crate::base::ByteStream, std::sync::Arc<pipeline::Tally>)> {
    let m = &s.manifest;
    let c = Compression::from_name(&m.compression).ok_or_else(|| {
        refuse(format!(
            "segment {} has unknown compression {:?}",
            m.seq, m.compression
        ))
    })?;
    let (mut stream, tally) = pipeline::tally(cat.store().get(&m.key).await?, true);
    if m.encryption.is_some() {
        let ids = cat.identities().ok_or_else(|| {
            refuse(format!(
                "segment {} is encrypted; pass --identity FILE (or --passphrase-env VAR)",
                m.seq
            ))
        })?;
        stream = crate::pipeline::encrypt::decrypt(stream, ids.clone());
    }
    Ok((pipeline::decompress(stream, c), tally))
}

fn check_tally(s: &Listed, t: &pipeline::Tally) -> Result<()> {
    let m = &s.manifest;
    if t.bytes() != m.stored_bytes || t.sha256() != m.sha256 {
        return Err(refuse(format!(
            "segment {} ({}): read {} bytes with sha256 {}, the manifest says {} bytes with sha256 {}; the stored object is damaged",
            m.seq, m.key, t.bytes(), t.sha256(), m.stored_bytes, m.sha256
        )));
    }
    Ok(())
}

/// Reads every segment of the plan once and checks its SHA-256 and that it
/// decodes into whole events: nothing is touched before this passes.
pub async fn check_segments(cat: &Catalog, a: &Archive, plan: &Plan) -> Result<()> {
    for seq in &plan.segments {
        let s = a
            .segments
            .iter()
            .find(|s| s.manifest.seq == *seq)
            .expect("planned from this archive");
        check_one(cat, s).await?;
    }
    Ok(())
}

/// An encrypted segment without an identity: only the stored bytes (SHA-256
/// and size) can be checked, as `verify` does for encrypted backups.
pub async fn check_stored(cat: &Catalog, s: &Listed) -> Result<()> {
    let (stream, tally) = pipeline::tally(cat.store().get(&s.manifest.key).await?, true);
    crate::backup::source::drain(stream).await.map_err(|e| {
        refuse(format!(
            "segment {} ({}): reading the stored object: {}",
            s.manifest.seq,
            s.manifest.key,
            crate::error::one_line(&e)
        ))
    })?;
    check_tally(s, &tally)
}

/// Reads one segment: SHA-256 and size of the stored object, decoded size,
/// binlog magic and whole events.
pub async fn check_one(cat: &Catalog, s: &Listed) -> Result<()> {
    let seq = s.manifest.seq;
    let (mut stream, tally) = open_segment(cat, s).await?;
    let mut n = 0u64;
    let mut buf = BytesMut::new();
    let mut magic = false;
    while let Some(chunk) = stream.next().await {
        let c = chunk.map_err(|e| {
            refuse(format!(
                "segment {} ({}): the stored object is damaged: {e}",
                seq, s.manifest.key
            ))
        })?;
        n += c.len() as u64;
        buf.extend_from_slice(&c);
        if !magic && buf.len() >= 4 {
            if buf[..4] != [0xfe, 0x62, 0x69, 0x6e] {
                return Err(refuse(format!(
                    "segment {seq} ({}) is not a binlog file",
                    s.manifest.key
                )));
            }
            buf.advance(4);
            magic = true;
        }
        while magic && buf.len() >= 19 {
            let size = u32::from_le_bytes(buf[9..13].try_into().unwrap()) as usize;
            if size < 19 {
                return Err(refuse(format!(
                    "segment {seq} ({}): corrupt event header",
                    s.manifest.key
                )));
            }
            if buf.len() < size {
                break;
            }
            buf.advance(size);
        }
    }
    check_tally(s, &tally)?;
    if n != s.manifest.source_bytes {
        return Err(refuse(format!(
            "segment {seq} ({}): decoded {n} bytes, the manifest says {}",
            s.manifest.key, s.manifest.source_bytes
        )));
    }
    if !buf.is_empty() || !magic {
        return Err(refuse(format!(
            "segment {seq} ({}) ends inside an event (truncated)",
            s.manifest.key
        )));
    }
    Ok(())
}

/// Where the replay goes and how.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub socket: Option<String>,
    pub password: Option<String>,
    /// Transactions merged into one commit.
    pub batch: usize,
    pub session: Session,
}

/// How the client session applies the transactions.
#[derive(Debug, Clone, PartialEq)]
pub enum Session {
    /// A point-in-time restore: GTID bookkeeping dropped (the target gives
    /// the replay GTIDs of its own, as it does the base restore's
    /// statements), `batch` transactions per commit. `binlog` off:
    /// `sql_log_bin = 0` first, so the target's binary log (and its
    /// replicas) get none of it, as with the base restore.
    Restore { binlog: TargetBinlog },
    /// A promotion's top-up: binlog on, every transaction keeps its GTID
    /// (`gtid_domain_id`, `server_id`, `gtid_seq_no` as decoded) and commits
    /// on its own, so that the promoted server's future replicas get them
    /// and its position says exactly what was applied (a new session logs
    /// by default: no `SET sql_log_bin`, which would need BINLOG ADMIN). The
    /// session first takes the named lock (error if another session holds it).
    KeepGtids { lock: String },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Replayed {
    pub transactions: u64,
    pub rows: u64,
    pub events: u64,
    pub seconds: f64,
    pub last_gtid: String,
    /// The first replayed GTID of each domain.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub first_gtid: String,
    /// Transactions in range that changed only other databases than
    /// `Plan::only_databases` (not applied).
    pub skipped: u64,
}

/// A program on PATH, or an error naming it (checked before any change).
pub fn find_program(names: &[&str]) -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        for d in std::env::split_paths(&path).chain(["/usr/bin".into(), "/usr/sbin".into()]) {
            let p = d.join(n);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(refuse(format!(
        "{} not found on PATH (install mariadb-client)",
        names.join(" or ")
    )))
}

/// With a database filter: runs the replay's filter over the planned
/// segments without a target, so that a transaction mixing restored and
/// other databases is refused before anything is written. Returns the
/// transactions it would skip.
pub async fn prescan(cat: &Catalog, a: &Archive, plan: &Plan) -> Result<u64> {
    let Some(only) = plan.only_databases.as_deref() else {
        return Ok(0);
    };
    let base = GtidState::parse(&plan.base_gtid).map_err(|e| refuse(e.to_string()))?;
    let cut = GtidState::parse(&plan.cut_gtid).map_err(|e| refuse(e.to_string()))?;
    let segs: Vec<Listed> = a
        .segments
        .iter()
        .filter(|s| plan.segments.contains(&s.manifest.seq))
        .cloned()
        .collect();
    let fed = feed(cat, &segs, &base, &cut, Some(only), tokio::io::sink()).await?;
    Ok(fed.skipped)
}

/// Streams the planned transactions into the target: segments → exact GTID
/// filter → `mariadb-binlog -` → batching → `mariadb`, then checks that
/// both programs succeeded and the replay reached the cut.
pub async fn replay(cat: &Catalog, a: &Archive, plan: &Plan, to: &Target) -> Result<Replayed> {
    let t0 = Instant::now();
    let base = GtidState::parse(&plan.base_gtid).map_err(|e| refuse(e.to_string()))?;
    let cut = GtidState::parse(&plan.cut_gtid).map_err(|e| refuse(e.to_string()))?;
    let mut dec = spawn_decoder(&plan.database_map)?;
    let mut cl = spawn_client(to)?;
    let segs: Vec<Listed> = plan
        .segments
        .iter()
        .map(|q| {
            a.segments
                .iter()
                .find(|s| s.manifest.seq == *q)
                .expect("planned")
                .clone()
        })
        .collect();
    let dec_in = dec.stdin.take().expect("piped");
    let dec_out = dec.stdout.take().expect("piped");
    let cl_in = cl.stdin.take().expect("piped");
    let mut dec_err = dec.stderr.take().expect("piped");
    let mut cl_err = cl.stderr.take().expect("piped");
    let errs = async {
        let (mut a, mut b) = (String::new(), String::new());
        let _ = tokio::join!(
            dec_err.read_to_string(&mut a),
            cl_err.read_to_string(&mut b)
        );
        (a, b)
    };
    let only = plan.only_databases.as_deref();
    let feed = feed(cat, &segs, &base, &cut, only, dec_in);
    let (fed, pumped, (dec_msg, cl_msg)) = tokio::join!(feed, pump(dec_out, cl_in, to), errs);
    let dec_st = dec
        .wait()
        .await
        .map_err(|e| Error::io("waiting for mariadb-binlog", e))?;
    let cl_st = cl
        .wait()
        .await
        .map_err(|e| Error::io("waiting for the mariadb client", e))?;
    if !cl_st.success() {
        if matches!(to.session, Session::KeepGtids { .. }) {
            return Err(refuse(format!("applying the archived transactions failed ({}): {}; each one applied is in the target's GTID position, so a new attempt goes on from there", cl_st, cl_msg.trim())));
        }
        return Err(refuse(format!("replay into the target failed ({}): {}; the target holds the base backup and part of the replay: restore again", cl_st, cl_msg.trim())));
    }
    if !dec_st.success() || dec_msg.contains("ERROR") {
        return Err(refuse(format!(
            "mariadb-binlog failed ({dec_st}): {}",
            dec_msg.trim()
        )));
    }
    let fed = fed?;
    let rows = pumped?;
    if !cut.le(&fed.applied) {
        return Err(refuse(format!("replay reached GTID {}, short of the planned {cut}: the segments did not hold every planned transaction", fed.applied)));
    }
    Ok(Replayed {
        transactions: fed.transactions,
        rows,
        events: fed.events,
        seconds: t0.elapsed().as_secs_f64(),
        last_gtid: fed.applied.to_string(),
        first_gtid: fed.first.to_string(),
        skipped: fed.skipped,
    })
}

/// `mariadb-binlog -`; renames by `--rewrite-db`, which in 10.11 renames
/// the table-map events of row transactions and the default database of
/// statements (tested by the `--database-map` restores).
fn spawn_decoder(map: &[(String, String)]) -> Result<tokio::process::Child> {
    let tool = find_program(&["mariadb-binlog", "mysqlbinlog"])?;
    tokio::process::Command::new(&tool)
        .arg("--no-defaults")
        .args(map.iter().map(|(a, b)| format!("--rewrite-db={a}->{b}")))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", tool.display()), e))
}

/// The `mariadb` client into the target; the password goes by environment.
fn spawn_client(to: &Target) -> Result<tokio::process::Child> {
    let client = find_program(&["mariadb", "mysql"])?;
    let mut cl = tokio::process::Command::new(&client);
    cl.args(["--no-defaults", "--binary-mode", "--batch", "--silent"]);
    match &to.socket {
        Some(s) => {
            cl.arg(format!("--socket={s}"));
        }
        None => {
            cl.arg(format!("--host={}", to.host))
                .arg(format!("--port={}", to.port))
                .arg("--protocol=tcp");
        }
    }
    cl.arg(format!("--user={}", to.user));
    if let Some(p) = &to.password {
        cl.env("MYSQL_PWD", p);
    } else {
        cl.env_remove("MYSQL_PWD");
    }
    cl.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", client.display()), e))
}

/// What the feed passed on to the decoder.
struct Fed {
    events: u64,
    transactions: u64,
    /// The base's position plus every transaction passed on.
    applied: GtidState,
    first: GtidState,
    skipped: u64,
}

/// Segments → exact GTID filter → the decoder's input (one binlog stream:
/// magic, then each segment's FDE and its transactions in range).
async fn feed<W: tokio::io::AsyncWrite + Unpin>(
    cat: &Catalog,
    segs: &[Listed],
    base: &GtidState,
    cut: &GtidState,
    only: Option<&[String]>,
    mut dec_in: W,
) -> Result<Fed> {
    let mut fed = Fed {
        events: 0,
        transactions: 0,
        applied: base.clone(),
        first: GtidState::default(),
        skipped: 0,
    };
    dec_in
        .write_all(&[0xfe, 0x62, 0x69, 0x6e])
        .await
        .map_err(|e| Error::io("writing to mariadb-binlog", e))?;
    for s in segs {
        feed_segment(cat, s, cut, only, &mut fed, &mut dec_in).await?;
    }
    dec_in
        .shutdown()
        .await
        .map_err(|e| Error::io("closing mariadb-binlog's input", e))?;
    Ok(fed)
}

/// One segment through the filter: a transaction passes when its GTID is
/// not applied yet and at or before the cut.
async fn feed_segment(
    cat: &Catalog,
    s: &Listed,
    cut: &GtidState,
    only: Option<&[String]>,
    fed: &mut Fed,
    dec_in: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<()> {
    let seq = s.manifest.seq;
    let (mut stream, tally) = open_segment(cat, s).await?;
    let mut buf = BytesMut::new();
    let mut magic = false;
    let mut include = false;
    let mut out = Vec::with_capacity(1 << 20);
    let mut txn = Txn {
        hold: only.is_some(),
        ..Txn::default()
    };
    loop {
        let next = stream.next().await;
        let more = next.is_some();
        if let Some(c) = next {
            buf.extend_from_slice(&c.map_err(|e| refuse(format!("segment {seq}: {e}")))?);
        }
        if !magic && buf.len() >= 4 {
            if buf[..4] != [0xfe, 0x62, 0x69, 0x6e] {
                return Err(refuse(format!("segment {seq} is not a binlog file")));
            }
            buf.advance(4);
            magic = true;
        }
        while magic && buf.len() >= 19 {
            let size = u32::from_le_bytes(buf[9..13].try_into().unwrap()) as usize;
            if size < 19 {
                return Err(refuse(format!("segment {seq}: corrupt event header")));
            }
            if buf.len() < size {
                break;
            }
            let ev = buf.split_to(size);
            if ev[4] == MARIA_GTID || matches!(ev[4], 161 | 163 | 4 | 3) {
                txn.close(only, fed, &mut out)?;
            }
            match ev[4] {
                FDE => out.extend_from_slice(&ev),
                MARIA_GTID => {
                    let g = Gtid {
                        seq: u64::from_le_bytes(ev[19..27].try_into().unwrap()),
                        domain: u32::from_le_bytes(ev[27..31].try_into().unwrap()),
                        server: u32::from_le_bytes(ev[5..9].try_into().unwrap()),
                    };
                    include = !fed.applied.contains(&g) && cut.contains(&g);
                    if include {
                        if !fed.first.0.contains_key(&g.domain) {
                            fed.first.apply(g);
                        }
                        fed.applied.apply(g);
                        txn.open(g, &ev, &mut out);
                    }
                }
                // Between groups: GTID list, checkpoint, rotate, stop.
                161 | 163 | 4 | 3 => include = false,
                _ if include => txn.add(&ev, &mut out),
                _ => {}
            }
        }
        if !more {
            txn.close(only, fed, &mut out)?;
        }
        if out.len() >= 1 << 20 || (!more && !out.is_empty()) {
            dec_in
                .write_all(&out)
                .await
                .map_err(|e| Error::io("writing to mariadb-binlog", e))?;
            out.clear();
        }
        if !more {
            break;
        }
    }
    if !buf.is_empty() {
        return Err(refuse(format!(
            "segment {seq} ends inside an event (truncated)"
        )));
    }
    check_tally(s, &tally)
}

/// One transaction held until its end, to be passed on or skipped whole
/// by the databases it changes.
/// Without a database filter its events go straight through (nothing is
/// held); with one, a transaction is held in memory until its end.
#[derive(Default)]
struct Txn {
    hold: bool,
    gtid: Option<Gtid>,
    bytes: Vec<u8>,
    events: u64,
    /// The databases its row events (table maps) and statements (their
    /// default database) name; `""` for a statement with none.
    dbs: std::collections::BTreeSet<String>,
}

impl Txn {
    fn open(&mut self, g: Gtid, ev: &[u8], out: &mut Vec<u8>) {
        self.gtid = Some(g);
        self.add(ev, out);
    }

    fn add(&mut self, ev: &[u8], out: &mut Vec<u8>) {
        self.events += 1;
        if !self.hold {
            out.extend_from_slice(ev);
            return;
        }
        if let Some(db) = event_database(ev) {
            self.dbs.insert(db);
        }
        self.bytes.extend_from_slice(ev);
    }

    /// Passes the transaction on, or skips it when it changes only other
    /// databases than `only`; refuses one that mixes them.
    fn close(&mut self, only: Option<&[String]>, fed: &mut Fed, out: &mut Vec<u8>) -> Result<()> {
        let Some(g) = self.gtid.take() else {
            return Ok(());
        };
        let t = std::mem::replace(
            self,
            Txn {
                hold: self.hold,
                ..Txn::default()
            },
        );
        let pass = match only {
            None => true,
            Some(only) => {
                let (ours, other): (Vec<&String>, Vec<&String>) =
                    t.dbs.iter().partition(|d| only.contains(d));
                if other.iter().any(|d| d.is_empty()) {
                    return Err(refuse(format!("transaction {g} runs a statement without a default database, so it cannot be told whether it changes the restored database(s) {}; restore the whole server (a job without `databases`) or to an earlier point", only.join(", "))));
                }
                if !ours.is_empty() && !other.is_empty() {
                    return Err(refuse(format!("transaction {g} changes database(s) {} of this restore and {} outside it in one commit: replaying part of it would break its atomicity, skipping it would lose its changes to {}", join(&ours), join(&other), join(&ours))));
                }
                other.is_empty()
            }
        };
        if pass {
            fed.transactions += 1;
            fed.events += t.events;
            out.extend_from_slice(&t.bytes);
        } else {
            fed.skipped += 1;
        }
        Ok(())
    }
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The database a row transaction's table map or a statement names
/// (BEGIN/COMMIT statements name none that matters).
fn event_database(ev: &[u8]) -> Option<String> {
    const QUERY: u8 = 2;
    const TABLE_MAP: u8 = 19;
    let name = |at: usize, len: usize| {
        ev.get(at..at + len)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    match ev[4] {
        // Post-header: table id (6 bytes), flags (2); then length + name.
        TABLE_MAP => {
            let len = *ev.get(27)? as usize;
            name(28, len)
        }
        // Post-header: thread id, exec time, db length, error code, status length.
        QUERY => {
            let len = *ev.get(27)? as usize;
            let status = u16::from_le_bytes(ev.get(30..32)?.try_into().ok()?) as usize;
            let at = 32 + status;
            let text = ev.get(at + len + 1..)?;
            if text.starts_with(b"BEGIN") || text.starts_with(b"COMMIT") {
                return None;
            }
            name(at, len)
        }
        _ => None,
    }
}

/// What the client runs before the first transaction.
fn preamble(session: &Session) -> String {
    match session {
        Session::Restore {
            binlog: TargetBinlog::Off,
        } => "SET SESSION sql_log_bin = 0;\n".to_string(),
        // A new session logs by default: nothing to set (and no privilege).
        Session::Restore {
            binlog: TargetBinlog::On,
        } => String::new(),
        Session::KeepGtids { lock } => {
            let lock = lock.replace(['\'', '\\'], "");
            format!(
                "DELIMITER //\nIF GET_LOCK('{lock}', 10) <> 1 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'another session holds the lock {lock}: an earlier top-up is still applying'; END IF//\nDELIMITER ;\n"
            )
        }
    }
}

/// The decoder's SQL → the client, `batch` transactions per commit; returns
/// the rows the decoder counted.
async fn pump(
    dec_out: tokio::process::ChildStdout,
    mut cl_in: tokio::process::ChildStdin,
    to: &Target,
) -> Result<u64> {
    let keep_gtids = matches!(to.session, Session::KeepGtids { .. });
    // Merging transactions would put several GTIDs in one commit.
    let batch = if keep_gtids {
        1
    } else {
        to.batch.max(1) as u64
    };
    let mut lines = BufReader::with_capacity(1 << 20, dec_out).lines();
    let mut w = tokio::io::BufWriter::with_capacity(1 << 20, &mut cl_in);
    let err = |e| Error::io("writing to the mariadb client", e);
    w.write_all(preamble(&to.session).as_bytes())
        .await
        .map_err(err)?;
    let (mut pending, mut commits, mut rows) = (false, 0u64, 0u64);
    let mut skip_next_delim = false;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| Error::io("reading mariadb-binlog's output", e))?
    {
        if std::mem::take(&mut skip_next_delim) && line == "/*!*/;" {
            continue;
        }
        if let Some(n) = line.strip_prefix("# Number of rows: ") {
            rows += n.trim().parse::<u64>().unwrap_or(0);
        }
        // The original GTIDs are kept only by a top-up; a restore's commits
        // get the target's own (and merged ones refuse a session GTID).
        if !keep_gtids
            && (line.starts_with("/*M!100001 SET @@session.gtid_")
                || line.starts_with("/*M!100001 SET @@session.server_id=")
                || line.starts_with("/*M!100101 SET @@session.skip_parallel_replication"))
        {
            continue;
        }
        if line == "COMMIT/*!*/;" {
            commits += 1;
            if commits.is_multiple_of(batch) {
                w.write_all(b"COMMIT/*!*/;\n").await.map_err(err)?;
            } else {
                pending = true;
            }
            continue;
        }
        if line == "START TRANSACTION" && pending {
            pending = false;
            skip_next_delim = true;
            continue;
        }
        if pending && !line.starts_with('#') && !line.is_empty() {
            w.write_all(b"COMMIT/*!*/;\n").await.map_err(err)?;
            pending = false;
        }
        w.write_all(line.as_bytes()).await.map_err(err)?;
        w.write_all(b"\n").await.map_err(err)?;
    }
    if pending {
        w.write_all(b"COMMIT/*!*/;\n").await.map_err(err)?;
    }
    w.flush().await.map_err(err)?;
    drop(w);
    cl_in.shutdown().await.map_err(err)?;
    Ok(rows) // cl_in dropped: EOF, the client ends once it has run everything
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backup::catalog::segment::{Run as SRun, SegmentManifest, ServerIdentity};
    use crate::backup::catalog::ChainLink;

    /// Segment `seq` of server 1 holding transactions `from..=to` of domain 0,
    /// committed at `ts[i]` (Unix seconds) each.
    pub(crate) fn seg(seq: u64, from: u64, ts: &[i64]) -> Listed {
        let to = from + ts.len() as u64 - 1;
        let mut runs: Vec<SRun> = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            let g = format!("0-1-{}", from + i as u64);
            match runs.last_mut() {
                Some(r) if r.ts == *t => {
                    r.last = g;
                    r.transactions += 1
                }
                _ => runs.push(SRun {
                    ts: *t,
                    last: g,
                    transactions: 1,
                }),
            }
        }
        let at = |t: i64| Utc.timestamp_opt(t, 0).single().unwrap();
        let m = SegmentManifest {
            format: 1,
            kind: "binlog-segment".into(),
            job: "j".into(),
            timeline: 1,
            seq,
            key: format!("binlog/j/0001-s1/{seq:012}-binlog.000001-4.binlog"),
            server: ServerIdentity {
                server_id: 1,
                server_uuid: None,
                hostname: "h".into(),
                version: "10.11".into(),
                address: "x:1".into(),
            },
            file: "binlog.000001".into(),
            start_pos: seq * 1000,
            end_pos: seq * 1000 + 1000,
            file_closed: false,
            next_file: None,
            gtid_start: GtidState::parse(&format!("0-1-{}", from - 1)).unwrap(),
            gtid_end: GtidState::parse(&format!("0-1-{to}")).unwrap(),
            gtid_first: [("0".to_string(), format!("0-1-{from}"))].into(),
            gtid_last: [("0".to_string(), format!("0-1-{to}"))].into(),
            first_commit: Some(at(ts[0])),
            last_commit: Some(at(*ts.last().unwrap())),
            commit_precision: "s".into(),
            runs,
            events: 0,
            transactions: ts.len() as u64,
            source_bytes: 0,
            stored_bytes: 0,
            sha256: String::new(),
            compression: "none".into(),
            encryption: None,
            previous: (seq > 1).then(|| ChainLink {
                id: (seq - 1).to_string(),
                manifest_sha256: format!("sha{}", seq - 1),
            }),
            resumed: None,
            opened_at: at(ts[0]),
            closed_at: at(*ts.last().unwrap()),
            archiver_server_id: 9,
            host: "h".into(),
            tool_version: "t".into(),
        };
        Listed {
            manifest: m,
            manifest_key: String::new(),
            manifest_sha256: format!("sha{seq}"),
            artifact_present: true,
            signature_status: None,
        }
    }

    fn base(id: &str, g: &str) -> Base {
        Base {
            id: id.into(),
            gtid: GtidState::parse(g).unwrap(),
            started_at: Utc.timestamp_opt(0, 0).single().unwrap(),
        }
    }

    fn t(s: i64, ms: i64) -> Until {
        Until::Time(Utc.timestamp_opt(s, 0).single().unwrap() + chrono::Duration::milliseconds(ms))
    }

    #[test]
    fn time_targets_cut_before_their_own_second() {
        // GTIDs 1..=3 at 100, 4..=5 at 101, 6 at 103; 7..=8 at 104 (next segment).
        let a = Archive {
            segments: vec![
                seg(1, 1, &[100, 100, 100, 101, 101, 103]),
                seg(2, 7, &[104, 104]),
            ],
            ..Archive::default()
        };
        let b = [base("b0", "0-1-0")];
        type Case<'a> = (Until, &'a str, u64, Option<&'a str>, &'a [u64]);
        let cases: &[Case] = &[
            // T = 101.250: stamps < 101 replayed; the two stamped 101 left out, named.
            (t(101, 250), "0-1-3", 2, Some("0-1-5"), &[1]),
            (t(101, 0), "0-1-3", 2, Some("0-1-5"), &[1]),
            // A quiet second (102) between commits: nothing is ambiguous.
            (t(102, 999), "0-1-5", 0, None, &[1]),
            (t(104, 0), "0-1-6", 2, Some("0-1-8"), &[1]),
            (
                Until::Gtid(GtidState::parse("0-1-7").unwrap()),
                "0-1-7",
                0,
                None,
                &[1, 2],
            ),
        ];
        for (until, cut, excluded, with, segs) in cases {
            let p = plan("j", &a, &b, until, None).unwrap();
            assert_eq!(
                (
                    p.cut_gtid.as_str(),
                    p.excluded_same_second,
                    p.include_them_with.as_deref(),
                    p.segments.as_slice()
                ),
                (*cut, *excluded, *with, *segs),
                "{until}"
            );
        }
        // After the newest archived commit's second: refused.
        let e = plan("j", &a, &b, &t(105, 0), None).unwrap_err().to_string();
        assert!(e.contains("after the newest archived commit"), "{e}");
    }

    #[test]
    fn the_newest_base_at_or_before_the_cut_is_chosen_and_gaps_refuse() {
        let a = Archive {
            segments: vec![
                seg(1, 1, &[100, 101]),
                seg(2, 3, &[102, 103]),
                seg(4, 7, &[110, 111]),
            ],
            ..Archive::default()
        };
        let b = [
            base("b0", "0-1-0"),
            Base {
                started_at: Utc.timestamp_opt(50, 0).single().unwrap(),
                ..base("b2", "0-1-2")
            },
        ];
        let p = plan("j", &a, &b, &t(103, 500), None).unwrap();
        assert_eq!(
            (p.base.as_str(), p.segments.as_slice(), p.cut_gtid.as_str()),
            ("b2", &[2u64][..], "0-1-3")
        );
        let p = plan("j", &a, &b, &t(101, 0), None).unwrap();
        assert_eq!(p.base, "b0", "b2 is after the cut");
        // Segment 3 is missing: a target after it has no base in its stretch.
        let e = plan("j", &a, &b, &t(111, 0), None).unwrap_err().to_string();
        assert!(e.contains("segment 3 is missing"), "{e}");
        let e = plan("j", &a, &b, &t(101, 0), Some("b2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer than the target"), "{e}");
    }

    #[test]
    fn times_parse_as_utc_with_fractions() {
        let t = parse_time("2026-12-01T10:42:17.250Z").unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 250);
        assert_eq!(
            parse_time("2026-12-01 10:42:17").unwrap(),
            "2026-12-01T10:42:17Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_time("2026-12-01T19:42:17+09:00").unwrap(),
            "2026-12-01T10:42:17Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(parse_time("yesterday").is_err());
    }
}
