//! `cexdr restore ID --to mysql://…` and `cexdr verify ID --restore-test
//! mysql://…`. `threads` lanes each read the artifact themselves (checking
//! its SHA-256 and size). Bulk loading (the default): each table goes whole
//! to the first lane that is idle when it reaches the table's data (the
//! dump writes the largest tables first), in one transaction and one
//! LOAD DATA LOCAL statement that the lane feeds batch by batch, so InnoDB
//! bulk-loads it (no undo per row) and two lanes do not fight over a small
//! buffer pool; the other lanes jump over the table. The lane turns INSERTs
//! into the next batch while its connection, on a task of its own, loads
//! the previous one: the client's work and the server's overlap. (Without
//! bulk loading, the data sections, one primary-key range each, are dealt
//! round the lanes, one LOAD DATA per batch.) Once the last lane is past a
//! table, a connection of its own adds the secondary keys held back from
//! its CREATE TABLE and puts back its statistics recalculation, while the
//! lanes load on. Lane 0 also creates the schema first and, once every
//! lane has read every byte and the checksums matched, the routines, views,
//! triggers and events. Memory stays flat: a lane holds at most three 8 MiB
//! batches (one being filled, one queued, one loading).
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::conn::{exec, explain, rows, MysqlError, Server, Target};
use super::dump;
use super::load;
use super::sql::{ident, string_literal, Piece, Splitter};
use crate::backup::catalog::{Catalog, Manifest, Status, Verification, TOOL_VERSION};
use crate::backup::source::artifact::{Reading, RestoreOptions, TargetBinlog};
use crate::backup::source::ScratchTarget;
use crate::base::Secret;
use crate::error::{one_line, Error, Result};

/// Data statements sent to the server at once (as one LOAD DATA stream).
const JOB_BYTES: usize = 8 << 20;

pub(crate) fn manifest_dbs(m: &Manifest) -> Result<Vec<String>> {
    let dbs = m.details["databases"].as_array().ok_or_else(|| {
        Error::RestoreRefused(format!(
            "backup {} has no database list in its manifest",
            m.id
        ))
    })?;
    Ok(dbs
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect())
}

/// old → new for every database of the backup.
fn full_map(dbs: &[String], renames: &[(String, String)]) -> Result<Vec<(String, String)>> {
    for (old, _) in renames {
        if !dbs.contains(old) {
            return Err(Error::Usage(format!(
                "--database-map {old}=…: the backup has no database {old:?} (it has {})",
                dbs.join(", ")
            )));
        }
    }
    Ok(dbs
        .iter()
        .map(|d| {
            let new = renames
                .iter()
                .find(|(o, _)| o == d)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| d.clone());
            (d.clone(), new)
        })
        .collect())
}

/// Reads a backquoted identifier at the start of `s`: (name, bytes used).
fn parse_ident(s: &[u8]) -> Option<(String, usize)> {
    if s.first() != Some(&b'`') {
        return None;
    }
    let mut name = Vec::new();
    let mut i = 1;
    while i < s.len() {
        if s[i] == b'`' {
            if s.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            return Some((String::from_utf8(name).ok()?, i + 1));
        }
        name.push(s[i]);
        i += 1;
    }
    None
}

const CREATE_DB: &[u8] = b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ ";

/// Renames the database in the dump's own `USE` and `CREATE DATABASE`
/// statements (everything else is relative to the current database).
fn rewrite_db(stmt: &[u8], map: &[(String, String)]) -> Option<Vec<u8>> {
    let (prefix, rest): (&[u8], &[u8]) = if let Some(r) = stmt.strip_prefix(b"USE ") {
        (b"USE ", r)
    } else if let Some(r) = stmt.strip_prefix(CREATE_DB) {
        (CREATE_DB, r)
    } else {
        return None;
    };
    let (name, used) = parse_ident(rest)?;
    let (_, new) = map.iter().find(|(o, _)| *o == name)?;
    if *new == name {
        return None;
    }
    let mut out = prefix.to_vec();
    out.extend_from_slice(ident(new).as_bytes());
    out.extend_from_slice(&rest[used..]);
    Some(out)
}

/// A CREATE TABLE whose secondary keys are held back until its rows are
/// loaded (issue 15): InnoDB then builds each by one sort instead of
/// maintaining it row by row, as myloader's optimize-keys does.
#[derive(Debug, PartialEq, Eq)]
pub struct Deferred {
    /// The statement to run instead (primary key and every other line kept).
    pub create: Vec<u8>,
    /// `ADD KEY …, ADD UNIQUE KEY …` in their original order.
    pub add: String,
}

/// Splits the secondary `KEY`/`UNIQUE KEY` lines off a `SHOW CREATE TABLE`
/// statement. Only the plain case is touched: InnoDB, a primary key, no
/// foreign keys, partitions, generated columns or system versioning, and
/// never the key an AUTO_INCREMENT column needs; FULLTEXT and SPATIAL keys
/// stay. Anything else runs as written (None).
pub fn defer_keys(stmt: &[u8]) -> Option<Deferred> {
    let text = std::str::from_utf8(stmt).ok()?;
    if !text.starts_with("CREATE TABLE `") {
        return None;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.len() < 3 || !lines[0].ends_with(" (") {
        return None;
    }
    let tail = lines[lines.len() - 1];
    let body = &lines[1..lines.len() - 1];
    if !tail.starts_with(") ENGINE=InnoDB")
        || tail.contains("PARTITION BY")
        || tail.contains("WITH SYSTEM VERSIONING")
        || !body.iter().any(|l| l.starts_with("  PRIMARY KEY ("))
        || body.iter().any(|l| {
            l.contains(" FOREIGN KEY ")
                || l.contains(" GENERATED ALWAYS AS ")
                || l.contains(" WITH SYSTEM VERSIONING")
                || !l.starts_with("  ")
        })
    {
        return None;
    }
    let auto_inc: Option<&str> = body
        .iter()
        .find(|l| l.starts_with("  `") && l.contains(" AUTO_INCREMENT"))
        .and_then(|l| l[2..].split_once("` ").map(|(c, _)| c));
    let mut keep = Vec::new();
    let mut add = Vec::new();
    for l in body {
        let line = l.trim_end_matches(',');
        let key = line.starts_with("  KEY `") || line.starts_with("  UNIQUE KEY `");
        // The first key column, to keep the key an AUTO_INCREMENT column needs.
        let first_col = line
            .split_once(" (`")
            .and_then(|(_, r)| r.split_once('`'))
            .map(|(c, _)| c);
        let needed = match (auto_inc, first_col) {
            (Some(a), Some(c)) => format!("`{c}") == a,
            _ => false,
        };
        if key && first_col.is_some() && !needed {
            add.push(format!("ADD {}", line.trim_start()));
        } else {
            keep.push(line);
        }
    }
    if add.is_empty() {
        return None;
    }
    let mut create = String::with_capacity(text.len());
    create.push_str(lines[0]);
    create.push('\n');
    create.push_str(&keep.join(",\n"));
    create.push('\n');
    create.push_str(tail);
    Some(Deferred {
        create: create.into_bytes(),
        add: add.join(", "),
    })
}

/// For a plain InnoDB table (not partitioned, not system-versioned), the
/// `STATS_AUTO_RECALC` value its `SHOW CREATE TABLE` gives (`DEFAULT` when
/// it names none): the restore pauses the background statistics
/// recalculation while the table loads and puts this back after. None: left
/// alone (another engine, or the recalculation is off already).
///
/// Why: on MariaDB 10.11 the statistics task spins on a table that is being
/// bulk-loaded (one core busy for as long as the load's transaction is
/// open; docs/mysql.md, "Bulk loading").
pub fn recalc_after(stmt: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(stmt).ok()?;
    if !text.starts_with("CREATE TABLE `") {
        return None;
    }
    let tail = text.rsplit('\n').next()?;
    if !tail.starts_with(") ENGINE=InnoDB")
        || tail.contains("PARTITION BY")
        || tail.contains("WITH SYSTEM VERSIONING")
    {
        return None;
    }
    // The server writes the statistics options before the COMMENT (whose
    // text could say anything).
    let options = tail.split(" COMMENT='").next().unwrap_or(tail);
    if options.contains(" STATS_AUTO_RECALC=0") {
        None
    } else if options.contains(" STATS_AUTO_RECALC=1") {
        Some("1")
    } else {
        Some("DEFAULT")
    }
}

/// What is done to a table once its rows are in: the held-back secondary
/// keys added and/or its statistics recalculation put back (the server
/// computes its statistics on that ALTER; a test checks it), and its
/// definition checked against the backup's.
struct Finish {
    /// `ADD KEY …, …` (see `Deferred`).
    keys: Option<String>,
    /// `STATS_AUTO_RECALC` to put back (see `recalc_after`).
    recalc: Option<&'static str>,
    /// The backup's CREATE TABLE.
    original: Vec<u8>,
}

/// Finishes `key` (if anything was held back) and checks that the table's
/// definition is again exactly the backup's.
async fn add_deferred(
    conn: &mut Conn,
    shared: &Shared,
    key: &(String, String),
    map: &[(String, String)],
) -> Result<()> {
    let Some(f) = shared.deferred.lock().unwrap().remove(key) else {
        return Ok(());
    };
    let db = map
        .iter()
        .find(|(o, _)| *o == key.0)
        .map(|(_, n)| n.as_str())
        .unwrap_or(&key.0);
    let table = format!("{}.{}", ident(db), ident(&key.1));
    let mut clauses: Vec<String> = f.keys.iter().cloned().collect();
    if let Some(v) = f.recalc {
        clauses.push(format!("STATS_AUTO_RECALC={v}"));
    }
    conn.query_drop(format!("ALTER TABLE {table} {}", clauses.join(", ")))
        .await
        .map_err(|e| {
            Error::restore_failed(
                format!(
                    "finishing {}.{} after its rows (adding its secondary keys, putting its STATS_AUTO_RECALC back)",
                    key.0, key.1
                ),
                MysqlError(e),
            )
        })?;
    let now = rows(
        conn,
        "reading the restored definition",
        &format!("SHOW CREATE TABLE {table}"),
    )
    .await?;
    let now = now
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .unwrap_or_default();
    if f.keys.is_some() {
        shared.keys_added.fetch_add(1, Ordering::Relaxed);
    }
    let original = f.original;
    if now.as_bytes() != original.as_slice() {
        return Err(Error::RestoreRefused(format!(
            "{}.{}: after its load was finished (held-back keys, statistics setting), SHOW CREATE TABLE differs from the backup's definition:\n{}\n---\n{}",
            key.0,
            key.1,
            String::from_utf8_lossy(&original),
            now
        )));
    }
    Ok(())
}

async fn session(conn: &mut Conn, scratch: bool, bulk: bool) -> Result<()> {
    exec(
        conn,
        "preparing the restore session",
        // Both checks off (as in mysqldump's header): a transaction into an
        // empty table then takes InnoDB's bulk-insert path (MariaDB 10.6+),
        // which writes no undo per row and lets two connections load two
        // tables without fighting over a small buffer pool (docs/mysql.md,
        // "Bulk loading"). The rows come from tables that had these keys;
        // a duplicate primary key still fails the load, and held-back
        // unique keys are checked when they are added.
        if bulk {
            "SET SESSION foreign_key_checks = 0, unique_checks = 0"
        } else {
            "SET SESSION foreign_key_checks = 0"
        },
    )
    .await?;
    // A scratch copy (restore test) must not reach the binary log and so
    // the replicas; without the privilege it still runs, and says so.
    if scratch {
        if let Err(e) = conn.query_drop("SET SESSION sql_log_bin = 0").await {
            tracing::warn!(error = %explain(&e), "could not turn sql_log_bin off for the scratch restore: it is written to the binary log");
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    Start,
    Header,
    Schema,
    Data,
    Post,
    End,
}

#[derive(Default, Debug)]
struct Counts {
    statements: u64,
    keys_after: u64,
    loaded_rows: u64,
    data_sections: u64,
}

/// Restores `m` into `server` with databases renamed by `map`. Databases
/// this call created are dropped again if it fails.
async fn restore_into(
    catalog: &Catalog,
    m: &Manifest,
    server: &Server,
    map: &[(String, String)],
    force: bool,
    threads: usize,
    scratch: bool,
) -> Result<Counts> {
    let mut ctl = server.connect().await.map_err(Error::in_restore)?;
    let existing: Vec<String> = rows(
        &mut ctl,
        "listing databases",
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA",
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    let clash: Vec<&str> = map
        .iter()
        .map(|(_, n)| n.as_str())
        .filter(|n| existing.iter().any(|e| e == n))
        .collect();
    if !clash.is_empty() && !force {
        return Err(Error::RestoreRefused(format!(
            "database(s) {} already exist on {}; use --force to restore over them (tables of the backup are dropped and re-created), or --database-map OLD=NEW",
            clash.join(", "),
            server.describe()
        )));
    }
    let created: Vec<String> = map
        .iter()
        .map(|(_, n)| n.clone())
        .filter(|n| !existing.contains(n))
        .collect();
    let res = run(catalog, m, server, &mut ctl, map, threads, scratch).await;
    if res.is_err() {
        for d in &created {
            if let Err(e) = ctl
                .query_drop(format!("DROP DATABASE IF EXISTS {}", ident(d)))
                .await
            {
                tracing::warn!(database = %d, error = %explain(&e), "could not drop a partially restored database");
            }
        }
    }
    let _ = ctl.disconnect().await;
    res.map_err(|e| {
        let e = e.in_restore();
        if created.is_empty() {
            e
        } else {
            Error::RestoreRolledBack {
                dropped: created,
                source: Box::new(e),
            }
        }
    })
}

/// Consecutive INSERTs of one table, turned into one LOAD DATA stream.
struct Batch {
    head: load::Head,
    tsv: Vec<u8>,
    hex: Vec<load::Col>,
    rows: u64,
    /// The INSERTs it replaces (run as written if the server refuses
    /// LOAD DATA LOCAL).
    stmts: Vec<Vec<u8>>,
}

/// A data job made ready away from the connection.
enum Step {
    Load(Batch),
    Stmt(Vec<u8>),
}

/// Turns data statements of one table (no transaction control) into steps:
/// consecutive INSERTs become one LOAD DATA stream, anything else runs as
/// written. Pure client CPU, done while the server loads the previous job.
fn prepare(job: Vec<Vec<u8>>) -> Vec<Step> {
    let mut out = Vec::new();
    let mut batch: Option<Batch> = None;
    for s in job {
        if let Some((head, at)) = load::head(&s) {
            if batch.as_ref().is_some_and(|b| b.head != head) {
                out.extend(batch.take().map(Step::Load));
            }
            let b = batch.get_or_insert_with(|| Batch {
                hex: vec![load::Col::default(); head.columns.len()],
                head,
                tsv: Vec::with_capacity(JOB_BYTES + (1 << 20)),
                rows: 0,
                stmts: Vec::new(),
            });
            let mark = b.tsv.len();
            let mut hex = b.hex.clone();
            if let Some(n) = load::rows(&s, at, b.head.columns.len(), &mut b.tsv, &mut hex) {
                b.hex = hex;
                b.rows += n;
                b.stmts.push(s);
                continue;
            }
            b.tsv.truncate(mark);
        }
        out.extend(batch.take().map(Step::Load));
        out.push(Step::Stmt(s));
    }
    out.extend(batch.take().map(Step::Load));
    out
}

/// Runs prepared steps on the connection.
async fn run_steps(
    conn: &mut Conn,
    steps: Vec<Step>,
    loaded_rows: &AtomicU64,
) -> std::result::Result<(), mysql_async::Error> {
    for step in steps {
        let b = match step {
            Step::Stmt(s) => {
                conn.query_drop(s.as_slice()).await?;
                continue;
            }
            Step::Load(b) => b,
        };
        let sql = load::load_statement(&b.head, &b.hex);
        let data = bytes::Bytes::from(b.tsv);
        conn.set_infile_handler(async move {
            Ok(Box::pin(futures::stream::once(async move { Ok(data) })) as mysql_async::InfileData)
        });
        match conn.query_drop(sql).await {
            Ok(()) => {}
            // local_infile is off on the server (or refused): the plain
            // INSERTs do the same, only slower.
            Err(mysql_async::Error::Server(e)) if [1148, 3948, 4166].contains(&e.code) => {
                tracing::debug!(
                    code = e.code,
                    "LOAD DATA LOCAL refused; running the INSERTs"
                );
                for s in &b.stmts {
                    conn.query_drop(s.as_slice()).await?;
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        let loaded = conn.affected_rows();
        no_warnings(conn, &String::from_utf8_lossy(&b.head.table)).await?;
        if loaded != b.rows {
            return Err(mysql_async::Error::Other(
                format!(
                    "LOAD DATA into {} stored {loaded} of {} rows (duplicates or bad values?)",
                    String::from_utf8_lossy(&b.head.table),
                    b.rows
                )
                .into(),
            ));
        }
        loaded_rows.fetch_add(loaded, Ordering::Relaxed);
    }
    Ok(())
}

/// What a lane asks of its connection, in order.
enum Op {
    Data(Vec<Step>),
    /// A statement and what it does (for the error).
    Sql(&'static str, &'static str),
    /// This lane is past the table's sections (its rows committed): once
    /// every lane is, the key-building connection adds the held-back keys.
    Leave(TableKey),
    /// One LOAD DATA for as many batches as come through `rx` (rows
    /// counted): a whole table in one statement, which InnoDB bulk-loads.
    Stream {
        sql: String,
        rx: tokio::sync::mpsc::Receiver<(bytes::Bytes, u64)>,
    },
    /// Answered once every op before it ran.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Fails if the LOAD DATA just run left warnings (a value the server
/// changed, a duplicate it skipped): LOAD DATA LOCAL turns such errors into
/// warnings, and InnoDB's bulk load then empties the table while the
/// statement still succeeds (measured on MariaDB 10.11: a duplicate key
/// left the table with no rows after COMMIT).
async fn no_warnings(conn: &mut Conn, table: &str) -> std::result::Result<(), mysql_async::Error> {
    if conn.get_warnings() == 0 {
        return Ok(());
    }
    let shown: Vec<(String, u32, String)> = conn.query("SHOW WARNINGS LIMIT 5").await?;
    let bad: Vec<String> = shown
        .into_iter()
        .filter(|(level, _, _)| !level.eq_ignore_ascii_case("note"))
        .map(|(level, code, msg)| format!("{level} {code}: {msg}"))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(mysql_async::Error::Other(
        format!("LOAD DATA into {table} left warnings: {}", bad.join("; ")).into(),
    ))
}

/// Runs one LOAD DATA fed by `rx` until the sender is dropped, and checks
/// that the server stored every row sent.
async fn stream_load(
    conn: &mut Conn,
    sql: String,
    rx: tokio::sync::mpsc::Receiver<(bytes::Bytes, u64)>,
    loaded_rows: &AtomicU64,
) -> std::result::Result<(), mysql_async::Error> {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let data = futures::stream::unfold(rx, move |mut rx| {
        let counter = counter.clone();
        async move {
            let (chunk, rows) = rx.recv().await?;
            counter.fetch_add(rows, Ordering::Relaxed);
            Some((Ok(chunk), rx))
        }
    });
    conn.set_infile_handler(async move { Ok(Box::pin(data) as mysql_async::InfileData) });
    conn.query_drop(sql.as_str()).await?;
    let table = sql
        .split(" INTO TABLE ")
        .nth(1)
        .and_then(|t| t.split(" CHARACTER SET").next())
        .unwrap_or("?");
    let (loaded, want) = (conn.affected_rows(), sent.load(Ordering::Relaxed));
    no_warnings(conn, table).await?;
    if loaded != want {
        return Err(mysql_async::Error::Other(
            format!(
                "LOAD DATA into {table} stored {loaded} of {want} rows (duplicates or bad values?)"
            )
            .into(),
        ));
    }
    loaded_rows.fetch_add(loaded, Ordering::Relaxed);
    Ok(())
}

/// The LOAD DATA a lane is feeding, batch by batch.
struct OpenLoad {
    head: load::Head,
    cols: Vec<load::Col>,
    tx: tokio::sync::mpsc::Sender<(bytes::Bytes, u64)>,
}

/// A lane's connection, driven by its own task: the lane reads, splits and
/// converts the next job while the server loads the previous one, so the
/// client's work and the server's overlap instead of taking turns.
struct Executor {
    tx: Option<tokio::sync::mpsc::Sender<Op>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    /// The LOAD DATA being fed (streaming): every other op ends it first,
    /// as the connection runs ops in order.
    open: Option<OpenLoad>,
    /// The last `USE` sent, so that a batch repeating it does not end the
    /// open LOAD DATA.
    used: Option<Vec<u8>>,
}

impl Executor {
    fn start(mut conn: Conn, shared: Arc<Shared>) -> Executor {
        // One job queued while one loads: at most two batches in memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Op>(1);
        let task = tokio::spawn(async move {
            let mysql =
                |what: &str, e: mysql_async::Error| Error::restore_failed(what, MysqlError(e));
            let shared2 = shared.clone();
            let body = async move {
                loop {
                    let op = tokio::select! {
                        op = rx.recv() => op,
                        _ = shared.failed.cancelled() => return Err(Error::RestoreRefused(
                            "stopped: another restore connection failed".into(),
                        )),
                    };
                    let Some(op) = op else { break };
                    let step = async {
                        match op {
                            Op::Data(steps) => run_steps(&mut conn, steps, &shared.loaded_rows)
                                .await
                                .map_err(|e| mysql("loading data", e)),
                            Op::Sql(sql, what) => {
                                conn.query_drop(sql).await.map_err(|e| mysql(what, e))
                            }
                            Op::Barrier(done) => {
                                let _ = done.send(());
                                Ok(())
                            }
                            Op::Stream { sql, rx } => {
                                stream_load(&mut conn, sql, rx, &shared.loaded_rows)
                                    .await
                                    .map_err(|e| mysql("loading data", e))
                            }
                            Op::Leave(key) => {
                                let last = {
                                    let mut passed = shared.passed.lock().unwrap();
                                    let n = passed.entry(key.clone()).or_insert(0);
                                    *n += 1;
                                    *n == shared.lanes
                                };
                                // The key build runs on its own connection:
                                // this lane goes on loading meanwhile.
                                if last {
                                    if let Some(tx) = shared.keys.lock().unwrap().as_ref() {
                                        let _ = tx.send(key);
                                    }
                                }
                                Ok(())
                            }
                        }
                    };
                    tokio::select! {
                        r = step => r?,
                        _ = shared.failed.cancelled() => return Err(Error::RestoreRefused(
                            "stopped: another restore connection failed".into(),
                        )),
                    }
                }
                let _ = conn.disconnect().await;
                Ok(())
            };
            // The first failure is kept where `run` finds it, at once, and
            // stops the other lanes (this lane may be skipping others' data).
            body.await.map_err(|e| shared2.fail(e))
        });
        Executor {
            tx: Some(tx),
            task: Some(task),
            open: None,
            used: None,
        }
    }

    /// Sends a job of data statements: as prepared steps, or (`stream`)
    /// with its batches fed into one LOAD DATA for as long as the table,
    /// columns and hex columns stay the same.
    async fn send_job(&mut self, job: Vec<Vec<u8>>, stream: bool) -> Result<()> {
        let steps = prepare(job);
        if !stream {
            return self.send(Op::Data(steps)).await;
        }
        for step in steps {
            let b = match step {
                Step::Stmt(s) => {
                    if s.starts_with(b"USE ") {
                        if self.used.as_deref() == Some(s.as_slice()) {
                            continue;
                        }
                        self.send(Op::Data(vec![Step::Stmt(s.clone())])).await?;
                        self.used = Some(s);
                    } else {
                        self.send(Op::Data(vec![Step::Stmt(s)])).await?;
                    }
                    continue;
                }
                Step::Load(b) => b,
            };
            let fits = self.open.as_ref().is_some_and(|o| {
                o.head == b.head && b.hex.iter().zip(&o.cols).all(|(c, oc)| c.fits(*oc))
            });
            if !fits {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let sql = load::load_statement(&b.head, &b.hex);
                self.send(Op::Stream { sql, rx }).await?;
                self.open = Some(OpenLoad {
                    head: b.head,
                    cols: b.hex,
                    tx,
                });
            }
            let open = self.open.as_ref().expect("opened above");
            if open
                .tx
                .send((bytes::Bytes::from(b.tsv), b.rows))
                .await
                .is_err()
            {
                self.open = None;
                return Err(self.finish().await.err().unwrap_or_else(|| {
                    Error::RestoreRefused("stopped: the restore connection ended".into())
                }));
            }
        }
        Ok(())
    }

    /// Waits until the connection has run every op sent so far.
    async fn drain(&mut self) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Barrier(tx)).await?;
        if rx.await.is_ok() {
            return Ok(());
        }
        Err(self.finish().await.err().unwrap_or_else(|| {
            Error::RestoreRefused("stopped: the restore connection ended".into())
        }))
    }

    /// Queues `op` (ending the open LOAD DATA first); if the connection
    /// failed, returns its error.
    async fn send(&mut self, op: Op) -> Result<()> {
        self.open = None;
        let sent = match &self.tx {
            Some(tx) => tx.send(op).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        Err(self.finish().await.err().unwrap_or_else(|| {
            Error::RestoreRefused("stopped: the restore connection ended".into())
        }))
    }

    /// Waits until every queued op ran.
    async fn finish(&mut self) -> Result<()> {
        self.open = None;
        self.tx = None;
        match self.task.take() {
            Some(t) => t.await.map_err(|e| {
                Error::RestoreRefused(format!("a restore connection task failed: {e}"))
            })?,
            None => Ok(()),
        }
    }
}

/// (database as in the backup, table).
type TableKey = (String, String);

struct Shared {
    failed: CancellationToken,
    error: Mutex<Option<Error>>,
    schema_done: tokio::sync::watch::Sender<bool>,
    loaded_rows: AtomicU64,
    /// Tables to finish once their rows are in, by (backup db, table).
    deferred: Mutex<HashMap<TableKey, Finish>>,
    keys_added: AtomicU64,
    /// Lanes past each table's data sections, and how many lanes there are.
    passed: Mutex<HashMap<TableKey, usize>>,
    lanes: usize,
    /// Tables whose rows are all in, for the key-building connection
    /// (closed once every lane is done).
    keys: Mutex<Option<tokio::sync::mpsc::UnboundedSender<TableKey>>>,
    /// Diagnostics for measuring the levers (docs/mysql.md): secondary keys
    /// after the rows (default on), and a commit every `txn_bytes` of SQL
    /// instead of one transaction per table (0, the default).
    keys_after: bool,
    txn_bytes: usize,
    /// Bulk loading (default on): each table is loaded whole by one lane
    /// (the first idle lane to reach it), in one transaction with
    /// unique_checks off.
    /// Off (`CEXDR_MYSQL_RESTORE_BULK=0`, to measure against): the data
    /// sections are dealt round the lanes and unique_checks stays on.
    bulk: bool,
    /// Which lane loads each table (bulk loading).
    owners: Mutex<HashMap<TableKey, usize>>,
    /// Each table's batches go into one LOAD DATA (bulk loading, with
    /// local_infile on: a refusal half-way could not fall back to the
    /// INSERTs already sent). InnoDB bulk-loads only a transaction's first
    /// statement into an empty table.
    stream: bool,
}

impl Shared {
    /// The shared state of a restore with `lanes` lanes (the levers read
    /// from the environment, see the fields).
    fn new(
        lanes: usize,
        bulk: bool,
        stream: bool,
        keys_tx: tokio::sync::mpsc::UnboundedSender<TableKey>,
    ) -> Shared {
        let (schema_done, _) = tokio::sync::watch::channel(false);
        Shared {
            failed: CancellationToken::new(),
            error: Mutex::new(None),
            schema_done,
            loaded_rows: AtomicU64::new(0),
            deferred: Mutex::new(HashMap::new()),
            keys_added: AtomicU64::new(0),
            passed: Mutex::new(HashMap::new()),
            lanes,
            keys: Mutex::new(Some(keys_tx)),
            bulk,
            owners: Mutex::new(HashMap::new()),
            stream,
            keys_after: std::env::var("CEXDR_MYSQL_RESTORE_KEYS_AFTER").as_deref() != Ok("0"),
            txn_bytes: std::env::var("CEXDR_MYSQL_RESTORE_TXN_MIB")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .and_then(|m| m.checked_mul(1 << 20))
                .unwrap_or(0),
        }
    }

    /// Whether lane `k` may load the data section `n` (counted from 0 in
    /// dump order) whose marker is `marker` (`data {"db":…,"table":…}`):
    /// the splitter jumps over the others. Bulk loading: a table no lane
    /// has claimed yet is read (`claim` decides once the lane is idle).
    fn may_load(&self, k: usize, n: usize, marker: &str) -> bool {
        if !self.bulk {
            return n % self.lanes == k;
        }
        let key = section_table(marker).unwrap_or_default();
        self.owners
            .lock()
            .unwrap()
            .get(&key)
            .is_none_or(|o| *o == k)
    }

    /// Bulk loading: whether lane `k` loads `key`, claiming it if no lane
    /// has. Called once the lane's connection is idle, so that a table goes
    /// to a lane that is free now, not to one that will be in a while.
    fn claim(&self, k: usize, key: TableKey) -> bool {
        *self.owners.lock().unwrap().entry(key).or_insert(k) == k
    }

    /// Keeps the first lane error (`run` returns it) and stops the others.
    fn fail(&self, e: Error) -> Error {
        let mut slot = self.error.lock().unwrap();
        self.failed.cancel();
        if slot.is_none() {
            *slot = Some(e);
            // Never shown: `run` returns the kept error before any lane's.
            Error::RestoreRefused("stopped: this restore connection failed".into())
        } else {
            e
        }
    }
}

/// The (database, table) a `data …` marker names.
fn section_table(marker: &str) -> Option<TableKey> {
    let json = marker.strip_prefix("data ")?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some((
        v["db"].as_str()?.to_owned(),
        v["table"].as_str()?.to_owned(),
    ))
}

#[derive(Default)]
struct LaneOut {
    counts: Counts,
    post: Vec<Vec<u8>>,
}

/// One lane: its own read of the artifact (checked against the manifest),
/// its own connection (driven by an `Executor`), every `lanes`-th data
/// section, one transaction per table. Lane 0 also creates the schema (on
/// `ctl`) and collects the views/routines/triggers/events.
#[allow(clippy::too_many_arguments)]
async fn lane(
    k: usize,
    catalog: &Catalog,
    m: &Manifest,
    conn: Conn,
    ctl: Option<&mut Conn>,
    map: &Arc<Vec<(String, String)>>,
    shared: &Arc<Shared>,
) -> Result<LaneOut> {
    let mut exec = Executor::start(conn, shared.clone());
    match lane_body(k, catalog, m, &mut exec, ctl, map, shared).await {
        Ok(out) => Ok(out),
        Err(e) => {
            // Keep this error (not the executor's "stopped"), then let the
            // connection stop before the caller drops what was created.
            let e = shared.fail(e);
            let _ = exec.finish().await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn lane_body(
    k: usize,
    catalog: &Catalog,
    m: &Manifest,
    exec: &mut Executor,
    ctl: Option<&mut Conn>,
    map: &[(String, String)],
    shared: &Arc<Shared>,
) -> Result<LaneOut> {
    let a = m
        .artifacts
        .first()
        .ok_or_else(|| Error::RestoreRefused(format!("backup {} has no artifact", m.id)))?;
    let mut reading = Reading::open(catalog, m, a).await?;
    let mut stream =
        std::mem::replace(&mut reading.stream, crate::pipeline::from_bytes(Vec::new()));
    // Data sections (one primary-key range of a table each, in dump order)
    // go to the lane that claims their table first (bulk loading), or are
    // dealt round the lanes. Other lanes' sections are jumped over, not
    // parsed.
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let mut splitter = {
        let shared = shared.clone();
        Splitter::skipping(Box::new(move |mk: &str| {
            mk.starts_with("data ") && !shared.may_load(k, seen.fetch_add(1, Ordering::Relaxed), mk)
        }))
    };
    let mut walk = Walk::new(k, &a.key, exec, ctl, map, shared);
    let mut ended = false;
    while !ended {
        if shared.failed.is_cancelled() {
            return Err(Error::RestoreRefused(
                "stopped: another restore connection failed".into(),
            ));
        }
        let pieces = match stream.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| match reading.check() {
                    Err(d) => d,
                    Ok(()) => Error::restore_failed(format!("reading {}", a.key), e),
                })?;
                splitter.feed(&chunk);
                let mut v = Vec::new();
                while let Some(p) = splitter.next_piece() {
                    v.push(p);
                }
                v
            }
            None => {
                ended = true;
                splitter
                    .finish()
                    .map_err(|e| Error::restore_failed(a.key.clone(), e))?
                    .into_iter()
                    .collect()
            }
        };
        for p in pieces {
            match p {
                Piece::Marker(mk) => walk.marker(mk).await?,
                Piece::Statement(s) => walk.statement(s).await?,
            }
        }
    }
    walk.finish().await?;
    // Every byte read: the checksum decides before anything is declared done.
    reading.check()?;
    if walk.phase != Phase::End {
        return Err(Error::RestoreRefused(format!(
            "{}: the dump has no end marker (truncated)",
            a.key
        )));
    }
    Ok(walk.out)
}

/// One lane's walk through the dump's pieces: the section it is in, the
/// table and transaction it is loading, and the batch it is filling.
struct Walk<'a> {
    k: usize,
    /// The artifact's key (for messages).
    key: &'a str,
    exec: &'a mut Executor,
    /// Lane 0's control connection, which creates the schema.
    ctl: Option<&'a mut Conn>,
    map: &'a [(String, String)],
    shared: &'a Arc<Shared>,
    out: LaneOut,
    /// Tables this lane has passed (counted once, even if a table's
    /// sections came in two runs).
    passed: std::collections::HashSet<TableKey>,
    phase: Phase,
    /// Whether this lane loads the current data section.
    mine: bool,
    current: Option<TableKey>,
    in_txn: bool,
    job: Vec<Vec<u8>>,
    job_bytes: usize,
    current_use: Option<Vec<u8>>,
    schema_rx: tokio::sync::watch::Receiver<bool>,
    schema_db: String,
    txn_bytes: usize,
}

impl<'a> Walk<'a> {
    fn new(
        k: usize,
        key: &'a str,
        exec: &'a mut Executor,
        ctl: Option<&'a mut Conn>,
        map: &'a [(String, String)],
        shared: &'a Arc<Shared>,
    ) -> Self {
        Walk {
            k,
            key,
            exec,
            ctl,
            map,
            shared,
            out: LaneOut::default(),
            passed: Default::default(),
            phase: Phase::Start,
            mine: false,
            current: None,
            in_txn: false,
            job: Vec::new(),
            job_bytes: 0,
            current_use: None,
            schema_rx: shared.schema_done.subscribe(),
            schema_db: String::new(),
            txn_bytes: 0,
        }
    }

    /// A section marker: sends what the last section left, waits for the
    /// schema when the data starts, and moves on to the new section's table.
    async fn marker(&mut self, mk: String) -> Result<()> {
        let (kind, json) = mk.split_once(' ').unwrap_or((mk.as_str(), "{}"));
        let next = match kind {
            "header" => Phase::Header,
            "schema" => Phase::Schema,
            "data" => Phase::Data,
            "post" => Phase::Post,
            "end" => Phase::End,
            _ => self.phase,
        };
        if next < self.phase {
            return Err(Error::RestoreRefused(format!(
                "{}: section {kind:?} after a later section; not a cexdr dump?",
                self.key
            )));
        }
        if !self.job.is_empty() {
            self.exec
                .send_job(std::mem::take(&mut self.job), self.shared.stream)
                .await?;
            self.job_bytes = 0;
        }
        if next > Phase::Schema && self.phase <= Phase::Schema {
            self.schema_created().await?;
        }
        let table = if kind == "data" {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            Some((
                v["db"].as_str().unwrap_or("").to_owned(),
                v["table"].as_str().unwrap_or("").to_owned(),
            ))
        } else {
            None
        };
        if table != self.current {
            self.leave_table().await?;
        }
        if kind == "schema" {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            self.schema_db = v["db"].as_str().unwrap_or("").to_owned();
        }
        if kind == "data" {
            self.enter_data(&mk, &table).await?;
        } else {
            self.mine = false;
        }
        self.current = table;
        self.phase = next;
        Ok(())
    }

    /// Past the schema: lane 0 says it is created, the others wait for it.
    async fn schema_created(&mut self) -> Result<()> {
        if self.k == 0 {
            let _ = self.shared.schema_done.send(true);
            return Ok(());
        }
        tokio::select! {
            r = self.schema_rx.wait_for(|d| *d) => { r.map_err(|_| Error::RestoreRefused("the schema was not created".into()))?; }
            _ = self.shared.failed.cancelled() => return Err(Error::RestoreRefused("stopped: another restore connection failed".into())),
        }
        Ok(())
    }

    /// Leaving the current table: commits its transaction and tells the
    /// key-building connection this lane is past it.
    async fn leave_table(&mut self) -> Result<()> {
        if self.in_txn {
            self.exec.send(Op::Sql("COMMIT", "committing")).await?;
            self.in_txn = false;
        }
        self.txn_bytes = 0;
        if let Some(done) = self.current.take() {
            if self.passed.insert(done.clone()) {
                self.exec.send(Op::Leave(done)).await?;
            }
        }
        Ok(())
    }

    /// A data section: whether this lane loads it (bulk loading: claimed
    /// once the connection is idle).
    async fn enter_data(&mut self, mk: &str, table: &Option<TableKey>) -> Result<()> {
        let (k, shared) = (self.k, self.shared);
        self.mine = shared.may_load(k, self.out.counts.data_sections as usize, mk);
        if self.mine && shared.bulk {
            let key = table.clone().unwrap_or_default();
            let claimed = shared.owners.lock().unwrap().contains_key(&key);
            if !claimed {
                self.exec.drain().await?;
            }
            self.mine = shared.claim(k, key);
        }
        self.out.counts.data_sections += 1;
        if *table != self.current {
            self.current_use = None;
        }
        Ok(())
    }

    /// A statement, by the section it is in.
    async fn statement(&mut self, s: Vec<u8>) -> Result<()> {
        match self.phase {
            Phase::Start => {
                return Err(Error::RestoreRefused(format!(
                    "{}: the dump does not start with the cexdr header; restore it with the mariadb client",
                    self.key
                )))
            }
            Phase::Header | Phase::End => {}
            Phase::Schema => self.schema_statement(s).await?,
            Phase::Data if self.mine => self.data_statement(s).await?,
            Phase::Data => {
                if s.starts_with(b"USE ") {
                    self.current_use = Some(rewrite_db(&s, self.map).unwrap_or(s));
                }
            }
            Phase::Post => {
                if self.k == 0 {
                    self.out.counts.statements += 1;
                    self.out.post.push(rewrite_db(&s, self.map).unwrap_or(s));
                }
            }
        }
        Ok(())
    }

    /// A schema statement (lane 0 only), run on the control connection;
    /// a CREATE TABLE goes without the keys held back and with its
    /// statistics recalculation paused, which `Finish` puts back.
    async fn schema_statement(&mut self, s: Vec<u8>) -> Result<()> {
        let Some(ctl) = self.ctl.as_deref_mut() else {
            return Ok(());
        };
        let shared = self.shared;
        let mut s = rewrite_db(&s, self.map).unwrap_or(s);
        self.out.counts.statements += 1;
        let keys = defer_keys(&s).filter(|_| shared.keys_after);
        let recalc = recalc_after(&s).filter(|_| shared.bulk);
        let paused = match (&keys, recalc) {
            (None, None) => None,
            _ => parse_ident(&s[b"CREATE TABLE ".len()..]).map(|(t, _)| t),
        };
        if let Some(t) = &paused {
            let original = match &keys {
                Some(d) => std::mem::replace(&mut s, d.create.clone()),
                None => s.clone(),
            };
            let f = Finish {
                keys: keys.map(|d| d.add),
                recalc,
                original,
            };
            shared
                .deferred
                .lock()
                .unwrap()
                .insert((self.schema_db.clone(), t.clone()), f);
        }
        ctl.query_drop(s.as_slice()).await.map_err(|e| {
            Error::restore_failed(
                format!(
                    "creating the schema (`{}`)",
                    String::from_utf8_lossy(&s[..s.len().min(120)])
                ),
                MysqlError(e),
            )
        })?;
        if let (Some(t), Some(_)) = (&paused, recalc) {
            let sql = format!("ALTER TABLE {} STATS_AUTO_RECALC=0", ident(t));
            ctl.query_drop(sql).await.map_err(|e| {
                Error::restore_failed(
                    format!(
                        "pausing the statistics recalculation of {}.{t} for the load",
                        self.schema_db
                    ),
                    MysqlError(e),
                )
            })?;
        }
        Ok(())
    }

    /// A data statement of a section this lane loads: into the batch, which
    /// goes to the connection every `JOB_BYTES` (the batch after it starts
    /// with the table's `USE` again).
    async fn data_statement(&mut self, s: Vec<u8>) -> Result<()> {
        let s = rewrite_db(&s, self.map).unwrap_or(s);
        self.out.counts.statements += 1;
        if !self.in_txn {
            self.exec
                .send(Op::Sql("START TRANSACTION", "starting a transaction"))
                .await?;
            self.in_txn = true;
            if let Some(u) = &self.current_use {
                self.job.push(u.clone());
            }
        }
        if s.starts_with(b"USE ") {
            self.current_use = Some(s.clone());
        }
        self.job_bytes += s.len();
        self.job.push(s);
        if self.job_bytes >= JOB_BYTES {
            self.exec
                .send_job(std::mem::take(&mut self.job), self.shared.stream)
                .await?;
            self.txn_bytes += self.job_bytes;
            self.job_bytes = 0;
            if self.shared.txn_bytes > 0 && self.txn_bytes >= self.shared.txn_bytes {
                self.exec.send(Op::Sql("COMMIT", "committing")).await?;
                self.in_txn = false;
                self.txn_bytes = 0;
            } else if let Some(u) = &self.current_use {
                self.job.push(u.clone());
            }
        }
        Ok(())
    }

    /// The dump has ended: sends the last batch, commits, leaves the last
    /// table and lets the connection finish.
    async fn finish(&mut self) -> Result<()> {
        if !self.job.is_empty() {
            self.exec
                .send_job(std::mem::take(&mut self.job), self.shared.stream)
                .await?;
        }
        if self.in_txn {
            self.exec.send(Op::Sql("COMMIT", "committing")).await?;
        }
        if let Some(done) = self.current.take() {
            if self.passed.insert(done.clone()) {
                self.exec.send(Op::Leave(done)).await?;
            }
        }
        if self.k == 0 {
            let _ = self.shared.schema_done.send(true);
        }
        self.exec.finish().await
    }
}

/// Restores with `threads` lanes; each reads the artifact itself so the
/// lanes load their tables at the same time while memory stays flat.
async fn run(
    catalog: &Catalog,
    m: &Manifest,
    server: &Server,
    ctl: &mut Conn,
    map: &[(String, String)],
    threads: usize,
    scratch: bool,
) -> Result<Counts> {
    let bulk = std::env::var("CEXDR_MYSQL_RESTORE_BULK").as_deref() != Ok("0");
    session(ctl, scratch, bulk).await?;
    let stream = bulk
        && rows(ctl, "reading local_infile", "SELECT @@GLOBAL.local_infile")
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"));
    // Every lane reads the whole artifact: that is what the progress counts.
    if let Some(a) = m.artifacts.first() {
        catalog
            .progress()
            .set_total(crate::base::progress::Total::Exact(
                a.stored_bytes.saturating_mul(threads as u64),
            ));
    }
    let (keys_tx, keys_rx) = tokio::sync::mpsc::unbounded_channel::<TableKey>();
    let map = &Arc::new(map.to_vec());
    let shared = Arc::new(Shared::new(threads, bulk, stream, keys_tx));
    // If this restore is dropped half-way (interrupt, drill timeout), the
    // connection tasks stop too instead of loading on or waiting forever.
    let _stop_tasks = shared.failed.clone().drop_guard();
    let mut conns = Vec::new();
    for _ in 0..threads {
        let mut c = server.connect().await?;
        session(&mut c, scratch, bulk).await?;
        conns.push(c);
    }
    // Secondary keys are added back on a connection of their own, so the
    // lane that finished a table last keeps loading while they build.
    let mut kc = server.connect().await?;
    session(&mut kc, scratch, bulk).await?;
    let keys = spawn_keys(kc, keys_rx, &shared, map);
    let out = run_lanes(catalog, m, conns, ctl, map, &shared, keys).await?;
    finish_restore(ctl, &shared, map, out).await
}

/// The key-building task: on `kc`, finishes each table the lanes are all
/// past, until the lanes are done (the channel closes) or one failed.
fn spawn_keys(
    mut kc: Conn,
    mut keys_rx: tokio::sync::mpsc::UnboundedReceiver<TableKey>,
    shared: &Arc<Shared>,
    map: &Arc<Vec<(String, String)>>,
) -> tokio::task::JoinHandle<()> {
    let (shared, map) = (shared.clone(), map.clone());
    tokio::spawn(async move {
        while let Some(key) = keys_rx.recv().await {
            tokio::select! {
                r = add_deferred(&mut kc, &shared, &key, &map) => {
                    if let Err(e) = r {
                        shared.fail(e);
                        return;
                    }
                }
                _ = shared.failed.cancelled() => return,
            }
        }
        let _ = kc.disconnect().await;
    })
}

/// Runs the lanes (lane 0 on the first of `conns`, with `ctl`), then
/// waits for the key-building task: the first error of any of them, or
/// lane 0's output with every lane's statements counted.
async fn run_lanes(
    catalog: &Catalog,
    m: &Manifest,
    conns: Vec<Conn>,
    ctl: &mut Conn,
    map: &Arc<Vec<(String, String)>>,
    shared: &Arc<Shared>,
    keys: tokio::task::JoinHandle<()>,
) -> Result<LaneOut> {
    let mut conns = conns.into_iter();
    let first = conns.next().expect("at least one lane");
    let lane0 = async {
        lane(0, catalog, m, first, Some(ctl), map, shared)
            .await
            .map_err(|e| shared.fail(e))
    };
    let others = futures::future::join_all(conns.enumerate().map(|(i, c)| async move {
        lane(i + 1, catalog, m, c, None, map, shared)
            .await
            .map_err(|e| shared.fail(e))
    }));
    let (r0, rest) = futures::join!(lane0, others);
    shared.keys.lock().unwrap().take();
    if let Err(e) = keys.await {
        shared.fail(Error::RestoreRefused(format!(
            "the key-building task failed: {e}"
        )));
    }
    if let Some(e) = shared.error.lock().unwrap().take() {
        return Err(e.in_restore());
    }
    let mut out = r0?;
    for r in rest {
        let o = r?;
        out.counts.statements += o.counts.statements;
    }
    Ok(out)
}

/// After the lanes: the keys of the tables no lane loaded, then the views,
/// routines, triggers and events; the counts.
async fn finish_restore(
    ctl: &mut Conn,
    shared: &Shared,
    map: &[(String, String)],
    out: LaneOut,
) -> Result<Counts> {
    // Tables no lane loaded (empty or without a data section) get their keys here.
    let left: Vec<(String, String)> = shared.deferred.lock().unwrap().keys().cloned().collect();
    for key in left {
        add_deferred(ctl, shared, &key, map).await?;
    }
    for s in &out.post {
        ctl.query_drop(s.as_slice()).await.map_err(|e| {
            Error::restore_failed(
                format!(
                    "creating views, routines, triggers or events (`{}`)",
                    String::from_utf8_lossy(&s[..s.len().min(160)])
                ),
                MysqlError(e),
            )
        })?;
    }
    let mut counts = out.counts;
    counts.loaded_rows = shared.loaded_rows.load(Ordering::Relaxed);
    counts.keys_after = shared.keys_added.load(Ordering::Relaxed);
    Ok(counts)
}

fn server_for(to: &str, password_env: Option<&str>) -> Result<Server> {
    let secret = match password_env {
        Some(v) => Secret::Env(v.to_owned()),
        None => Secret::None,
    };
    Server::new(to, &secret, None)
}

fn default_threads() -> usize {
    crate::base::parallelism()
}

/// `cexdr restore ID --to mysql://…`.
pub async fn restore(
    catalog: &Catalog,
    m: &Manifest,
    to: &str,
    opts: &RestoreOptions,
) -> Result<String> {
    let t0 = Instant::now();
    let server = server_for(to, opts.password_env.as_deref())?;
    let dbs = manifest_dbs(m)?;
    let map = full_map(&dbs, &opts.database_map)?;
    let threads = opts.threads.unwrap_or_else(default_threads).clamp(1, 64);
    let off = opts.target_binlog == TargetBinlog::Off;
    if off {
        binlog_off_allowed(&server).await?;
    }
    // With the binlog off every session runs as a scratch copy's does
    // (`sql_log_bin = 0`), which the check above showed is allowed.
    let counts = restore_into(catalog, m, &server, &map, opts.force, threads, off).await?;
    let names: Vec<String> = map
        .iter()
        .map(|(o, n)| {
            if o == n {
                o.clone()
            } else {
                format!("{o} as {n}")
            }
        })
        .collect();
    Ok(format!(
        "restored backup {} into {} ({}; {} statements, {} rows bulk-loaded, secondary keys of {} tables built after their rows, {} data sections on {} connections; target binlog {}) in {:.1} s",
        m.id,
        server.describe(),
        names.join(", "),
        counts.statements,
        counts.loaded_rows,
        counts.keys_after,
        counts.data_sections,
        threads,
        opts.target_binlog.word(),
        t0.elapsed().as_secs_f64()
    ))
}

/// `--target-binlog off` before anything is written: the server must let
/// this user turn its session's binary logging off, or nothing happens.
pub(crate) async fn binlog_off_allowed(server: &Server) -> Result<()> {
    let mut c = server.connect().await.map_err(Error::in_restore)?;
    let r = c.query_drop("SET SESSION sql_log_bin = 0").await;
    let _ = c.disconnect().await;
    r.map_err(|e| {
        Error::RestoreRefused(format!(
            "--target-binlog off: {} refused SET SESSION sql_log_bin = 0 ({}); the user needs BINLOG ADMIN (or SUPER), or restore with --target-binlog on",
            server.describe(),
            explain(&e)
        ))
    })
}

/// `cexdr verify ID --restore-test mysql://…` and mysql drills: restores
/// into scratch databases (uniquely named, created by the test: it never
/// writes into a database it did not create), compares every table's row
/// count and row digest with the manifest, and drops the scratch databases
/// again, also when the restore fails or times out. The job's own source
/// server is refused unless `allow_source_server`.
pub async fn restore_test(
    catalog: &Catalog,
    m: &Manifest,
    scratch: &ScratchTarget,
) -> Result<Verification> {
    let (server, on_source) = scratch_server(scratch)?;
    let t0 = Instant::now();
    let map = scratch_names(m)?;
    let may_drop = std::sync::atomic::AtomicBool::new(false);
    let work = async {
        refuse_existing_scratch(&server, &map).await?;
        may_drop.store(true, Ordering::Relaxed);
        let counts =
            restore_into(catalog, m, &server, &map, false, default_threads(), true).await?;
        let seconds = t0.elapsed().as_secs_f64();
        let mut conn = server.connect().await?;
        let compared = compare(&mut conn, m, &map).await;
        let _ = conn.disconnect().await;
        compared.map(|c| (counts, seconds, c))
    };
    let res = match scratch.timeout {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                after: crate::base::human_duration(limit),
            }),
        },
        None => work.await,
    };
    // Only the databases this test created (a create that failed because
    // the name exists stops the restore before anything is written).
    if may_drop.load(Ordering::Relaxed) {
        drop_scratch(&server, &map).await;
    }
    Ok(restore_test_record(m, &server, on_source, res?))
}

/// The scratch server of a restore test, and whether it is the job's own
/// source server (refused unless `allow_source_server`).
fn scratch_server(scratch: &ScratchTarget) -> Result<(Server, bool)> {
    let target = scratch.url.as_deref().ok_or_else(|| {
        Error::Usage("--restore-test needs a scratch MySQL server for mysql backups: --restore-test mysql://user@host:port (a drill: target = \"mysql://…\")".into())
    })?;
    let secret = scratch.password.clone();
    let server = Server::new(target, &secret, None)?;
    let on_source = match &scratch.source_url {
        Some(src) => same_server(&server.target, &Target::parse(src)?),
        None => false,
    };
    if on_source && !scratch.allow_source_server {
        return Err(Error::RestoreRefused(format!(
            "the restore-test target {} is the job's own source server; drills belong on a scratch server (set allow-source-server = true to use uniquely named scratch databases there)",
            server.describe()
        )));
    }
    Ok((server, on_source))
}

/// Each database of the backup and the unique scratch name it is
/// restored under.
fn scratch_names(m: &Manifest) -> Result<Vec<(String, String)>> {
    let dbs = manifest_dbs(m)?;
    let tag = format!("{:08x}", rand::random::<u32>());
    Ok(dbs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), format!("cexdr_rt_{tag}_{i}")))
        .collect())
}

/// Refuses when one of the scratch names already exists: the test never
/// writes into a database it did not create.
async fn refuse_existing_scratch(server: &Server, map: &[(String, String)]) -> Result<()> {
    let mut conn = server.connect().await?;
    let names: Vec<String> = map.iter().map(|(_, n)| string_literal(n)).collect();
    let existing: Vec<String> = conn
        .query(format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({})",
            names.join(", ")
        ))
        .await
        .map_err(|e| Error::restore_failed(server.describe(), MysqlError(e)))?;
    let _ = conn.disconnect().await;
    if !existing.is_empty() {
        return Err(Error::RestoreRefused(format!(
            "scratch database(s) {} already exist on {}; not touching them",
            existing.join(", "),
            server.describe()
        )));
    }
    Ok(())
}

/// The record of a restore test that ran: restored (counts, seconds) and
/// compared (checks, mismatches); failed when anything differs.
fn restore_test_record(
    m: &Manifest,
    server: &Server,
    on_source: bool,
    (counts, seconds, (mut checks, mismatches)): (Counts, f64, (Vec<String>, Vec<String>)),
) -> Verification {
    checks.insert(
        0,
        format!(
            "restored into scratch databases on {} ({} statements) in {seconds:.1} s and dropped them again{}",
            server.describe(),
            counts.statements,
            if on_source {
                " (on the job's own source server: allow-source-server = true)"
            } else {
                ""
            }
        ),
    );
    let error = (!mismatches.is_empty()).then(|| mismatches.join("; "));
    Verification {
        backup_id: m.id.clone(),
        job: m.job.clone(),
        at: Utc::now(),
        status: if error.is_none() {
            Status::Ok
        } else {
            Status::Failed
        },
        method: "restore-test".into(),
        tool_version: TOOL_VERSION.into(),
        host: crate::base::host_name(),
        checks,
        error,
        details: json!({"target": server.describe(), "seconds": seconds, "source_server": on_source}),
    }
}

/// Same host (loopback names count as one) and port, or the same socket.
fn same_server(a: &Target, b: &Target) -> bool {
    let norm = |h: &str| match h {
        "localhost" | "127.0.0.1" | "::1" | "[::1]" => "loopback".to_owned(),
        h => h.to_ascii_lowercase(),
    };
    match (&a.socket, &b.socket) {
        (Some(x), Some(y)) => x == y,
        (None, None) => norm(&a.host) == norm(&b.host) && a.port == b.port,
        // A socket is on this host: compare with a loopback TCP address.
        _ => norm(&a.host) == norm(&b.host),
    }
}

async fn drop_scratch(server: &Server, map: &[(String, String)]) {
    let mut conn = match server.connect().await {
        Ok(c) => c,
        Err(e) => {
            // Nothing was created if the server cannot be reached.
            tracing::warn!(server = %server.describe(), error = %one_line(&e), "could not connect to drop scratch databases");
            return;
        }
    };
    for (_, scratch) in map {
        if let Err(e) = conn
            .query_drop(format!("DROP DATABASE IF EXISTS {}", ident(scratch)))
            .await
        {
            tracing::warn!(database = %scratch, error = %explain(&e), "could not drop a scratch database");
        }
    }
    let _ = conn.disconnect().await;
}

/// Row counts and digests of the restored tables against the manifest.
async fn compare(
    conn: &mut Conn,
    m: &Manifest,
    map: &[(String, String)],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut checks = Vec::new();
    let mut bad = Vec::new();
    let recorded = m.details["tables"].as_object().cloned().unwrap_or_default();
    let mut tables = 0;
    let mut rows_total = 0u64;
    for (old, scratch) in map {
        let restored = dump::tables(conn, std::slice::from_ref(scratch), &[]).await?;
        let want = recorded
            .get(old)
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        for name in want.keys() {
            if !restored.iter().any(|t| &t.name == name) {
                bad.push(format!("table {old}.{name} is missing after the restore"));
            }
        }
        for t in restored.iter().filter(|t| t.has_data()) {
            let Some(w) = want.get(&t.name) else {
                bad.push(format!(
                    "table {old}.{} was restored but is not in the manifest",
                    t.name
                ));
                continue;
            };
            let got = dump::table_digest(conn, t).await?;
            let (rows, digest) = (
                w["rows"].as_u64().unwrap_or(u64::MAX),
                w["digest"].as_str().unwrap_or(""),
            );
            if got.rows != rows {
                bad.push(format!(
                    "{old}.{}: {} rows restored, the manifest says {rows}",
                    t.name, got.rows
                ));
            } else if format!("{:016x}", got.digest) != digest {
                bad.push(format!(
                    "{old}.{}: row digest {:016x} differs from the manifest's {digest}",
                    t.name, got.digest
                ));
            }
            tables += 1;
            rows_total += got.rows;
        }
    }
    checks.push(format!(
        "{tables} tables, {rows_total} rows: counts and row digests compared with the manifest"
    ));
    match m.details.get("definitions").and_then(|d| d.as_object()) {
        None => checks.push(
            "the manifest has no object fingerprints (made by an older cexdr): views, routines, triggers, events and sequences not compared".into(),
        ),
        Some(recorded) => {
            let mut n = 0;
            for (old, scratch) in map {
                let want: BTreeMap<String, String> = recorded
                    .get(old)
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                let got = definitions(conn, scratch).await?;
                for (label, fp) in &want {
                    match got.get(label) {
                        None => bad.push(format!("{old}: {label} is missing after the restore")),
                        Some(g) if g != fp => bad.push(format!(
                            "{old}: {label} differs from the backup (definition, character set, collation, SQL mode or position)"
                        )),
                        Some(_) => {}
                    }
                }
                for label in got.keys().filter(|l| !want.contains_key(*l)) {
                    bad.push(format!("{old}: {label} was restored but is not in the manifest"));
                }
                n += want.len();
            }
            checks.push(format!(
                "{n} views, routines, triggers, events and sequences: definitions and creation contexts compared with the manifest"
            ));
        }
    }
    Ok((checks, bad))
}

/// Fingerprints of every object of `db` as it is now (see `dump::fingerprint`).
async fn definitions(conn: &mut Conn, db: &str) -> Result<BTreeMap<String, String>> {
    let o = dump::list_objects(conn, &[db.to_owned()], &[]).await?;
    exec(
        conn,
        &format!("using database {db}"),
        &format!("USE {}", ident(db)),
    )
    .await?;
    let mut out = BTreeMap::new();
    for obj in o
        .views
        .iter()
        .chain(&o.routines)
        .chain(&o.triggers)
        .chain(&o.events)
        .chain(&o.sequences)
    {
        let body = dump::show_create(conn, obj).await?;
        out.insert(obj.label(), dump::fingerprint(obj, &body));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondary_keys_are_held_back_only_in_the_plain_case() {
        let t = "CREATE TABLE `orders` (\n  `id` bigint(20) NOT NULL AUTO_INCREMENT,\n  `user_id` bigint(20) NOT NULL,\n  `email` varchar(191) NOT NULL,\n  `body` text DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `email` (`email`),\n  KEY `idx_user` (`user_id`,`id`) COMMENT 'x, y',\n  KEY `by_id` (`id`),\n  FULLTEXT KEY `ft` (`body`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci";
        let d = defer_keys(t.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(d.create).unwrap(),
            "CREATE TABLE `orders` (\n  `id` bigint(20) NOT NULL AUTO_INCREMENT,\n  `user_id` bigint(20) NOT NULL,\n  `email` varchar(191) NOT NULL,\n  `body` text DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `by_id` (`id`),\n  FULLTEXT KEY `ft` (`body`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
        );
        assert_eq!(
            d.add,
            "ADD UNIQUE KEY `email` (`email`), ADD KEY `idx_user` (`user_id`,`id`) COMMENT 'x, y'"
        );
        // Foreign keys, partitions, no primary key, other engines: as written.
        for odd in [
            t.replace(
                "  FULLTEXT KEY `ft` (`body`)",
                "  CONSTRAINT `fk` FOREIGN KEY (`user_id`) REFERENCES `users` (`id`)",
            ),
            t.replace("  PRIMARY KEY (`id`),\n", ""),
            t.replace("ENGINE=InnoDB", "ENGINE=MyISAM"),
            format!("{t}\n PARTITION BY HASH (`id`)\nPARTITIONS 2"),
            t.replace(
                "`body` text DEFAULT NULL",
                "`body` text GENERATED ALWAYS AS (`email`) VIRTUAL",
            ),
            "CREATE TABLE `p` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB"
                .into(),
        ] {
            assert_eq!(defer_keys(odd.as_bytes()), None, "{odd}");
        }
    }

    #[test]
    fn statistics_recalculation_is_paused_only_for_plain_innodb_tables() {
        let t = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `note` text DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci COMMENT='a STATS_AUTO_RECALC=0 comment'";
        let cases = [
            (t.to_owned(), Some("DEFAULT")),
            (
                t.replace(" COMMENT=", " STATS_AUTO_RECALC=1 COMMENT="),
                Some("1"),
            ),
            (
                t.replace(
                    " COMMENT=",
                    " STATS_PERSISTENT=1 STATS_AUTO_RECALC=0 COMMENT=",
                ),
                None,
            ),
            (t.replace("ENGINE=InnoDB", "ENGINE=MyISAM"), None),
            (
                t.replace("ENGINE=InnoDB", "ENGINE=InnoDB WITH SYSTEM VERSIONING"),
                None,
            ),
            (
                format!("{t}\n PARTITION BY HASH (`id`)\nPARTITIONS 2"),
                None,
            ),
            (
                "CREATE SEQUENCE `s` start with 1 minvalue 1 ENGINE=InnoDB".into(),
                None,
            ),
            (
                "CREATE TABLE `t` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB".into(),
                Some("DEFAULT"),
            ),
        ];
        for (stmt, want) in cases {
            assert_eq!(recalc_after(stmt.as_bytes()), want, "{stmt}");
        }
    }

    #[test]
    fn database_names_are_rewritten_only_in_use_and_create_database() {
        let map = vec![
            ("a`b".to_string(), "new".to_string()),
            ("same".to_string(), "same".to_string()),
        ];
        assert_eq!(rewrite_db(b"USE `a``b`", &map).unwrap(), b"USE `new`");
        assert_eq!(
            rewrite_db(b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `a``b` /*!40100 DEFAULT CHARACTER SET utf8mb4 */", &map).unwrap(),
            b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `new` /*!40100 DEFAULT CHARACTER SET utf8mb4 */"
        );
        assert!(rewrite_db(b"USE `same`", &map).is_none());
        assert!(rewrite_db(b"INSERT INTO `a``b` VALUES (1)", &map).is_none());
        assert!(full_map(&["x".into()], &[("y".into(), "z".into())]).is_err());
    }
}
