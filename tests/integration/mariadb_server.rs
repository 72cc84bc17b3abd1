//! Private MariaDB servers for tests that need a binlog, a replica, special
//! settings or a server to kill (never the shared dev server).
//!
//! Recipe from `shared/notes/pitr-and-replicas.md` §1: one template datadir
//! is bootstrapped per test process (`mariadb-install-db`, 8 MiB redo log,
//! users `root@127.0.0.1` without password and `repl@127.0.0.1`/`pw` with
//! REPLICATION SLAVE), then every server gets a `cp -a` copy, a free port on
//! 127.0.0.1 and a unix socket in its own temp dir. The `mariadbd` is our
//! `std::process::Child`: `Drop` kills and reaps it (no zombie polling) and
//! removes the directory; `kill9()` + `restart()` reuse the same datadir
//! and port, as a crashed-and-restarted server would.
//!
//! ```ignore
//! use crate::mariadb_server;   // tests/integration/main.rs declares it
//! let p = mariadb_server::MariaDb::primary();
//! let r = mariadb_server::MariaDb::replica_of(&p);
//! p.sql("CREATE DATABASE app");
//! r.wait_caught_up(&p);
//! ```
//! Needs `mariadb-install-db`, `mariadbd` and the `mariadb` client on PATH
//! (or /usr/sbin), which `scripts/dev-services` installs; a missing binary
//! is a panic naming it, never a skip. Blocking API: from async tests call it
//! in `spawn_blocking` or before the runtime's hot path.
#![allow(dead_code)]
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The replication user every template (and so every server) has.
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "pw";

/// How to start a server. `Default` is a primary with the binlog on.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--server-id`; 0 picks a fresh one (distinct within the process).
    pub server_id: u32,
    /// `--log-bin` (ROW format, GTID strict mode, log-slave-updates).
    pub binlog: bool,
    /// `--binlog-format` when the binlog is on.
    pub binlog_format: String,
    /// More `mariadbd` arguments, e.g. `--max-binlog-size=1M`.
    pub extra: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server_id: 0,
            binlog: true,
            binlog_format: "ROW".into(),
            extra: Vec::new(),
        }
    }
}

/// A private mariadbd; killed and its directory removed on drop.
pub struct MariaDb {
    dir: tempfile::TempDir,
    port: u16,
    server_id: u32,
    opts: Options,
    replica: bool,
    child: Option<Child>,
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port nobody listens on right now (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn next_server_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Per process, offset by the pid so two test binaries' servers differ too.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 1000 + (std::process::id() % 10_000) * 100;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

fn bin(name: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/dev-services (it installs mariadb-server and mariadb-client)")
}

/// The template datadir of this test process, bootstrapped once.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let root = std::env::temp_dir();
        // Templates of test processes that are gone (statics are never dropped).
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = n.strip_prefix("cexdr-mariadb-template-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = root.join(format!("cexdr-mariadb-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let out = Command::new(bin("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--innodb-log-file-size=8M",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Users go into the template (binlog off) so that a replica never
        // replicates a CREATE USER it already has.
        let mut s = MariaDb::spawn_in(
            tempfile::Builder::new()
                .prefix("cexdr-mariadb-")
                .tempdir()
                .unwrap(),
            &data,
            Options {
                server_id: 1,
                binlog: false,
                ..Options::default()
            },
            false,
        );
        s.sql(&format!(
            "CREATE USER IF NOT EXISTS root@'127.0.0.1'; GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION; \
             CREATE USER {REPL_USER}@'127.0.0.1' IDENTIFIED BY '{REPL_PASSWORD}'; \
             GRANT REPLICATION SLAVE ON *.* TO {REPL_USER}@'127.0.0.1';"
        ));
        s.stop();
        // The template server ran in its own copy; move that datadir back.
        let used = s.datadir();
        let _ = std::fs::remove_dir_all(&data);
        copy_dir(&used, &data);
        for e in std::fs::read_dir(&data).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("binlog.") || n.starts_with("relay") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        data
    })
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp -a");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

impl MariaDb {
    /// A primary: binlog on (ROW, GTID strict), a fresh server id.
    pub fn primary() -> MariaDb {
        Self::start(Options::default())
    }

    /// A server with the given options (a fresh copy of the template).
    pub fn start(opts: Options) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("cexdr-mariadb-")
            .tempdir()
            .unwrap();
        let data = template().to_path_buf();
        Self::spawn_in(dir, &data, opts, false)
    }

    /// A server on a copy of `data` (a restored datadir).
    pub fn on_datadir(data: &Path, opts: Options) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("cexdr-mariadb-")
            .tempdir()
            .unwrap();
        Self::spawn_in(dir, data, opts, false)
    }

    /// A GTID replica of `primary` (read-only, relay log, CONNECT_RETRY 1 s),
    /// caught up with it when this returns.
    pub fn replica_of(primary: &MariaDb) -> MariaDb {
        Self::replica_of_with(primary, Options::default())
    }

    pub fn replica_of_with(primary: &MariaDb, opts: Options) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("cexdr-mariadb-")
            .tempdir()
            .unwrap();
        let data = template().to_path_buf();
        let r = Self::spawn_in(dir, &data, opts, true);
        r.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='{REPL_USER}', \
             MASTER_PASSWORD='{REPL_PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;",
            primary.port
        ));
        r.wait_caught_up(primary);
        r
    }

    fn spawn_in(dir: tempfile::TempDir, template: &Path, opts: Options, replica: bool) -> MariaDb {
        copy_dir(template, &dir.path().join("data"));
        let server_id = if opts.server_id == 0 {
            next_server_id()
        } else {
            opts.server_id
        };
        let mut s = MariaDb {
            dir,
            port: 0,
            server_id,
            opts,
            replica,
            child: None,
        };
        // Another process may take the free port before mariadbd binds it:
        // retry with a new one (only on first start; restart keeps its port).
        for attempt in 0..5 {
            s.port = free_port();
            match s.launch() {
                Ok(()) => return s,
                Err(log) if attempt < 4 && log.contains("Address already in use") => continue,
                Err(log) => panic!("mariadbd on port {} did not start:\n{log}", s.port),
            }
        }
        unreachable!()
    }

    fn launch(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let _ = std::fs::remove_file(d.join("mysqld.sock"));
        let mut c = Command::new(bin("mariadbd"));
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg("--user=root")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg("--skip-name-resolve")
            .arg(format!("--tmpdir={}", d.display()))
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-log-file-size=8M")
            .arg(format!("--server-id={}", self.server_id));
        if self.opts.binlog {
            c.arg(format!("--log-bin={}", d.join("data/binlog").display()))
                .arg(format!("--binlog-format={}", self.opts.binlog_format))
                .arg("--gtid-strict-mode=1")
                .arg("--log-slave-updates=1");
        } else {
            c.arg("--skip-log-bin");
        }
        if self.replica {
            c.arg("--read-only=1")
                .arg(format!("--relay-log={}", d.join("data/relay").display()));
        }
        c.args(&self.opts.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn mariadbd");
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Err(format!("mariadbd exited with {st}\n{}", self.log()));
            }
            if handshake(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not ready after 60 s\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mysql://root@127.0.0.1:PORT` (root has no password).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// `mysql://repl:pw@127.0.0.1:PORT`: REPLICATION SLAVE only.
    pub fn repl_url(&self) -> String {
        format!(
            "mysql://{REPL_USER}:{REPL_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's error log (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// SIGKILL and reap: a crash, the datadir is left as the crash left it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            loop {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                if t0.elapsed() > Duration::from_secs(60) {
                    let _ = c.kill();
                    let _ = c.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Starts again on the same datadir and port (after `kill9` or `stop`;
    /// stops a running server cleanly first). Crash recovery runs as usual.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("mariadbd restart on port {} failed:\n{log}", self.port);
        }
    }

    /// Runs SQL as root over the socket; returns tab-separated rows without
    /// headers, one per line. Panics with the server's message on error.
    pub fn sql(&self, query: &str) -> String {
        self.try_sql(query)
            .unwrap_or_else(|e| panic!("SQL on port {} failed: {e}\nquery: {query}", self.port))
    }

    /// Like `sql`, but returns the client's error text.
    pub fn try_sql(&self, query: &str) -> Result<String, String> {
        let out = Command::new(bin("mariadb"))
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .args(["-u", "root", "-N", "-B", "-e"])
            .arg(query)
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb client");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `@@gtid_binlog_pos` (its own SELECT: see the notes' read_only gotcha).
    pub fn gtid_binlog_pos(&self) -> String {
        self.sql("SELECT @@gtid_binlog_pos")
    }

    /// Waits until this replica applied everything `primary` has binlogged.
    pub fn wait_caught_up(&self, primary: &MariaDb) {
        let pos = primary.gtid_binlog_pos();
        if pos.is_empty() {
            return;
        }
        let r = self.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"));
        assert_eq!(
            r,
            "0",
            "replica on {} did not catch up with {pos}: {}",
            self.port,
            self.sql("SHOW SLAVE STATUS\\G")
        );
    }
}

/// True once the server sends its protocol-10 handshake on `port`.
fn handshake(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut b = [0u8; 5];
    s.read_exact(&mut b).is_ok() && b[4] == 10
}
