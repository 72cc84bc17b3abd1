//! MySQL / MariaDB logical dumps (issue #3): one consistent, ordered SQL
//! script read by several connections at once, restorable with the stock
//! client (`zstd -dc < dump.sql.zst | mariadb`, or `gunzip` for a gzip
//! job) or, in parallel, with
//! `cexdr restore`. See docs/mysql.md.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Opened, Report, Source};
use crate::error::{one_line, Error, Result};
use std::path::PathBuf;

use serde::Deserialize;

use crate::base::{ByteStream, Secret};
use crate::pipeline::Compression;

#[derive(Debug, Clone, PartialEq)]
pub struct MysqlSpec {
    pub url: String,
    pub password: Secret,
    /// Empty: every database but the system ones.
    pub databases: Vec<String>,
    /// `db.table` or `table` (any database).
    pub exclude_tables: Vec<String>,
    pub threads: usize,
    pub consistency: Consistency,
    pub tls: Option<TlsSpec>,
    /// The continuous binlog archive of this job, if asked for.
    pub binlog: Option<binlog::BinlogSpec>,
    /// `method = "physical"`: mariadb-backup instead of the logical dump.
    pub physical: Option<Box<physical::PhysicalSpec>>,
}

/// The keys of a mysql job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MysqlKeys {
    url: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    databases: Option<Vec<String>>,
    exclude_tables: Option<Vec<String>>,
    threads: Option<usize>,
    consistency: Option<String>,
    // Boxed: the file paths would make every job kind's keys this large.
    tls: Option<Box<TlsSpec>>,
    /// The continuous binlog archive (PITR), see docs/pitr.md.
    binlog: Option<BinlogKeys>,
    /// "logical" (the default) or "physical" (docs/physical.md).
    method: Option<String>,
    // Boxed as tls is.
    physical: Option<Box<physical::PhysicalKeys>>,
    /// `incremental = { schedule = "0 * * * *" }`: incremental physical
    /// backups between the full ones of `schedule`.
    // Boxed as tls is.
    incremental: Option<Box<IncrementalKeys>>,
}

/// `incremental = { schedule = "…" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IncrementalKeys {
    schedule: String,
}

/// `binlog = { flush-interval = "5s", segment-size = "16MiB", server-id = 4242, keep = "2d" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BinlogKeys {
    flush_interval: Option<String>,
    segment_size: Option<String>,
    server_id: Option<i64>,
    keep: Option<String>,
}

impl super::FromPolicy for MysqlSpec {
    type Keys = MysqlKeys;
    /// A drill restores into scratch databases on a scratch server.
    const DRILL_KEYS: &'static [&'static str] = &[
        "target",
        "password-env",
        "password-file",
        "allow-source-server",
        "point-in-time",
    ];
    const DRILL_TARGET_SCHEME: Option<&'static str> = Some("mysql");

    fn from_policy(k: MysqlKeys, input: &super::PolicyInput<'_>) -> Result<MysqlSpec> {
        let physical = match k.method.as_deref() {
            None | Some("logical") => {
                if k.physical.is_some() {
                    return Err(input.err("physical", "applies to method = \"physical\""));
                }
                if k.incremental.is_some() {
                    return Err(input.err(
                        "incremental",
                        "applies to method = \"physical\" (a logical dump has no incrementals; the binlog archive covers between backups)",
                    ));
                }
                None
            }
            Some("physical") => {
                // What a physical copy cannot honour is refused, not ignored:
                // it copies the whole server.
                for (key, set) in [
                    ("databases", k.databases.is_some()),
                    ("exclude-tables", k.exclude_tables.is_some()),
                    ("consistency", k.consistency.is_some()),
                ] {
                    if set {
                        return Err(input.err(
                            key,
                            "does not apply to method = \"physical\": a physical backup copies the whole server (use method = \"logical\" for a subset)",
                        ));
                    }
                }
                let mut p = physical::PhysicalSpec::from_keys(k.physical.map(|b| *b), input)?;
                p.incremental_schedule = k.incremental.map(|i| i.schedule);
                Some(Box::new(p))
            }
            Some(o) => {
                return Err(input.err(
                    "method",
                    format!("{o:?} is not \"logical\" or \"physical\""),
                ))
            }
        };
        let consistency = match k.consistency.as_deref() {
            None | Some("snapshot") => Consistency::Snapshot,
            Some("lock") => Consistency::Lock,
            Some(o) => {
                return Err(input.err(
                    "consistency",
                    format!("{o:?} is not \"snapshot\" or \"lock\""),
                ))
            }
        };
        // One connection more than cores: each spends part of its time
        // waiting for the server, and the spare one keeps client and server
        // busy (bench, scale 1, same sitting: 3 connections 3.72 s / 4.57 s
        // against 2 connections 4.14 s / 5.16 s on 2 cores).
        let threads = k
            .threads
            .unwrap_or_else(|| (crate::base::parallelism() + 1).min(64));
        if threads == 0 || threads > 64 {
            return Err(input.err("threads", "must be between 1 and 64"));
        }
        Ok(MysqlSpec {
            url: input.url(&k.url, &["mysql"])?,
            password: input.secret(&k.password_env, &k.password_file)?,
            databases: k.databases.unwrap_or_default(),
            exclude_tables: k.exclude_tables.unwrap_or_default(),
            threads,
            consistency,
            tls: match k.tls {
                Some(t) => {
                    // Relative paths from the policy's folder; the files are
                    // checked here so `policy check` and every command fail
                    // (exit 2) at the key before any connection.
                    let t = TlsSpec {
                        ca_file: t.ca_file.as_deref().map(|p| input.resolve(p)),
                        cert_file: t.cert_file.as_deref().map(|p| input.resolve(p)),
                        key_file: t.key_file.as_deref().map(|p| input.resolve(p)),
                        ..*t
                    };
                    t.load("tls").map_err(|e| input.err("tls", e.to_string()))?;
                    Some(t)
                }
                None => None,
            },
            binlog: match k.binlog {
                Some(b) => Some(
                    binlog::BinlogSpec::validate(
                        input.job,
                        b.flush_interval.as_deref(),
                        b.segment_size.as_deref(),
                        b.server_id,
                        b.keep.as_deref(),
                    )
                    .map_err(|e| input.err("binlog", e.to_string()))?,
                ),
                None => None,
            },
            physical,
        })
    }
}

impl super::SpecInfo for MysqlSpec {
    fn describe(&self) -> String {
        if let Some(p) = &self.physical {
            return describe_physical(self, p);
        }
        let mut out = format!(
            "  server: {} ({} threads, {:?} consistency)\n  databases: {}\n",
            self.url,
            self.threads,
            self.consistency,
            if self.databases.is_empty() {
                "all but the system ones".into()
            } else {
                self.databases.join(", ")
            }
        );
        match self.tls.as_ref().map(|t| (t, t.load("tls"))) {
            None => out.push_str("  tls: none (plaintext)\n"),
            Some((_, Ok(None))) => out.push_str("  tls: enabled = false (plaintext)\n"),
            Some((t, Ok(Some(l)))) => {
                for line in l.describe(t) {
                    out.push_str(&format!("  {line}\n"));
                }
                for w in l.warnings(t) {
                    out.push_str(&format!("  warning: {w}\n"));
                }
            }
            Some((_, Err(e))) => out.push_str(&format!("  tls: {e}\n")),
        }
        out
    }

    fn server_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    /// Dumps are CPU-bound on the client, so the cheapest codec that keeps
    /// the artifact small: zstd level 1 (bench/mysql.sh, scale 1: 0.74x the
    /// size of `mysqldump | gzip`, smaller and faster than level 3 on SQL
    /// text in 1 MiB frames). gzip, when named, at level 3 (1.05x the size
    /// of gzip -6 in about 0.6x the time).
    fn default_compression(&self, named: Option<Compression>) -> Compression {
        match named {
            None | Some(Compression::Zstd { .. }) => Compression::Zstd { level: 1 },
            Some(Compression::Gzip { .. }) => Compression::Gzip { level: 3 },
            Some(Compression::None) => Compression::None,
        }
    }

    fn has_archive(&self) -> bool {
        self.binlog.is_some()
    }

    fn drill_starts_own_server(&self) -> bool {
        self.physical.is_some()
    }

    fn incremental_schedule(&self) -> Option<&str> {
        self.physical.as_ref()?.incremental_schedule.as_deref()
    }
}

/// `policy check` of a physical job: where it must run and what it found.
fn describe_physical(spec: &MysqlSpec, p: &physical::PhysicalSpec) -> String {
    let mut out = format!(
        "  server: {} (method physical: mariadb-backup --backup --stream=xbstream --parallel={})\n",
        spec.url, spec.threads
    );
    match physical::locate(&p.program) {
        Some(path) => out.push_str(&format!(
            "  tool: {} ({})\n",
            path.display(),
            physical::tool_version_now(&path)
                .map(|v| format!("version {v}; the server must be its major version"))
                .unwrap_or_else(|e| format!("its version is unknown: {}", crate::error::one_line(&e)))
        )),
        None => out.push_str(&format!(
            "  warning: {} not found here: install Debian's mariadb-backup (the server's version) where the job runs\n",
            p.program.display()
        )),
    }
    for prog in ["mbstream"] {
        match physical::locate(std::path::Path::new(prog)) {
            Some(path) => out.push_str(&format!("  restore tool: {}\n", path.display())),
            None => out.push_str(&format!(
                "  note: {prog} not found here (restore --to-datadir needs it)\n"
            )),
        }
    }
    out.push_str(&format!(
        "  datadir: {} (must be readable here: run on the database host or a pod with the datadir mounted)\n  parts: {}\n",
        p.datadir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "the server's @@datadir".into()),
        crate::base::size::human_bytes(p.part_size)
    ));
    if let Some(s) = &p.incremental_schedule {
        out.push_str(&format!(
            "  incrementals: on \"{s}\" (the daemon), from the newest physical backup; fulls on the job's schedule\n"
        ));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Snapshot,
    Lock,
}

/// The `tls` table of a mysql job (shared with failover sites).
pub use crate::base::mysql_tls::TlsSpec;

pub mod binlog;
pub mod conn;
pub mod dump;
mod load;
pub mod physical;
pub mod restore;
pub mod sql;

pub use restore::{restore, restore_test};

/// What restores and checks mysql backups.
pub struct MysqlKind;

#[async_trait]
impl super::SourceKind for MysqlKind {
    async fn validate(&self, stream: ByteStream) -> Result<(u64, Vec<String>)> {
        // A physical backup's part starts with an xbstream chunk, a dump
        // with its header comment.
        let (head, stream) = physical::peek_magic(stream).await?;
        if head {
            return physical::validate(stream).await;
        }
        validate(stream).await
    }
    async fn restore(
        &self,
        catalog: &crate::backup::catalog::Catalog,
        m: &crate::backup::catalog::Manifest,
        to: &str,
        opts: &super::RestoreOptions,
    ) -> Result<String> {
        if physical::is_physical(m) {
            return Err(Error::Usage(format!(
                "backup {} is a physical backup (mariadb-backup): restore it into a datadir with --to-datadir DIR, then start a server on it",
                m.id
            )));
        }
        restore(catalog, m, to, opts).await
    }
    async fn restore_test(
        &self,
        catalog: &crate::backup::catalog::Catalog,
        m: &crate::backup::catalog::Manifest,
        target: &super::ScratchTarget,
    ) -> Result<crate::backup::catalog::Verification> {
        if physical::is_physical(m) {
            if target.url.is_some() {
                return Err(Error::Usage(format!(
                    "backup {} is a physical backup: its restore test starts a scratch mariadbd of its own on a scratch datadir; give --restore-test without a server URL",
                    m.id
                )));
            }
            return physical::drill::restore_test(catalog, m, target).await;
        }
        restore_test(catalog, m, target).await
    }
    async fn check_dependencies(
        &self,
        catalog: &crate::backup::catalog::Catalog,
        m: &crate::backup::catalog::Manifest,
    ) -> Result<Vec<String>> {
        if m.depends_on().is_empty() {
            return Ok(Vec::new());
        }
        let links = physical::chain(catalog, m).await?;
        Ok(vec![format!(
            "chain: {} ({} backups, LSNs contiguous, every parent present)",
            links
                .iter()
                .map(|l| l.id.as_str())
                .collect::<Vec<_>>()
                .join(" -> "),
            links.len()
        )])
    }
}

use conn::{exec, rows, Server};
use dump::{Item, Shared};
use sql::{ident, MARKER};

/// Databases never backed up unless named.
pub const SYSTEM_DATABASES: [&str; 4] =
    ["mysql", "information_schema", "performance_schema", "sys"];

/// The last marker of every complete dump.
pub const END_MARKER: &str = "-- cexdr:end";

pub struct MysqlSource {
    job: String,
    spec: MysqlSpec,
}

impl MysqlSource {
    pub fn new(job: String, spec: MysqlSpec) -> Self {
        MysqlSource { job, spec }
    }
}

/// One row of a SHOW statement, by column name.
async fn show(
    conn: &mut Conn,
    sql: &str,
) -> std::result::Result<Option<Vec<(String, Option<String>)>>, mysql_async::Error> {
    let r: Option<mysql_async::Row> = conn.query_first(sql).await?;
    Ok(r.map(|row| {
        let names: Vec<String> = row
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        names
            .into_iter()
            .zip(row.unwrap_raw())
            .map(|(n, v)| {
                let v = match v {
                    Some(mysql_async::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(v) => Some(v.as_sql(true)),
                };
                (n, v)
            })
            .collect()
    }))
}

fn field<'a>(row: &'a [(String, Option<String>)], names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| {
        row.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .and_then(|(_, v)| v.as_deref())
    })
}

/// Binlog coordinates, GTID set and replica status, read while writes are
/// blocked. Missing privileges or a disabled binlog become notes.
async fn coordinates(conn: &mut Conn, mariadb: bool, log_bin: bool) -> serde_json::Value {
    let mut binlog = json!({"enabled": log_bin});
    if log_bin {
        match show(conn, "SHOW MASTER STATUS").await {
            Ok(Some(r)) => {
                binlog["file"] = json!(field(&r, &["File"]));
                binlog["position"] =
                    json!(field(&r, &["Position"]).and_then(|p| p.parse::<u64>().ok()));
            }
            Ok(None) => binlog["note"] = json!("SHOW MASTER STATUS returned nothing"),
            Err(e) => {
                binlog["note"] = json!(format!(
                    "could not read binlog position: {}",
                    conn::explain(&e)
                ))
            }
        }
    } else {
        binlog["note"] =
            json!("binary logging is off on this server: no binlog coordinates or GTID set");
    }
    let gtid_sql = if mariadb {
        "SELECT @@GLOBAL.gtid_binlog_pos"
    } else {
        "SELECT @@GLOBAL.gtid_executed"
    };
    let gtid: Option<String> = match conn.query_first::<Option<String>, _>(gtid_sql).await {
        Ok(v) => v.flatten(),
        Err(_) => None,
    };
    binlog["gtid_set"] = json!(gtid.unwrap_or_default());
    let replica = match show(
        conn,
        if mariadb {
            "SHOW SLAVE STATUS"
        } else {
            "SHOW REPLICA STATUS"
        },
    )
    .await
    {
        Ok(None) => json!({"is_replica": false}),
        Ok(Some(r)) => json!({
            "is_replica": true,
            "primary_host": field(&r, &["Master_Host", "Source_Host"]),
            "primary_port": field(&r, &["Master_Port", "Source_Port"]),
            "primary_log_file": field(&r, &["Relay_Master_Log_File", "Relay_Source_Log_File"]),
            "primary_log_position": field(&r, &["Exec_Master_Log_Pos", "Exec_Source_Log_Pos"]).and_then(|p| p.parse::<u64>().ok()),
            "gtid_io_pos": field(&r, &["Gtid_IO_Pos", "Retrieved_Gtid_Set"]),
            "sql_running": field(&r, &["Slave_SQL_Running", "Replica_SQL_Running"]),
            "seconds_behind": field(&r, &["Seconds_Behind_Master", "Seconds_Behind_Source"]),
        }),
        Err(e) => {
            json!({"is_replica": null, "note": format!("could not read replica status: {}", conn::explain(&e))})
        }
    };
    json!({"binlog": binlog, "replica": replica})
}

fn header(server: &str, version: &str) -> String {
    format!(
        "-- {} SQL dump of {server} (server {version})\n\
-- Restore with `cexdr restore ID --to mysql://…` or the stock client: `zstd -dc < dump.sql.zst | mariadb` (`gunzip` for dump.sql.gz).\n\
{MARKER}header {{\"format\":1}}\n\
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;\n\
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;\n\
SET NAMES utf8mb4;\n\
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n\
/*!40103 SET TIME_ZONE='+00:00' */;\n\
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n\
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n\
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n\
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;\n",
        crate::backup::catalog::TOOL_VERSION
    )
}

fn footer() -> String {
    format!(
        "\n{END_MARKER}\n\
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n\
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n\
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;\n\
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;\n\
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;\n\
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;\n\
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;\n\
-- Dump completed on {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// The items' channels read in order: one SQL script.
fn ordered(shared: Arc<Shared>, receivers: Vec<mpsc::Receiver<Bytes>>) -> ByteStream {
    let queue: VecDeque<(usize, mpsc::Receiver<Bytes>)> =
        receivers.into_iter().enumerate().collect();
    let s = futures::stream::unfold(
        (shared, queue, false),
        |(shared, mut queue, ended)| async move {
            if ended {
                return None;
            }
            let fail = |shared: &Shared| {
                let msg = shared
                    .error
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map(|e| one_line(e))
                    .unwrap_or_else(|| "a dump worker stopped".into());
                Error::source_err("mysql dump", msg).into_io()
            };
            loop {
                let (i, rx) = queue.front_mut()?;
                let i = *i;
                tokio::select! {
                    biased;
                    c = rx.recv() => match c {
                        Some(b) => return Some((Ok(b), (shared, queue, false))),
                        None if shared.is_done(i) => {
                        queue.pop_front();
                        shared.window.add_permits(1);
                    }
                        None => { let e = fail(&shared); return Some((Err(e), (shared, queue, true))); }
                    },
                    _ = shared.failed.cancelled() => {
                        let e = fail(&shared);
                        return Some((Err(e), (shared, queue, true)));
                    }
                }
            }
        },
    );
    Box::pin(s)
}

#[async_trait]
impl Source for MysqlSource {
    async fn open(&self) -> Result<Opened> {
        let spec = &self.spec;
        if let Some(p) = &spec.physical {
            let server = physical::ServerSpec {
                url: &spec.url,
                password: &spec.password,
                tls: spec.tls.as_ref(),
                threads: spec.threads,
            };
            return physical::open(&self.job, &server, p).await;
        }
        let server = Server::new(&spec.url, &spec.password, spec.tls.as_ref())?;
        let what = server.describe();
        let mut ctl = server.connect().await?;
        let info = ServerInfo::read(&mut ctl).await?;
        let dbs = databases(&mut ctl, spec, &what).await?;
        let tables = dump::tables(&mut ctl, &dbs, &spec.exclude_tables).await?;
        let objs = dump::list_objects(&mut ctl, &dbs, &spec.exclude_tables).await?;
        let warnings = table_warnings(&tables, spec.consistency);
        let items = plan_items(&mut ctl, &what, &info.version, &dbs, &tables, &objs).await?;
        let n = spec.threads.clamp(1, items.len());

        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            workers.push(server.connect().await?);
        }
        let snap = Snapshot::take(&mut ctl, &mut workers, spec.consistency, &info).await?;

        let table_count = tables.len();
        let mut objects = objs.counts();
        objects["tables"] = json!(table_count);
        let (shared, receivers) = Shared::new(items, tables, objs, n + 1);
        let handles: Vec<_> = workers
            .into_iter()
            .map(|c| tokio::spawn(dump::worker(shared.clone(), c)))
            .collect();
        let stream = ordered(shared.clone(), receivers);
        let finish = finish(self.job.clone(), handles, ctl, snap.hold, shared, warnings).boxed();
        let details = details(&what, &info, &dbs, spec.consistency, &snap, n, objects);
        tracing::info!(job = %self.job, server = %details["server"]["url"], threads = n, lock_ms = snap.lock_ms, "mysql snapshot taken");
        Ok(Opened {
            extracts: vec![super::Extract {
                name: "dump.sql".into(),
                stream,
                finish,
            }],
            details,
            parts: None,
        })
    }
}

/// What the server says about itself.
struct ServerInfo {
    version: String,
    comment: String,
    log_bin: bool,
    mariadb: bool,
}

impl ServerInfo {
    async fn read(ctl: &mut Conn) -> Result<ServerInfo> {
        let info = rows(
            ctl,
            "reading the server version",
            "SELECT @@version, @@version_comment, @@log_bin",
        )
        .await?;
        let info = info.into_iter().next().unwrap_or_default();
        let version = info.first().cloned().flatten().unwrap_or_default();
        let comment = info.get(1).cloned().flatten().unwrap_or_default();
        let log_bin = info.get(2).cloned().flatten().as_deref() == Some("1");
        let mariadb = version.to_ascii_lowercase().contains("mariadb")
            || comment.to_ascii_lowercase().contains("mariadb");
        Ok(ServerInfo {
            version,
            comment,
            log_bin,
            mariadb,
        })
    }
}

/// The databases to back up: the job's (each must exist), or every one but
/// the system databases.
async fn databases(ctl: &mut Conn, spec: &MysqlSpec, what: &str) -> Result<Vec<String>> {
    let all: Vec<String> = rows(
        ctl,
        "listing databases",
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    let dbs: Vec<String> = if spec.databases.is_empty() {
        all.iter()
            .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
            .cloned()
            .collect()
    } else {
        for d in &spec.databases {
            if !all.contains(d) {
                return Err(Error::source_err(
                    what,
                    format!("database {d:?} does not exist (or this user has no privilege on it)"),
                ));
            }
        }
        spec.databases.clone()
    };
    if dbs.is_empty() {
        return Err(Error::source_err(what, "there is no database to back up"));
    }
    Ok(dbs)
}

/// Tables whose rows are not dumped, or not at the snapshot.
fn table_warnings(tables: &[dump::Table], consistency: Consistency) -> Vec<String> {
    let mut warnings = Vec::new();
    for t in tables.iter().filter(|t| !t.has_data()) {
        warnings.push(format!(
            "table {} (engine {}): its rows live elsewhere, so only its definition is dumped (as mysqldump does)",
            t.key(),
            t.engine
        ));
    }
    if consistency == Consistency::Snapshot {
        for t in tables.iter().filter(|t| t.has_data() && !t.transactional) {
            warnings.push(format!(
                "table {} (engine {}) is not transactional: in snapshot mode its rows are read when it is dumped, not at the snapshot; use consistency = \"lock\" for a consistent copy",
                t.key(),
                t.engine
            ));
        }
    }
    warnings
}

/// The dump's items in script order: header, schemas, data, routines,
/// views, triggers and events, footer.
async fn plan_items(
    ctl: &mut Conn,
    what: &str,
    version: &str,
    dbs: &[String],
    tables: &[dump::Table],
    objs: &dump::Objects,
) -> Result<Vec<Item>> {
    let mut items = vec![Item::Text(Bytes::from(header(what, version)))];
    items.extend(dbs.iter().map(|d| Item::Schema { db: d.clone() }));
    items.extend(dump::plan_data(ctl, tables).await?);
    for d in dbs {
        if objs.routines.iter().any(|r| &r.db == d) {
            items.push(Item::Routines { db: d.clone() });
        }
    }
    if !objs.views.is_empty() {
        items.push(Item::Views);
    }
    for d in dbs {
        if objs.triggers.iter().any(|r| &r.db == d) {
            items.push(Item::Triggers { db: d.clone() });
        }
        if objs.events.iter().any(|r| &r.db == d) {
            items.push(Item::Events { db: d.clone() });
        }
    }
    items.push(Item::Text(Bytes::from(footer())));
    Ok(items)
}

/// The dump's point in time, as taken.
struct Snapshot {
    /// The statement that blocked commits.
    method: &'static str,
    coords: serde_json::Value,
    /// Lock mode: the lock is held until the dump ends.
    hold: bool,
    lock_ms: u64,
}

impl Snapshot {
    /// One point in time for every worker: block commits, open a snapshot
    /// on each connection, read the coordinates, release.
    async fn take(
        ctl: &mut Conn,
        workers: &mut [Conn],
        consistency: Consistency,
        info: &ServerInfo,
    ) -> Result<Snapshot> {
        exec(
            ctl,
            "setting the lock wait timeout",
            "SET SESSION lock_wait_timeout = 60",
        )
        .await?;
        let t_lock = Instant::now();
        let method = if consistency == Consistency::Lock || !info.mariadb {
            exec(
                ctl,
                "taking the global read lock (FLUSH TABLES WITH READ LOCK)",
                "FLUSH TABLES WITH READ LOCK",
            )
            .await?;
            "FLUSH TABLES WITH READ LOCK"
        } else {
            exec(
                ctl,
                "starting the backup stage (BACKUP STAGE START)",
                "BACKUP STAGE START",
            )
            .await?;
            exec(
                ctl,
                "blocking commits (BACKUP STAGE BLOCK_COMMIT)",
                "BACKUP STAGE BLOCK_COMMIT",
            )
            .await?;
            "BACKUP STAGE BLOCK_COMMIT"
        };
        for w in workers.iter_mut() {
            exec(
                w,
                "setting REPEATABLE READ",
                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            )
            .await?;
            exec(
                w,
                "starting the consistent snapshot",
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            )
            .await?;
        }
        let coords = coordinates(ctl, info.mariadb, info.log_bin).await;
        let hold = consistency == Consistency::Lock;
        if !hold {
            let release = if method.starts_with("BACKUP") {
                "BACKUP STAGE END"
            } else {
                "UNLOCK TABLES"
            };
            exec(ctl, "releasing the lock", release).await?;
        }
        let lock_ms = t_lock.elapsed().as_millis() as u64;
        Ok(Snapshot {
            method,
            coords,
            hold,
            lock_ms,
        })
    }
}

/// Resolves once the dump has been read: ends the workers' transactions
/// and the lock, then reports the tables' counts (or the first error).
async fn finish(
    job: String,
    handles: Vec<tokio::task::JoinHandle<Result<Conn>>>,
    mut ctl: Conn,
    hold: bool,
    shared: Arc<Shared>,
    warnings: Vec<String>,
) -> Result<Report> {
    let mut join_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(mut c)) => {
                let _ = c.query_drop("COMMIT").await;
                let _ = c.disconnect().await;
            }
            Ok(Err(e)) => join_err = Some(e),
            Err(e) => join_err = Some(Error::source_from(format!("job {job}"), e)),
        }
    }
    if hold {
        let _ = ctl.query_drop("UNLOCK TABLES").await;
    }
    let _ = ctl.disconnect().await;
    if let Some(e) = shared.take_error().or(join_err) {
        return Err(e);
    }
    if shared.abandoned.load(std::sync::atomic::Ordering::SeqCst) {
        // The store side failed; its error is the one to report.
        return Ok(Report::default());
    }
    let tables = shared.table_stats();
    let total: u64 = tables
        .values()
        .flat_map(|t| t.values())
        .filter_map(|v| v["rows"].as_u64())
        .sum();
    let definitions = shared.defs.lock().unwrap().clone();
    for w in &warnings {
        tracing::warn!(job = %job, "{w}");
    }
    Ok(Report {
        details: json!({"tables": tables, "rows_total": total, "definitions": definitions}),
        warnings,
    })
}

/// The backup's details: the server, what was dumped and how.
fn details(
    what: &str,
    info: &ServerInfo,
    dbs: &[String],
    consistency: Consistency,
    snap: &Snapshot,
    n: usize,
    objects: serde_json::Value,
) -> serde_json::Value {
    let (method, hold) = (snap.method, snap.hold);
    json!({
        "server": {"url": what, "version": info.version, "flavour": if info.mariadb {"MariaDB"} else {"MySQL"}, "comment": info.comment},
        "databases": dbs,
        "consistency": {
            "mode": match consistency { Consistency::Snapshot => "snapshot", Consistency::Lock => "lock" },
            "method": format!("{method}, then START TRANSACTION WITH CONSISTENT SNAPSHOT on {n} connection(s)"),
            "lock_held_ms": if hold { serde_json::Value::Null } else { json!(snap.lock_ms) },
        },
        "binlog": snap.coords["binlog"],
        "replica": snap.coords["replica"],
        "threads": n,
        "objects": objects,
        "definitions_note": "per database, `KIND name`: a 64-bit fingerprint of the object's creation context (character_set_client, collation_connection, database collation, sql_mode, time zone) and SHOW CREATE bytes (for a sequence also its position); `verify --restore-test` recomputes it",
        "digest": "per table: wrapping sum of a 64-bit hash of each dumped row's SQL tuple; `verify --restore-test` recomputes it",
    })
}

/// Content check for `cexdr verify`: the dump starts with the cexdr header,
/// has every section marker well formed and ends with the end marker (a
/// truncated dump does not).
pub async fn validate(mut stream: ByteStream) -> Result<(u64, Vec<String>)> {
    let mut n = 0u64;
    let mut head = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut markers = 0u64;
    let needle = format!("\n{MARKER}");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let w = needle.len() - 1;
    while let Some(c) = stream.next().await {
        let c = c.map_err(|e| Error::io("reading the dump", e))?;
        n += c.len() as u64;
        if head.len() < 4096 {
            head.extend_from_slice(&c[..c.len().min(4096 - head.len())]);
        }
        // Markers across the seam with the previous chunk, then inside it.
        let mut seam = tail[tail.len().saturating_sub(w)..].to_vec();
        seam.extend_from_slice(&c[..c.len().min(w)]);
        markers += finder.find_iter(&seam).count() as u64;
        markers += finder.find_iter(&c).count() as u64;
        tail.extend_from_slice(&c[c.len().saturating_sub(8192)..]);
        if tail.len() > 8192 {
            tail.drain(..tail.len() - 8192);
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("-- cexdr ") || !head.contains(&format!("{MARKER}header")) {
        return Err(Error::source_err(
            "mysql dump",
            "the dump does not start with the cexdr header",
        ));
    }
    let tail = String::from_utf8_lossy(&tail);
    if !tail.contains(&format!("\n{END_MARKER}\n")) || !tail.contains("-- Dump completed on ") {
        return Err(Error::source_err(
            "mysql dump",
            "the dump has no end marker: it is truncated",
        ));
    }
    Ok((
        n,
        vec![format!(
            "SQL dump complete: header, {markers} section markers, end marker"
        )],
    ))
}

#[doc(hidden)]
pub fn quote_ident(s: &str) -> String {
    ident(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str, size: usize) -> ByteStream {
        let v: Vec<std::io::Result<Bytes>> = text
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(v))
    }

    #[tokio::test]
    async fn validate_counts_markers_across_chunks_and_spots_truncation() {
        let mut text = header("mysql://root@db:3306", "10.11");
        text.push_str("\n-- cexdr:schema {\"db\":\"a\"}\nCREATE DATABASE x;\n\n-- cexdr:data {}\nINSERT INTO t VALUES (1);\n");
        text.push_str(&footer());
        for size in [1, 5, 9, 64, 100_000] {
            let (n, checks) = validate(chunks(&text, size)).await.unwrap();
            assert_eq!(n, text.len() as u64);
            assert_eq!(
                checks,
                ["SQL dump complete: header, 4 section markers, end marker"],
                "chunk {size}"
            );
        }
        let cut = &text[..text.find(END_MARKER).unwrap()];
        assert!(validate(chunks(cut, 7)).await.is_err());
        assert!(validate(chunks("SELECT 1;\n", 7)).await.is_err());
    }
}
