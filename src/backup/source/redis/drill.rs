//! Getting a redis backup back: the RDB file(s) for an operator to put in
//! place, and restore drills that load them into a scratch redis-server.
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::conn::{Addr, Conn};
use super::rdb;
use crate::backup::catalog::{Artifact, Catalog, Manifest, Status, Verification, TOOL_VERSION};
use crate::backup::source::artifact::{Reading, RestoreOptions};
use crate::error::{Error, Result};

/// Removes a file or directory when dropped, unless disarmed.
struct Cleanup(Option<PathBuf>);

impl Cleanup {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

fn temp_beside(target: &Path) -> PathBuf {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dump.rdb".into());
    parent.join(format!(
        ".{name}.cexdr-restore-{:08x}",
        rand::random::<u32>()
    ))
}

/// Writes one artifact's RDB to `path` (a new file), checking the stored
/// object's SHA-256 and the RDB's own CRC-64 on the way.
async fn write_rdb(
    catalog: &Catalog,
    m: &Manifest,
    a: &Artifact,
    path: &Path,
) -> Result<rdb::Summary> {
    let mut reading = Reading::open(catalog, m, a).await?;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let mut checker = rdb::Checker::new();
    let mut rdb_err = None;
    let mut read_err = None;
    while let Some(chunk) = reading.stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                read_err = Some(Error::io(format!("reading {}", a.key), e));
                break;
            }
        };
        if rdb_err.is_none() {
            if let Err(m) = checker.feed(&chunk) {
                rdb_err = Some(m);
            }
        }
        // Keep reading after an RDB error: the SHA-256 says whether the
        // stored object or the snapshot itself is damaged.
        if rdb_err.is_none() {
            f.write_all(&chunk)
                .await
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
    }
    if let Some(e) = read_err {
        // A damaged object explains a decompression error: say that first.
        reading.check()?;
        return Err(e);
    }
    reading.check()?;
    if let Some(m) = rdb_err {
        return Err(Error::restore_failed(a.key.clone(), m));
    }
    let sum = checker
        .finish()
        .map_err(|m| Error::restore_failed(a.key.clone(), m))?;
    f.sync_all()
        .await
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
    Ok(sum)
}

fn is_cluster(m: &Manifest) -> bool {
    m.details["mode"] == "cluster" || m.artifacts.len() > 1
}

fn crc_words(s: &rdb::Summary) -> String {
    match s.crc64 {
        Some(c) => format!("CRC-64 {c:016x} ok"),
        None => "no CRC (rdbchecksum no)".into(),
    }
}

/// `cexdr restore ID --to FILE` (a directory of `shard-<id>.rdb` files for
/// a cluster backup). Nothing appears under a final name until every byte
/// matched the manifest's SHA-256 and the RDB's CRC.
pub async fn restore(
    catalog: &Catalog,
    m: &Manifest,
    to: &str,
    opts: &RestoreOptions,
) -> Result<String> {
    if !is_cluster(m) {
        let target = Path::new(to);
        let a = m
            .artifacts
            .first()
            .ok_or_else(|| Error::RestoreRefused(format!("backup {} has no artifact", m.id)))?;
        if target.is_dir() {
            return Err(Error::RestoreRefused(format!(
                "{to} is a directory; give the path of the RDB file to write (for example {}/dump.rdb)",
                to.trim_end_matches('/')
            )));
        }
        if target.exists() && !opts.force {
            return Err(Error::RestoreRefused(format!(
                "{to} exists; use --force to replace it"
            )));
        }
        let tmp = temp_beside(target);
        let mut guard = Cleanup(Some(tmp.clone()));
        let sum = write_rdb(catalog, m, a, &tmp).await?;
        std::fs::rename(&tmp, target)
            .map_err(|e| Error::io(format!("moving the RDB to {to}"), e))?;
        guard.disarm();
        return Ok(format!(
            "restored backup {} to {to}: {} bytes, RDB version {}, sha256 ok, {}.\nTo load it: stop redis, replace its dump.rdb (CONFIG GET dir / dbfilename) with this file, disable appendonly or remove the AOF, start redis.",
            m.id,
            sum.bytes,
            sum.version,
            crc_words(&sum)
        ));
    }

    let dir = Path::new(to);
    let non_empty = match std::fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(format!("restore target {to}"), e)),
    };
    if non_empty && !opts.force {
        return Err(Error::RestoreRefused(format!(
            "{to} exists and is not empty; use --force to restore into it"
        )));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {to}"), e))?;
    let mut done = Vec::new();
    for a in &m.artifacts {
        let target = dir.join(&a.name);
        let tmp = temp_beside(&target);
        let guard = Cleanup(Some(tmp.clone()));
        let sum = write_rdb(catalog, m, a, &tmp).await?;
        done.push((guard, tmp, target, a, sum));
    }
    // Every shard checked: only now do the files get their final names.
    let mut lines = Vec::new();
    for (mut guard, tmp, target, a, sum) in done {
        std::fs::rename(&tmp, &target)
            .map_err(|e| Error::io(format!("moving the RDB to {}", target.display()), e))?;
        guard.disarm();
        let slots = shard_slots(m, &a.name);
        lines.push(format!(
            "  {} ({} bytes, {}){}",
            target.display(),
            sum.bytes,
            crc_words(&sum),
            slots.map(|s| format!(" slots {s}")).unwrap_or_default()
        ));
    }
    Ok(format!(
        "restored backup {} ({} shards) into {to}, sha256 ok:\n{}\nTo load: for each master, stop it, replace its dump.rdb with its shard's file (same node id), start it.",
        m.id,
        m.artifacts.len(),
        lines.join("\n")
    ))
}

fn shard_slots(m: &Manifest, name: &str) -> Option<String> {
    m.details["shards"].as_array()?.iter().find_map(|s| {
        (s["name"] == name).then(|| {
            s["slots"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        })
    })
}

/// A scratch redis-server on a free loopback port; killed and its
/// directory removed when dropped.
struct Scratch {
    child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
    _master: std::net::TcpListener,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free loopback port", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("finding a free loopback port", e))?
        .port())
}

fn redis_server_bin() -> String {
    std::env::var("CEXDR_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

impl Scratch {
    /// Starts redis-server over `dir/dump.rdb`. It runs as a replica of a
    /// listener that never answers, so it loads keys whose TTL has passed
    /// (a master drops them on load) and the counts compare with the backup.
    async fn start(dir: PathBuf) -> Result<Scratch> {
        let master = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io("binding a loopback port", e))?;
        let mport = master
            .local_addr()
            .map_err(|e| Error::io("binding a loopback port", e))?
            .port();
        let port = free_port()?;
        let bin = redis_server_bin();
        let child = tokio::process::Command::new(&bin)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--dbfilename", "dump.rdb", "--logfile", "redis.log"])
            .args(["--replicaof", "127.0.0.1"])
            .arg(mport.to_string())
            .args(["--repl-timeout", "3600"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::restore_failed(
                    format!("cannot start {bin} for the restore test (install redis-server or set CEXDR_REDIS_SERVER)"),
                    e,
                )
            })?;
        Ok(Scratch {
            child,
            port,
            dir,
            _master: master,
        })
    }

    async fn wait_loaded(&mut self, limit: Duration) -> Result<Conn> {
        let t0 = Instant::now();
        let addr = Addr::parse(&format!("redis://127.0.0.1:{}", self.port)).expect("valid url");
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(Error::RestoreRefused(format!(
                    "the scratch redis-server exited ({st}) while loading the RDB: {}",
                    log_tail(&self.dir.join("redis.log"))
                )));
            }
            if t0.elapsed() > limit {
                return Err(Error::RestoreRefused(format!(
                    "the scratch redis-server did not finish loading within {limit:?}"
                )));
            }
            if let Ok(mut c) = Conn::connect(&addr, None).await {
                if let Ok(info) = c.info("persistence").await {
                    if info.get("loading") == Some("0") {
                        return Ok(c);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `cexdr verify ID --restore-test`: loads each RDB into a scratch
/// redis-server and compares per-database key counts with the manifest.
pub async fn restore_test(
    catalog: &Catalog,
    m: &Manifest,
    target: &crate::backup::source::ScratchTarget,
) -> Result<Verification> {
    if let Some(t) = &target.url {
        return Err(Error::Usage(format!(
            "--restore-test {t}: redis restore tests start their own scratch redis-server; pass no value"
        )));
    }
    let t0 = Instant::now();
    let mut checks = Vec::new();
    let mut loaded_all = Vec::new();
    for a in &m.artifacts {
        let dir =
            std::env::temp_dir().join(format!("cexdr-restore-test-{:08x}", rand::random::<u32>()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut guard = Cleanup(Some(dir.clone()));
        let sum = write_rdb(catalog, m, a, &dir.join("dump.rdb")).await?;
        checks.push(format!(
            "{}: sha256 {} matches; RDB version {}, {}",
            a.name,
            a.sha256,
            sum.version,
            crc_words(&sum)
        ));
        let mut server = Scratch::start(dir).await?;
        guard.disarm(); // the scratch server's guard owns the directory now
        let mut c = server.wait_loaded(Duration::from_secs(1800)).await?;
        let loaded = c.info("keyspace").await?.keyspace();
        let _ = c.send(&[&[b"SHUTDOWN", b"NOSAVE"]]).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), server.child.wait()).await;

        let expected = a.details["keyspace"].as_object().cloned().ok_or_else(|| {
            Error::RestoreRefused(format!(
                "{}: the manifest records no key counts to compare with",
                a.name
            ))
        })?;
        let keys = |v: Option<&Value>| v.and_then(|d| d["keys"].as_u64()).unwrap_or(0);
        let mut dbs: Vec<&String> = expected.keys().chain(loaded.keys()).collect();
        dbs.sort_by_key(|d| d[2..].parse::<u32>().unwrap_or(u32::MAX));
        dbs.dedup();
        let mut diffs = Vec::new();
        for db in &dbs {
            let (e, l) = (keys(expected.get(*db)), keys(loaded.get(*db)));
            if e != l {
                diffs.push(format!("{db}: {l} keys loaded, {e} recorded"));
            }
        }
        if !diffs.is_empty() {
            return Err(Error::RestoreRefused(format!(
                "{}: the scratch server loaded different key counts: {}",
                a.name,
                diffs.join("; ")
            )));
        }
        let total: u64 = dbs.iter().map(|d| keys(loaded.get(*d))).sum();
        checks.push(format!(
            "{}: loaded into a scratch redis-server: {} keys in {} database(s), per-database counts as recorded",
            a.name,
            total,
            dbs.len()
        ));
        loaded_all.push(json!({"name": a.name, "keyspace": loaded}));
    }
    Ok(Verification {
        backup_id: m.id.clone(),
        job: m.job.clone(),
        at: Utc::now(),
        status: Status::Ok,
        method: "restore-test".into(),
        tool_version: TOOL_VERSION.into(),
        host: crate::base::host_name(),
        checks,
        error: None,
        details: json!({"loaded": loaded_all, "seconds": t0.elapsed().as_secs_f64()}),
    })
}
