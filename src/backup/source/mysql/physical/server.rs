//! A private `mariadbd` on a restored datadir, for what needs a running
//! server on it (a point-in-time replay, a restore test): no network
//! (`--skip-networking`), its own socket, no grant checks (the restored
//! `mysql.global_priv` holds the source's accounts, whose passwords this
//! run does not have), no binary log. Stopped with `SHUTDOWN` so that the
//! datadir is left clean; killed if dropped.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{locate, spawn_tool, Tail, Tool};
use mysql_async::Conn;

use crate::backup::source::mysql::conn::{exec, Server};
use crate::base::Secret;
use crate::error::{Error, Result};

/// How long a server on a restored datadir may take to accept connections
/// (crash recovery of a prepared copy is short; a large buffer pool is not
/// allocated here).
const START_LIMIT: Duration = Duration::from_secs(120);

pub struct Scratch {
    child: tokio::process::Child,
    tail: Tail,
    socket: PathBuf,
    datadir: PathBuf,
}

impl Scratch {
    /// Starts `mariadbd` on `datadir` as the caller (root included: the
    /// files are set to their owner after the server stops) and waits until
    /// it accepts connections.
    pub async fn start(datadir: &Path) -> Result<Scratch> {
        let program = locate(Path::new("mariadbd"))
            .or_else(|| locate(Path::new("mysqld")))
            .ok_or_else(|| {
                Error::RestoreRefused(
                    "mariadbd not found on PATH (install Debian's mariadb-server, the version of the backup's server)".into(),
                )
            })?;
        // A socket path must fit in 108 bytes: beside the temp folder, not
        // inside a deep datadir.
        let socket = std::env::temp_dir().join(format!(
            "cexdr-scratch-{}-{}.sock",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                socket.with_extension("pid").display()
            ))
            .arg("--skip-networking")
            .arg("--skip-grant-tables")
            .arg("--skip-log-bin")
            .arg("--skip-slave-start")
            .arg("--innodb-buffer-pool-size=256M")
            .arg(format!("--tmpdir={}", std::env::temp_dir().display()));
        // --log-error unset: the server logs to stderr, which is followed.
        if super::restore::is_root() {
            cmd.arg("--user=root");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let Tool { child, tail, .. } = spawn_tool(cmd, &program, "mariadbd")?;
        let s = Scratch {
            child,
            tail,
            socket,
            datadir: datadir.to_owned(),
        };
        s.wait_ready().await?;
        tracing::info!(datadir = %s.datadir.display(), socket = %s.socket.display(), "scratch mariadbd started");
        Ok(s)
    }

    /// `mysql://root@localhost/?socket=…` of this server.
    pub fn url(&self) -> String {
        format!("mysql://root@localhost/?socket={}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn connect(&self) -> Result<Conn> {
        Server::new(&self.url(), &Secret::None, None)?
            .connect()
            .await
    }

    async fn wait_ready(&self) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if self.socket.exists() {
                if let Ok(c) = self.connect().await {
                    let _ = c.disconnect().await;
                    return Ok(());
                }
            }
            if t0.elapsed() > START_LIMIT {
                return Err(self.failed(format!(
                    "did not accept connections within {} s",
                    START_LIMIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn failed(&self, why: String) -> Error {
        Error::restore_failed(
            format!("mariadbd on {}", self.datadir.display()),
            format!("{why}: {}", self.tail.text()),
        )
    }

    /// `SHUTDOWN`, then waits for the process to end: InnoDB is left clean
    /// (a server started on the datadir later needs no crash recovery).
    pub async fn shutdown(mut self) -> Result<()> {
        let mut c = self.connect().await?;
        // The connection ends with the server: its error is expected.
        let _ = exec(&mut c, "shutting down the scratch server", "SHUTDOWN").await;
        drop(c);
        let status = tokio::time::timeout(START_LIMIT, self.child.wait())
            .await
            .map_err(|_| self.failed("did not stop within 120 s of SHUTDOWN".into()))?
            .map_err(|e| Error::io("waiting for mariadbd", e))?;
        let _ = std::fs::remove_file(&self.socket);
        if !status.success() {
            return Err(self.failed(format!("stopped with {status}")));
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.socket);
    }
}
