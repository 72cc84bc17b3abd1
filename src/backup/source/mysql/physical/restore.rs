//! `cexdr restore ID --to-datadir DIR`: a physical backup back into a
//! datadir a server can start on. Phases: `plan` (the backup, the tools,
//! DIR, every part present) → `extract` (parts fetched, decrypted and
//! decompressed ahead, checked, into `mbstream -x` in a staging folder
//! beside DIR) → `prepare` (`mariadb-backup --prepare`) → `place` (the
//! staging folder renamed to DIR, owner set). Until `place`, DIR is not
//! touched: a damaged part, a failed tool or a full disk leave it as it
//! was and remove the staging folder.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{is_physical, locate, major_minor, spawn_tool, tool_version, xbstream, Tool};
use crate::backup::catalog::{Artifact, Catalog, Manifest};
use crate::backup::source::artifact::Reading;
use crate::error::{one_line, Error, Result};

/// How `--to-datadir` restores.
#[derive(Debug, Clone, Default)]
pub struct DatadirOptions {
    /// Replace a non-empty DIR (it is moved aside, then removed once the
    /// new datadir is in place).
    pub force: bool,
    /// The owner of the files (default: `mysql` when run as root and that
    /// user exists; otherwise the files stay the caller's).
    pub owner: Option<String>,
    /// `mbstream --parallel` (default: cores).
    pub threads: Option<usize>,
}

/// Parts decompressed ahead of the one being extracted.
const PREFETCH: usize = 2;

struct Plan {
    /// The backups applied in order: the full, then each incremental up to
    /// the one asked for.
    chain: Vec<Manifest>,
    mbstream: PathBuf,
    backup_tool: PathBuf,
    dir: PathBuf,
    staging: PathBuf,
    replace: bool,
}

pub async fn restore_datadir(
    catalog: &Catalog,
    m: &Manifest,
    dir: &Path,
    o: &DatadirOptions,
) -> Result<String> {
    let task = progress_of(catalog, m).await;
    let msg = stage(catalog, m, dir, o).await?.finish(None)?;
    task.done();
    Ok(msg)
}

/// The progress line of a restore into a datadir: the stored bytes of the
/// backup's whole chain (Reading counts them as they are fetched).
pub async fn progress_of(catalog: &Catalog, m: &Manifest) -> crate::base::progress::Task {
    use crate::base::progress::{begin, Total, Unit};
    let mut total = m.stored_bytes;
    for id in m.depends_on() {
        if let Ok(e) = catalog.find(&id).await {
            total += e.manifest.stored_bytes;
        }
    }
    begin(
        catalog.progress(),
        &format!("restore {}", m.id),
        Total::Exact(total),
        Unit::Bytes,
    )
}

/// A prepared copy in the staging folder beside DIR, not yet placed: what
/// needs a server on the copy before it becomes DIR (a point-in-time
/// replay) runs on `path()`. Dropped unfinished, the copy is removed and
/// DIR stays as it was.
pub struct Staged {
    plan: Plan,
    options: DatadirOptions,
    files: usize,
    t0: std::time::Instant,
    placed: bool,
}

/// Plans, fetches, extracts and prepares the chain of `m` into the staging
/// folder beside `dir`; `dir` is not touched.
pub async fn stage(
    catalog: &Catalog,
    m: &Manifest,
    dir: &Path,
    o: &DatadirOptions,
) -> Result<Staged> {
    let t0 = std::time::Instant::now();
    let plan = plan(catalog, m, dir, o).await?;
    std::fs::create_dir(&plan.staging)
        .map_err(|e| Error::restore_failed(format!("creating {}", plan.staging.display()), e))?;
    let mut staged = Staged {
        plan,
        options: o.clone(),
        files: 0,
        t0,
        placed: false,
    };
    match staged.apply_chain(catalog).await {
        Ok(files) => {
            staged.files = files;
            Ok(staged)
        }
        Err(e) => Err(staged.failed(e)),
    }
}

impl Staged {
    /// The prepared copy.
    pub fn path(&self) -> &Path {
        &self.plan.staging
    }

    /// The backup restored (the last of its chain).
    fn backup(&self) -> &Manifest {
        self.plan.chain.last().expect("a chain has its backup")
    }

    /// The full, then each incremental: extracted, prepared, applied.
    async fn apply_chain(&self, catalog: &Catalog) -> Result<usize> {
        let (plan, o) = (&self.plan, &self.options);
        let increment = self.increment();
        let mut files = 0;
        for (i, link) in plan.chain.iter().enumerate() {
            if i == 0 {
                files = extract(catalog, link, &plan.staging, plan, o).await?;
                prepare(plan, None).await?;
                continue;
            }
            // Each incremental is extracted beside the copy, applied to
            // it, then removed: only one is on disk at a time.
            std::fs::create_dir(&increment).map_err(|e| {
                Error::restore_failed(format!("creating {}", increment.display()), e)
            })?;
            extract(catalog, link, &increment, plan, o).await?;
            prepare(plan, Some(&increment)).await?;
            std::fs::remove_dir_all(&increment).map_err(|e| {
                Error::restore_failed(format!("removing {}", increment.display()), e)
            })?;
        }
        Ok(files)
    }

    fn increment(&self) -> PathBuf {
        self.plan.staging.with_extension("incremental")
    }

    /// The error of a failed step, saying DIR is as it was; the partial
    /// copy goes when `self` drops.
    pub fn failed(self, e: Error) -> Error {
        Error::restore_failed(
            format!(
                "restoring {} into {} ({} left as it was; the partial copy was removed)",
                self.backup().id,
                self.plan.dir.display(),
                self.plan.dir.display()
            ),
            e,
        )
    }

    /// Places the copy at DIR (owner set) and says what was restored.
    /// `replayed_to`: the GTID position a replay on the copy reached.
    pub fn finish(mut self, replayed_to: Option<&str>) -> Result<String> {
        let owner = place(&self.plan, self.backup(), &self.options)?;
        self.placed = true;
        let (plan, m) = (&self.plan, self.backup());
        let applied = match plan.chain.len() {
            1 => String::new(),
            n => format!(
                ", full backup {} and {} incremental(s) applied",
                plan.chain[0].id,
                n - 1
            ),
        };
        let mut msg = format!(
            "restored physical backup {} ({} files{applied}, LSN {}) into {} in {:.1} s{}\nstart a server on it: mariadbd --datadir={}{}",
            m.id,
            self.files,
            m.details["lsn"]["to"],
            plan.dir.display(),
            self.t0.elapsed().as_secs_f64(),
            owner.as_ref().map(|u| format!(", owned by {u}")).unwrap_or_default(),
            plan.dir.display(),
            if owner.is_some() || is_root() { " --user=mysql" } else { "" },
        );
        if let Some(cnf) = backup_settings(&plan.dir) {
            msg.push_str(&format!(
                "\nthe copy was taken with (backup-my.cnf): {cnf}; start the server with the same innodb_page_size and data file layout"
            ));
        }
        let gtid = m.details["binlog"]["gtid_set"].as_str().unwrap_or("");
        match replayed_to {
            Some(g) => msg.push_str(&format!(
                "\nthe archive was replayed onto it up to GTID {g}; its gtid_slave_pos is {g}: replication from a server that has those transactions continues from there"
            )),
            None if !gtid.is_empty() => msg.push_str(&format!(
                "\nits consistent point is GTID {gtid}: to replicate from the old primary's binlog or replay the archive, SET GLOBAL gtid_slave_pos = '{gtid}' first"
            )),
            None => {}
        }
        Ok(msg)
    }
}

/// The InnoDB settings mariadb-backup recorded in `backup-my.cnf`, which a
/// server started on the copy must match.
fn backup_settings(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("backup-my.cnf")).ok()?;
    let kv: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("innodb_"))
        .collect();
    (!kv.is_empty()).then(|| kv.join(", "))
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_dir_all(&self.plan.staging);
            let _ = std::fs::remove_dir_all(self.increment());
        }
    }
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Everything checked before the first byte is written.
async fn plan(catalog: &Catalog, m: &Manifest, dir: &Path, o: &DatadirOptions) -> Result<Plan> {
    if !is_physical(m) {
        return Err(Error::Usage(format!(
            "--to-datadir restores physical backups; backup {} is a {} {} backup (use --to)",
            m.id,
            if m.kind == "mysql" { "logical" } else { "" },
            m.kind
        )));
    }
    let need = |name: &str| {
        locate(Path::new(name)).ok_or_else(|| {
            Error::RestoreRefused(format!(
                "{name} not found on PATH (install Debian's mariadb-backup, the version of the backup's server)"
            ))
        })
    };
    let mbstream = need("mbstream")?;
    let backup_tool = need("mariadb-backup")?;
    let chain = super::chain(catalog, m)
        .await
        .map_err(|e| Error::RestoreRefused(one_line(&e)))?;
    check_versions(&chain, &backup_tool).await?;
    let (dir, replace) = check_dir(dir, o)?;
    check_parts(catalog, &chain).await?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "datadir".into());
    let staging = dir.with_file_name(format!(".{name}.cexdr-partial-{}", m.id));
    if staging.exists() {
        // Left by a restore of the same backup that was killed.
        std::fs::remove_dir_all(&staging).map_err(|e| {
            Error::restore_failed(format!("removing the old {}", staging.display()), e)
        })?;
    }
    Ok(Plan {
        chain,
        mbstream,
        backup_tool,
        dir,
        staging,
        replace,
    })
}

/// `--prepare` needs the major version of every backup's server.
async fn check_versions(chain: &[Manifest], backup_tool: &Path) -> Result<()> {
    let tool = tool_version(backup_tool).await?;
    for link in chain {
        let server = link.details["server"]["version"].as_str().unwrap_or("");
        if major_minor(&tool) != major_minor(server) {
            return Err(Error::RestoreRefused(format!(
                "backup {} is of MariaDB {server}; {} is {tool}: --prepare needs the backup's major version",
                link.id,
                backup_tool.display()
            )));
        }
    }
    Ok(())
}

/// DIR as an absolute path in an existing folder, and whether it is
/// replaced (not empty, `--force`).
fn check_dir(dir: &Path, o: &DatadirOptions) -> Result<(PathBuf, bool)> {
    let refuse = |msg: String| Error::RestoreRefused(msg);
    let dir = std::path::absolute(dir)
        .map_err(|e| Error::restore_failed(format!("resolving {}", dir.display()), e))?;
    if !dir.parent().is_some_and(|p| p.is_dir()) {
        return Err(refuse(format!(
            "the folder of {} does not exist",
            dir.display()
        )));
    }
    let replace = match std::fs::read_dir(&dir).map(|mut rd| rd.next().is_some()) {
        Ok(true) if !o.force => {
            return Err(refuse(format!(
                "{} is not empty; pass --force to replace it",
                dir.display()
            )))
        }
        Ok(full) => full,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(Error::restore_failed(
                format!("reading {}", dir.display()),
                e,
            ))
        }
    };
    Ok((dir, replace))
}

/// Every part of every backup of the chain present at its recorded size.
async fn check_parts(catalog: &Catalog, chain: &[Manifest]) -> Result<()> {
    let refuse = |msg: String| Error::RestoreRefused(msg);
    let all: Vec<(&Manifest, &Artifact)> = chain
        .iter()
        .flat_map(|l| parts(l).into_iter().map(move |a| (l, a)))
        .collect();
    for (m, a) in all {
        let head = catalog.store().head(&a.key).await.map_err(|e| {
            refuse(format!(
                "part {} of backup {}: {}",
                a.key,
                m.id,
                one_line(&e)
            ))
        })?;
        let size = head.map(|h| h.size).ok_or_else(|| {
            refuse(format!(
                "part {} of backup {} is missing from the store",
                a.key, m.id
            ))
        })?;
        if size != a.stored_bytes {
            return Err(refuse(format!(
                "part {} has {} bytes, the manifest says {}; the stored object is damaged",
                a.key, size, a.stored_bytes
            )));
        }
    }
    Ok(())
}

/// A backup's parts in stream order.
fn parts(m: &Manifest) -> Vec<&Artifact> {
    let mut parts: Vec<&Artifact> = m.artifacts.iter().collect();
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    parts
}

/// One part read, decrypted and decompressed in its own task into a
/// bounded channel; its SHA-256 is checked at its end.
async fn start_part(
    catalog: &Catalog,
    m: &Manifest,
    a: &Artifact,
) -> Result<mpsc::Receiver<Result<Bytes>>> {
    let mut reading = Reading::open(catalog, m, a).await?;
    let (tx, rx) = mpsc::channel(16);
    let key = a.key.clone();
    tokio::spawn(async move {
        while let Some(c) = reading.stream.next().await {
            let c = c.map_err(|e| Error::io(format!("reading {key}"), e));
            let stop = c.is_err();
            if tx.send(c).await.is_err() || stop {
                return;
            }
        }
        if let Err(e) = reading.check() {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(rx)
}

/// The parts of `m`, in order, through a parser (CRC-32s, the file list)
/// into `mbstream -x` in `into`. Returns the number of files.
async fn extract(
    catalog: &Catalog,
    m: &Manifest,
    into: &Path,
    plan: &Plan,
    o: &DatadirOptions,
) -> Result<usize> {
    let parts = parts(m);
    let threads = o.threads.unwrap_or_else(crate::base::parallelism).max(1);
    let mut cmd = tokio::process::Command::new(&plan.mbstream);
    cmd.arg("-x")
        .arg(format!("--parallel={threads}"))
        .arg("-C")
        .arg(into)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let Tool {
        mut child,
        tail,
        tail_task,
    } = spawn_tool(cmd, &plan.mbstream, "mbstream")?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut parser = xbstream::Parser::default();
    let fed: Result<()> = async {
        let mut ahead = VecDeque::new();
        let mut next = 0;
        loop {
            while ahead.len() < PREFETCH && next < parts.len() {
                ahead.push_back(start_part(catalog, m, parts[next]).await?);
                next += 1;
            }
            let Some(mut rx) = ahead.pop_front() else {
                break;
            };
            while let Some(c) = rx.recv().await {
                let c = c?;
                parser
                    .feed(&c)
                    .map_err(|e| Error::RestoreRefused(format!("backup {}: {e}", m.id)))?;
                stdin
                    .write_all(&c)
                    .await
                    .map_err(|e| Error::io("writing to mbstream", e))?;
            }
        }
        parser
            .finish()
            .map_err(|e| Error::RestoreRefused(format!("backup {}: {e}", m.id)))?;
        Ok(())
    }
    .await;
    drop(stdin);
    if fed.is_err() {
        let _ = child.start_kill();
    }
    let status = child
        .wait()
        .await
        .map_err(|e| Error::io("waiting for mbstream", e))?;
    let _ = tail_task.await;
    // A full disk shows as mbstream's failure (or its closed pipe): its
    // own words name the cause.
    match fed {
        Err(e) if !status.success() && one_line(&e).contains("writing to mbstream") => {
            return Err(Error::restore_failed(
                format!("mbstream -x into {}", into.display()),
                format!("{status}: {}", tail.text()),
            ))
        }
        Err(e) => return Err(e),
        Ok(()) if !status.success() => {
            return Err(Error::restore_failed(
                format!("mbstream -x into {}", into.display()),
                format!("{status}: {}", tail.text()),
            ))
        }
        Ok(()) => {}
    }
    check_files(m, &parser)?;
    Ok(parser.files.len())
}

/// The files that arrived are the files the backup recorded, with their
/// sizes.
fn check_files(m: &Manifest, parser: &xbstream::Parser) -> Result<()> {
    let Some(list) = m.details["datadir_files"].as_array() else {
        return Ok(());
    };
    if list.len() != parser.files.len() {
        return Err(Error::RestoreRefused(format!(
            "backup {}: {} files arrived, the manifest lists {}",
            m.id,
            parser.files.len(),
            list.len()
        )));
    }
    for f in list {
        let (path, size) = (f[0].as_str().unwrap_or(""), f[1].as_u64().unwrap_or(0));
        if parser.files.get(path) != Some(&size) {
            return Err(Error::RestoreRefused(format!(
                "backup {}: file {path:?} arrived as {:?} bytes, the manifest says {size}",
                m.id,
                parser.files.get(path)
            )));
        }
    }
    Ok(())
}

/// `mariadb-backup --prepare`: applies the redo log so that the copy is
/// consistent at the backup's point; with `incremental`, applies that
/// incremental's changed pages to the prepared copy.
async fn prepare(plan: &Plan, incremental: Option<&Path>) -> Result<()> {
    let mut cmd = tokio::process::Command::new(&plan.backup_tool);
    cmd.arg("--prepare")
        .arg(format!("--target-dir={}", plan.staging.display()));
    if let Some(dir) = incremental {
        cmd.arg(format!("--incremental-dir={}", dir.display()));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let Tool {
        mut child,
        tail,
        tail_task,
    } = spawn_tool(cmd, &plan.backup_tool, "mariadb-backup")?;
    let status = child
        .wait()
        .await
        .map_err(|e| Error::io("waiting for mariadb-backup --prepare", e))?;
    let _ = tail_task.await;
    if !status.success() {
        return Err(Error::restore_failed(
            "mariadb-backup --prepare",
            format!("{status}: {}", tail.text()),
        ));
    }
    Ok(())
}

/// The staging folder becomes DIR; the owner is set. Returns the owner set.
fn place(plan: &Plan, m: &Manifest, o: &DatadirOptions) -> Result<Option<String>> {
    let io = |what: String| move |e| Error::restore_failed(what, e);
    let owner = match &o.owner {
        Some(u) => Some(u.clone()),
        None if is_root() && user_exists("mysql") => Some("mysql".into()),
        None => None,
    };
    if let Some(u) = &owner {
        let st = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{u}:"))
            .arg(&plan.staging)
            .status()
            .map_err(io(format!("running chown -R {u}:")))?;
        if !st.success() {
            let _ = std::fs::remove_dir_all(&plan.staging);
            return Err(Error::restore_failed(
                format!("chown -R {u}: {}", plan.staging.display()),
                format!("{st}"),
            ));
        }
    }
    let aside = plan.dir.with_file_name(format!(
        ".{}.cexdr-old-{}",
        plan.dir.file_name().unwrap_or_default().to_string_lossy(),
        m.id
    ));
    if plan.replace {
        std::fs::rename(&plan.dir, &aside)
            .map_err(io(format!("moving {} aside", plan.dir.display())))?;
    } else if plan.dir.exists() {
        std::fs::remove_dir(&plan.dir)
            .map_err(io(format!("replacing the empty {}", plan.dir.display())))?;
    }
    std::fs::rename(&plan.staging, &plan.dir).map_err(io(format!(
        "renaming {} to {}",
        plan.staging.display(),
        plan.dir.display()
    )))?;
    if plan.replace {
        std::fs::remove_dir_all(&aside).map_err(io(format!(
            "removing the replaced datadir, moved to {}",
            aside.display()
        )))?;
    }
    Ok(owner)
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}
