//! Physical backups of a MariaDB server (`method = "physical"`): Debian's
//! `mariadb-backup --backup --stream=xbstream` as a child process, its
//! stdout cut into parts between xbstream chunks (each part one object
//! through the pipeline: compression, encryption, SHA-256), its metadata
//! (LSNs, the binlog position and GTID of the consistent point, the file
//! list) read as the stream passes. `restore --to-datadir` (restore.rs)
//! rebuilds a ready datadir from the parts. See docs/physical.md.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use super::conn::{rows, Server};
use crate::backup::source::{Extract, Opened, Parts, Report};
use crate::base::mysql_tls::TlsSpec;
use crate::base::Secret;
use crate::error::{Error, Result};

pub mod drill;
pub mod restore;
pub mod server;
pub mod xbstream;

/// `physical = { program = "...", datadir = "...", part-size = "128MiB" }`
#[derive(Debug, Clone, PartialEq)]
pub struct PhysicalSpec {
    /// `mariadb-backup` (found on PATH) or a path to it.
    pub program: PathBuf,
    /// The server's datadir as seen from here (default: `@@datadir`).
    pub datadir: Option<PathBuf>,
    /// A part is closed at the first chunk boundary past this many bytes
    /// of xbstream.
    pub part_size: u64,
    /// Full, or incremental (`backup --incremental`, the incremental
    /// schedule): set per run, not a policy key.
    pub level: Level,
    /// `incremental = { schedule = "…" }` of the job (the daemon's).
    pub incremental_schedule: Option<String>,
}

/// What one run of a physical job takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Level {
    #[default]
    Full,
    /// Incremental from the job's newest physical backup, found when the
    /// run starts (under the job's lease).
    Incremental,
    /// Incremental from this base (what `Incremental` resolves to).
    From(Base),
}

/// The backup an incremental continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    /// The parent's ID.
    pub parent: String,
    /// The parent's `to_lsn`: the incremental copies pages changed after it.
    pub lsn: u64,
    /// Every backup a restore needs before this one, the full first.
    pub chain: Vec<String>,
    /// The parent's server (an incremental of another server is refused).
    pub server: String,
}

pub const DEFAULT_PART_SIZE: u64 = 128 << 20;
pub const MIN_PART_SIZE: u64 = 1 << 20;
pub const MAX_PART_SIZE: u64 = 4 << 30;
/// The name of every part's artifact before its sequence number.
pub const PART_NAME: &str = "backup.xbstream";
/// Lines of the tool's stderr kept for an error message.
const TAIL_LINES: usize = 12;

/// The keys of `physical = { … }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PhysicalKeys {
    program: Option<PathBuf>,
    datadir: Option<PathBuf>,
    part_size: Option<String>,
}

impl PhysicalSpec {
    pub fn from_keys(
        k: Option<PhysicalKeys>,
        input: &crate::backup::source::PolicyInput<'_>,
    ) -> Result<PhysicalSpec> {
        let k = k.unwrap_or(PhysicalKeys {
            program: None,
            datadir: None,
            part_size: None,
        });
        let part_size = match k.part_size.as_deref() {
            None => DEFAULT_PART_SIZE,
            Some(s) => crate::base::size::parse_size(s)
                .map_err(|e| input.err("physical", format!("part-size: {e}")))?,
        };
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(input.err(
                "physical",
                "part-size must be between 1MiB and 4GiB".to_string(),
            ));
        }
        Ok(PhysicalSpec {
            program: match k.program {
                Some(p) if p.components().count() > 1 => input.resolve(&p),
                Some(p) => p,
                None => PathBuf::from("mariadb-backup"),
            },
            datadir: k.datadir.map(|d| input.resolve(&d)),
            part_size,
            level: Level::Full,
            incremental_schedule: None,
        })
    }
}

/// The base of an incremental of `job`: its newest physical backup, whose
/// own chain must be whole.
pub async fn incremental_base(cat: &crate::backup::catalog::Catalog, job: &str) -> Result<Base> {
    let what = format!("job {job}");
    let entries = cat.list(Some(job)).await?;
    let parent = entries
        .iter()
        .map(|e| &e.manifest)
        .filter(|m| is_physical(m))
        .max_by_key(|m| (m.started_at, m.id.clone()))
        .ok_or_else(|| {
            Error::source_err(
                &what,
                "an incremental needs a physical backup of the job to continue; there is none (take a full backup first)",
            )
        })?;
    let lsn = parent.details["lsn"]["to"].as_u64().ok_or_else(|| {
        Error::source_err(
            &what,
            format!("backup {} records no to_lsn; take a full backup", parent.id),
        )
    })?;
    let mut chain = parent.depends_on();
    for id in &chain {
        if !entries.iter().any(|e| &e.manifest.id == id) {
            return Err(Error::source_err(
                &what,
                format!(
                    "the newest backup {} needs {id}, which is not in the catalog: its chain is broken; take a full backup",
                    parent.id
                ),
            ));
        }
    }
    chain.push(parent.id.clone());
    Ok(Base {
        parent: parent.id.clone(),
        lsn,
        chain,
        server: parent.details["server"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A program named alone is looked up on PATH (and /usr/bin, /usr/sbin).
pub fn locate(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `X.Y` of a version string (`10.11.19-MariaDB-0+deb12u1` → `10.11`).
pub fn major_minor(v: &str) -> Option<String> {
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let a = it.next().filter(|s| !s.is_empty())?;
    let b = it.next().filter(|s| !s.is_empty())?;
    Some(format!("{a}.{b}"))
}

/// The version `program --version` prints (`... based on MariaDB server
/// 10.11.19-MariaDB ...`).
pub async fn tool_version(program: &Path) -> Result<String> {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("running {} --version", program.display()), e))?;
    version_in(program, &out)
}

/// `tool_version` for `policy check`, which is not async.
pub fn tool_version_now(program: &Path) -> Result<String> {
    let out = std::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {} --version", program.display()), e))?;
    version_in(program, &out)
}

fn version_in(program: &Path, out: &std::process::Output) -> Result<String> {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .map(|w| w.trim_end_matches(',').to_owned())
        .ok_or_else(|| {
            Error::source_err(
                program.display().to_string(),
                format!("--version printed no version: {}", text.trim()),
            )
        })
}

/// The last lines of a child's stderr, each also logged.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<std::collections::VecDeque<String>>>);

impl Tail {
    /// Reads `stderr` to its end in a task, logging each line under `what`.
    pub fn follow(
        stderr: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        what: &'static str,
    ) -> (Tail, tokio::task::JoinHandle<()>) {
        let tail = Tail::default();
        let t = tail.clone();
        let h = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(tool = what, "{l}");
                let mut q = t.0.lock().unwrap();
                if q.len() == TAIL_LINES {
                    q.pop_front();
                }
                q.push_back(l);
            }
        });
        (tail, h)
    }

    pub fn text(&self) -> String {
        let q = self.0.lock().unwrap();
        q.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Kills the child if cexdr dies (kill -9 included): a backup tool left
/// streaming into a closed pipe would hold the server's backup locks.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child
    // before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A tool's child process: killed when dropped and when cexdr dies, its
/// stderr followed (logged, last lines kept for an error message).
pub struct Tool {
    pub child: tokio::process::Child,
    pub tail: Tail,
    pub tail_task: tokio::task::JoinHandle<()>,
}

/// Starts `cmd` (the caller sets stdin and stdout) as a [`Tool`]; `what`
/// names it in the log.
pub fn spawn_tool(
    mut cmd: tokio::process::Command,
    program: &Path,
    what: &'static str,
) -> Result<Tool> {
    cmd.stderr(Stdio::piped()).kill_on_drop(true);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
    let (tail, tail_task) = Tail::follow(child.stderr.take().expect("piped"), what);
    Ok(Tool {
        child,
        tail,
        tail_task,
    })
}

/// The job's server, as the mysql job names it.
pub struct ServerSpec<'a> {
    pub url: &'a str,
    pub password: &'a Secret,
    pub tls: Option<&'a TlsSpec>,
    /// `--parallel` of the tool.
    pub threads: usize,
}

/// What the backup learns from the server before starting the tool.
struct ServerFacts {
    version: String,
    datadir: PathBuf,
    log_bin: bool,
}

async fn server_facts(job: &str, spec: &ServerSpec<'_>, p: &PhysicalSpec) -> Result<ServerFacts> {
    let server = Server::new(spec.url, spec.password, spec.tls)?;
    let mut conn = server.connect().await?;
    let r = rows(
        &mut conn,
        "reading the server's version and datadir",
        "SELECT VERSION(), @@datadir, @@log_bin",
    )
    .await?;
    let _ = conn.disconnect().await;
    let row = r.into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let version = get(0);
    if !version.contains("MariaDB") {
        return Err(Error::source_err(
            format!("job {job}"),
            format!("method = \"physical\" backs up MariaDB servers with mariadb-backup; {} runs MySQL {version} (use XtraBackup's own tooling or method = \"logical\")", server.describe()),
        ));
    }
    Ok(ServerFacts {
        version,
        datadir: p.datadir.clone().unwrap_or_else(|| PathBuf::from(get(1))),
        log_bin: get(2) == "1",
    })
}

/// Checks the tool and the datadir, then starts the tool; its stream's
/// parts arrive through `Opened::parts`.
pub async fn open(job: &str, spec: &ServerSpec<'_>, p: &PhysicalSpec) -> Result<Opened> {
    let c = preflight(job, spec, p).await?;
    let scratch = std::env::temp_dir().join(format!(
        "cexdr-physical-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
    let mut cmd = command(&c.program, spec, &c.facts.datadir, &scratch)?;
    if let Some(b) = &c.base {
        cmd.arg(format!("--incremental-lsn={}", b.lsn));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let tool = spawn_tool(cmd, &c.program, "mariadb-backup")?;
    tracing::info!(job, program = %c.program.display(), version = %c.tool, datadir = %c.facts.datadir.display(), "mariadb-backup started");

    let (parts_tx, parts_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = oneshot::channel();
    let cut = Cutter {
        job: job.to_owned(),
        part_size: p.part_size,
        parts: parts_tx,
    };
    let details = c.details(p.part_size);
    let log_bin = c.facts.log_bin;
    tokio::spawn(async move {
        let r = cut.stream(tool, details, log_bin).await;
        let _ = std::fs::remove_dir_all(&scratch);
        let _ = done_tx.send(r);
    });
    Ok(Opened {
        extracts: Vec::new(),
        details: serde_json::Value::Object(Default::default()),
        parts: Some(Parts {
            next: parts_rx,
            finish: async move {
                done_rx.await.unwrap_or_else(|_| {
                    Err(Error::source_err("mariadb-backup", "its reader stopped"))
                })
            }
            .boxed(),
        }),
    })
}

/// What the checks before starting the tool found.
struct Checked {
    program: PathBuf,
    tool: String,
    facts: ServerFacts,
    server_url: String,
    base: Option<Base>,
}

impl Checked {
    /// The backup-level details known before the stream starts.
    fn details(&self, part_size: u64) -> serde_json::Value {
        let mut d = json!({
            "method": "physical",
            "server": {"url": self.server_url, "version": self.facts.version, "flavour": "MariaDB", "datadir": self.facts.datadir},
            "tool": {"program": self.program, "version": self.tool},
            "part_size": part_size,
        });
        if let Some(b) = &self.base {
            d["incremental"] = json!({"parent": b.parent, "from_lsn": b.lsn, "chain": b.chain});
        }
        d
    }
}

/// The tool found and of the server's version, the datadir readable, an
/// incremental's parent of this server: all before the tool starts.
async fn preflight(job: &str, spec: &ServerSpec<'_>, p: &PhysicalSpec) -> Result<Checked> {
    let what = format!("job {job}");
    let program = locate(&p.program).ok_or_else(|| {
        Error::source_err(
            &what,
            format!(
                "{} not found (install Debian's mariadb-backup, the same version as the server, on the host that can read the datadir)",
                p.program.display()
            ),
        )
    })?;
    let facts = server_facts(job, spec, p).await?;
    let tool = tool_version(&program).await?;
    if major_minor(&tool) != major_minor(&facts.version) {
        return Err(Error::source_err(
            &what,
            format!(
                "{} is version {tool}, the server {}: mariadb-backup must be the server's major version",
                program.display(),
                facts.version
            ),
        ));
    }
    check_datadir(&what, &facts.datadir)?;
    let server_url = Server::new(spec.url, spec.password, spec.tls)?.describe();
    let base = match &p.level {
        Level::From(b) if b.server != server_url => {
            return Err(Error::source_err(
                &what,
                format!(
                    "the incremental's parent {} is a backup of {}, this job now backs up {server_url}: take a full backup",
                    b.parent, b.server
                ),
            ))
        }
        Level::From(b) => Some(b.clone()),
        Level::Full => None,
        Level::Incremental => {
            return Err(Error::source_err(&what, "incremental run without a base (internal)"))
        }
    };
    Ok(Checked {
        program,
        tool,
        facts,
        server_url,
        base,
    })
}

fn check_datadir(what: &str, dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::source_err(
            what,
            format!(
                "the server's datadir {} is not readable here ({e}); a physical backup runs where the datadir is (the database host, or a pod with it mounted) as a user that can read it",
                dir.display()
            ),
        )),
    }
}

/// The tool's command line: connection from the job's URL (password
/// through MYSQL_PWD, never argv), TLS files, the datadir.
fn command(
    program: &Path,
    spec: &ServerSpec<'_>,
    datadir: &Path,
    scratch: &Path,
) -> Result<tokio::process::Command> {
    let t = super::conn::Target::parse(spec.url)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("--backup")
        .arg("--stream=xbstream")
        .arg(format!("--parallel={}", spec.threads))
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--target-dir={}", scratch.display()))
        .arg(format!("--user={}", t.user));
    match &t.socket {
        Some(s) => cmd.arg(format!("--socket={s}")),
        None => cmd
            .arg(format!("--host={}", t.host))
            .arg(format!("--port={}", t.port)),
    };
    if let Some(tls) = spec.tls.filter(|t| t.enabled.unwrap_or(true)) {
        cmd.arg("--ssl");
        if tls.verify == crate::base::mysql_tls::Verify::Full {
            cmd.arg("--ssl-verify-server-cert");
        }
        if let Some(f) = &tls.ca_file {
            cmd.arg(format!("--ssl-ca={}", f.display()));
        }
        if let Some(f) = &tls.cert_file {
            cmd.arg(format!("--ssl-cert={}", f.display()));
        }
        if let Some(f) = &tls.key_file {
            cmd.arg(format!("--ssl-key={}", f.display()));
        }
    }
    cmd.env_remove("MYSQL_PWD");
    if let Some(pw) = spec.password.read()? {
        cmd.env("MYSQL_PWD", pw);
    }
    Ok(cmd)
}

/// Cuts the tool's stdout into parts between chunks.
struct Cutter {
    job: String,
    part_size: u64,
    parts: mpsc::Sender<Extract>,
}

/// One part being written: its byte channel and the report it resolves.
struct Open {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    done: oneshot::Sender<Result<Report>>,
    bytes: u64,
}

impl Open {
    /// The part ended between chunks.
    fn close(self) {
        let _ = self.done.send(Ok(Report {
            details: json!({"xbstream_bytes": self.bytes}),
            warnings: Vec::new(),
        }));
    }

    /// The backup failed while this part was open: its stream fails (the
    /// store drops the upload) and its report names the cause.
    async fn fail(self, why: String) {
        let _ = self
            .tx
            .send(Err(Error::source_err("mariadb-backup", &why).into_io()))
            .await;
        let _ = self
            .done
            .send(Err(Error::source_err("mariadb-backup", why)));
    }

    /// The store stopped reading this part: its own error is the cause.
    fn abandon(self) {
        let _ = self.done.send(Ok(Report::default()));
    }
}

impl Cutter {
    /// The whole run of the tool: its stream cut into parts, then its exit
    /// status and the manifest's details from what passed.
    async fn stream(self, tool: Tool, details: serde_json::Value, log_bin: bool) -> Result<Report> {
        let Tool {
            mut child,
            tail,
            tail_task,
        } = tool;
        let stdout = child.stdout.take().expect("piped");
        let mut part = None;
        let mut eof = false;
        let r = self.run(stdout, &mut part, &mut eof).await;
        if r.is_err() && !eof {
            // cexdr stopped reading (damage, the store went away): stop the tool.
            let _ = child.start_kill();
        }
        // The tool's verdict comes after its stream: wait for it and its
        // last stderr lines. A tool that failed on its own is the cause,
        // whatever its stream looked like.
        let status = child.wait().await;
        let _ = tail_task.await;
        let tool_failed = match &status {
            Ok(st) if !st.success() && (eof || r.is_ok()) => Some(*st),
            _ => None,
        };
        let r = match (r, tool_failed) {
            (_, Some(st)) => Err(Error::source_err(
                format!("job {}", self.job),
                format!("mariadb-backup failed ({st}): {}", tail.text()),
            )),
            (Err(e), None) => Err(e),
            (Ok(parser), None) => match status {
                Err(e) => Err(Error::io("waiting for mariadb-backup", e)),
                Ok(_) => describe(&parser, details, log_bin),
            },
        };
        match (part.take(), &r) {
            (Some(p), Err(e)) => p.fail(crate::error::one_line(e)).await,
            (Some(p), Ok(_)) => p.close(),
            (None, _) => {}
        }
        r
    }

    /// Reads the stream to its end; the part still open on an error is
    /// left in `part` for the caller to fail with the final cause.
    async fn run(
        &self,
        mut out: impl tokio::io::AsyncRead + Unpin,
        part: &mut Option<Open>,
        eof: &mut bool,
    ) -> Result<xbstream::Parser> {
        let mut parser = xbstream::Parser::default();
        let mut seq = 0u32;
        let mut buf = BytesMut::with_capacity(1 << 20);
        let gone = || Error::source_err("mariadb-backup", crate::pipeline::CONSUMER_GONE);
        loop {
            buf.reserve(1 << 20);
            let n = out
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::io("reading mariadb-backup's stream", e))?;
            if n == 0 {
                *eof = true;
                break;
            }
            let mut data = buf.split().freeze();
            while !data.is_empty() {
                if part.is_none() {
                    seq += 1;
                    *part = Some(self.begin_part(seq).await.ok_or_else(gone)?);
                }
                let k = parser
                    .advance(&data)
                    .map_err(|e| Error::source_err(format!("job {}", self.job), e))?;
                let piece = data.split_to(k);
                let p = part.as_mut().expect("opened above");
                p.bytes += k as u64;
                if p.tx.send(Ok(piece)).await.is_err() {
                    part.take().expect("open").abandon();
                    return Err(gone());
                }
                if parser.at_boundary() && p.bytes >= self.part_size {
                    part.take().expect("open").close();
                }
            }
        }
        parser
            .finish()
            .map_err(|e| Error::source_err(format!("job {}", self.job), e))?;
        if seq == 0 {
            return Err(Error::source_err(
                format!("job {}", self.job),
                "mariadb-backup wrote no stream",
            ));
        }
        Ok(parser)
    }

    /// Hands the next part to the run; None when the run stopped taking.
    async fn begin_part(&self, seq: u32) -> Option<Open> {
        let (tx, rx) = mpsc::channel(8);
        let (done, done_rx) = oneshot::channel();
        let x = Extract {
            name: format!("{PART_NAME}.{seq:05}"),
            stream: Box::pin(tokio_stream_from(rx)),
            finish: async move {
                done_rx.await.unwrap_or_else(|_| {
                    Err(Error::source_err("mariadb-backup", "its reader stopped"))
                })
            }
            .boxed(),
        };
        self.parts.send(x).await.ok()?;
        Some(Open { tx, done, bytes: 0 })
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The manifest's details from what passed: LSNs, the consistent point,
/// the files.
fn describe(
    parser: &xbstream::Parser,
    mut details: serde_json::Value,
    log_bin: bool,
) -> Result<Report> {
    let missing = |f: &str| {
        Error::source_err(
            "mariadb-backup",
            format!("its stream has no {f}; not a complete backup"),
        )
    };
    let checkpoints = parser
        .meta_text("xtrabackup_checkpoints")
        .ok_or_else(|| missing("xtrabackup_checkpoints"))?;
    let kv = |text: &str, key: &str| -> Option<String> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    };
    let lsn = |key: &str| kv(&checkpoints, key).and_then(|v| v.parse::<u64>().ok());
    let backup_type = kv(&checkpoints, "backup_type");
    // The tool's own record must say what was asked: an incremental from
    // the parent's LSN, or a full backup.
    let asked = details["incremental"]["from_lsn"].as_u64();
    let ok = match asked {
        Some(from) => {
            backup_type.as_deref() == Some("incremental") && lsn("from_lsn") == Some(from)
        }
        None => backup_type.as_deref() == Some("full-backuped"),
    };
    if !ok {
        return Err(Error::source_err(
            "mariadb-backup",
            format!(
                "its xtrabackup_checkpoints says backup_type = {backup_type:?}, from_lsn = {:?}; asked for {}",
                lsn("from_lsn"),
                asked.map_or("a full backup".to_string(), |f| format!("an incremental from LSN {f}"))
            ),
        ));
    }
    details["backup_type"] = json!(backup_type);
    details["lsn"] = json!({"from": lsn("from_lsn"), "to": lsn("to_lsn"), "last": lsn("last_lsn")});
    // xtrabackup_binlog_info: file, position, GTID of the consistent point.
    let mut binlog = json!({"enabled": log_bin});
    if let Some(info) = parser.meta_text("xtrabackup_binlog_info") {
        let f: Vec<&str> = info.split_whitespace().collect();
        binlog["file"] = json!(f.first());
        binlog["position"] = json!(f.get(1).and_then(|p| p.parse::<u64>().ok()));
        binlog["gtid_set"] = json!(f.get(2).copied().unwrap_or(""));
    } else if log_bin {
        return Err(missing("xtrabackup_binlog_info"));
    } else {
        binlog["note"] =
            json!("binary logging is off on this server: no binlog coordinates or GTID set");
    }
    details["binlog"] = binlog;
    details["files"] = json!(parser.files.len());
    details["file_bytes"] = json!(parser.files.values().sum::<u64>());
    details["xbstream"] = json!({"chunks": parser.chunks, "bytes": parser.offset()});
    details["datadir_files"] = json!(parser
        .files
        .iter()
        .map(|(p, s)| json!([p, s]))
        .collect::<Vec<_>>());
    Ok(Report {
        details,
        warnings: Vec::new(),
    })
}

/// The backups a restore of `m` applies, in order: its full backup, each
/// incremental after it, `m` last. Refused by name when a parent is gone,
/// is not the one recorded, or its LSN does not lead to the next.
pub async fn chain(
    catalog: &crate::backup::catalog::Catalog,
    m: &crate::backup::catalog::Manifest,
) -> Result<Vec<crate::backup::catalog::Manifest>> {
    let broken = |msg: String| Error::source_err(format!("backup {}", m.id), msg);
    let mut links = Vec::new();
    for id in m.depends_on() {
        match catalog.find(&id).await {
            Ok(e) => links.push(e.manifest),
            Err(Error::NotFound(_)) => {
                return Err(broken(format!(
                    "its chain is broken: it needs backup {id}, which is not in the catalog"
                )))
            }
            Err(e) => return Err(e),
        }
    }
    links.push(m.clone());
    for (i, l) in links.iter().enumerate() {
        if !is_physical(l) || l.job != m.job {
            return Err(broken(format!(
                "its chain names {}, which is not a physical backup of job {}",
                l.id, m.job
            )));
        }
        let from = l.details["incremental"]["from_lsn"].as_u64();
        let Some(prev) = i.checked_sub(1).map(|p| &links[p]) else {
            if from.is_some() {
                return Err(broken(format!(
                    "its chain starts at {}, an incremental, not a full backup",
                    l.id
                )));
            }
            continue;
        };
        let parent = l.details["incremental"]["parent"].as_str();
        let to = prev.details["lsn"]["to"].as_u64();
        if parent != Some(prev.id.as_str()) || from.is_none() || from != to {
            return Err(broken(format!(
                "its chain is broken at {}: it continues {} from LSN {}, but comes after {} (to LSN {})",
                l.id,
                parent.unwrap_or("nothing"),
                from.map_or("none".into(), |f| f.to_string()),
                prev.id,
                to.map_or("none".into(), |t| t.to_string()),
            )));
        }
    }
    Ok(links)
}

/// True for a manifest of a physical backup.
pub fn is_physical(m: &crate::backup::catalog::Manifest) -> bool {
    m.details["method"] == "physical"
}

/// Whether a stream starts with an xbstream chunk; the stream comes back
/// whole.
pub async fn peek_magic(
    mut stream: crate::base::ByteStream,
) -> Result<(bool, crate::base::ByteStream)> {
    use futures::StreamExt;
    let mut head = BytesMut::new();
    while head.len() < xbstream::MAGIC.len() {
        match stream.next().await {
            Some(c) => head.extend_from_slice(&c.map_err(|e| Error::io("reading artifact", e))?),
            None => break,
        }
    }
    let is = head.starts_with(xbstream::MAGIC);
    let first = futures::stream::iter([Ok(head.freeze())]);
    Ok((is, Box::pin(first.chain(stream))))
}

/// Content check of one part (`verify`): whole chunks, every payload's
/// CRC-32, plain relative paths.
pub async fn validate(mut stream: crate::base::ByteStream) -> Result<(u64, Vec<String>)> {
    use futures::StreamExt;
    let mut p = xbstream::Parser::default();
    while let Some(c) = stream.next().await {
        let c = c.map_err(|e| Error::io("reading the part", e))?;
        p.feed(&c)
            .map_err(|e| Error::source_err("physical backup part", e))?;
    }
    p.finish()
        .map_err(|e| Error::source_err("physical backup part", e))?;
    Ok((
        p.offset(),
        vec![format!(
            "xbstream: {} whole chunks of {} files, every payload's CRC-32 matches",
            p.chunks,
            p.files.len()
        )],
    ))
}
