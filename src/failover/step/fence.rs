//! `fence-mysql`: the old primary must not take writes if it comes back,
//! from any account but replication and the fence account itself, and the
//! fence must hold after cexdr has exited.
//!
//! Modes (docs/failover.md has the trade-offs):
//! - `read-only` (default): `SET GLOBAL read_only = ON`; on MySQL also
//!   `super_read_only = ON`; on MariaDB (no super_read_only; root and
//!   `READ_ONLY ADMIN` holders bypass read_only) the fence revokes
//!   `READ_ONLY ADMIN` from every other account that holds it, journaling
//!   exactly which accounts lost it (intent first, so a crash in the middle
//!   loses nothing), with `sql_log_bin = 0` so the revokes are not errant
//!   transactions in the old primary's binlog. Then it kills the sessions
//!   of those accounts (they keep their privileges until they reconnect).
//! - `shutdown`: `SHUTDOWN` (STONITH). Holds until someone starts the server
//!   again: pair it with a service manager that does not restart it.
//!
//! Either way a `probe` write through a privileged application account must
//! fail, and the journal records the answer as the proof. An unreachable
//! server is recorded as best effort, never fatal: it is usually unreachable
//! because the site is down.
use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Invalid, MysqlTarget, PreviewCtx, Step};
use crate::base::Dur;
use crate::base::Secret;
use crate::error::{one_line, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    ReadOnly,
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    pub mysql: Vec<MysqlTarget>,
    #[serde(default)]
    pub mode: Mode,
    /// End the sessions of the accounts that could still write (default true).
    pub kill_sessions: Option<bool>,
    /// Application accounts (URL with a database) whose write must now fail.
    #[serde(default)]
    pub probe: Vec<MysqlTarget>,
    /// Per server (default 5s).
    pub connect_timeout: Option<Dur>,
}

/// The probe's table, created in the probe URL's database if missing.
const PROBE_TABLE: &str = "cexdr_fence_probe";

impl Spec {
    fn check(&self) -> Invalid {
        if self.mysql.is_empty() {
            return Err(("mysql", "name the old primary's MySQL server(s)".into()));
        }
        for m in &self.mysql {
            m.validate(false)?;
        }
        for p in &self.probe {
            p.validate(false).map_err(|(_, m)| ("probe", m))?;
            let db = mysql_async::Opts::from_url(&p.url)
                .ok()
                .and_then(|o| o.db_name().map(str::to_owned));
            if db.is_none() {
                return Err((
                    "probe",
                    format!(
                        "{}: name a database in the URL (the probe writes to its {PROBE_TABLE} table)",
                        p.label()
                    ),
                ));
            }
        }
        if self.mode == Mode::Shutdown && self.kill_sessions.is_some() {
            return Err((
                "kill-sessions",
                "applies to mode = \"read-only\" (a shutdown ends every session)".into(),
            ));
        }
        Ok(())
    }

    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .mysql
            .iter()
            .map(|m| match self.mode {
                Mode::ReadOnly => format!(
                    "{}: SET GLOBAL read_only = ON (+ super_read_only on MySQL; on MariaDB revoke READ_ONLY ADMIN from the accounts that hold it, journaled){}, best effort",
                    m.label(),
                    if self.kill_sessions() {
                        ", kill their sessions"
                    } else {
                        ""
                    }
                ),
                Mode::Shutdown => format!("{}: SHUTDOWN, best effort", m.label()),
            })
            .collect();
        for p in &self.probe {
            v.push(format!(
                "prove it: a write as {} must fail",
                account_label(p)
            ));
        }
        if self.probe.is_empty() {
            v.push("no probe account: the fence is not proven (add `probe`)".into());
        }
        v
    }

    fn timeout(&self) -> Duration {
        self.connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5))
    }

    fn kill_sessions(&self) -> bool {
        self.kill_sessions.unwrap_or(true)
    }
}

fn account_label(m: &MysqlTarget) -> String {
    mysql_async::Opts::from_url(&m.url)
        .map(|o| {
            format!(
                "{}@{}:{}",
                o.user().unwrap_or(""),
                o.ip_or_hostname(),
                o.tcp_port()
            )
        })
        .unwrap_or_else(|_| m.label())
}

type Sql<T> = std::result::Result<T, mysql_async::Error>;

async fn var(c: &mut mysql_async::Conn, name: &str) -> Sql<Option<String>> {
    let rows: Vec<(String, String)> = c
        .query(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await?;
    Ok(rows.into_iter().next().map(|(_, v)| v))
}

/// `'user'@'host'` → (user, host).
fn split_grantee(g: &str) -> Option<(String, String)> {
    let (u, h) = g.rsplit_once('@')?;
    let unq = |s: &str| s.trim().trim_matches('\'').replace("''", "'");
    Some((unq(u), unq(h)))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Accounts other than ours that hold READ_ONLY ADMIN (MariaDB).
async fn bypass_holders(c: &mut mysql_async::Conn) -> Sql<Vec<(String, String)>> {
    let me: Option<String> = c.query_first("SELECT CURRENT_USER()").await?;
    let me = me.unwrap_or_default();
    let me = me
        .rsplit_once('@')
        .map(|(u, h)| (u.to_owned(), h.to_owned()));
    let rows: Vec<String> = c
        .query(
            "SELECT GRANTEE FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = 'READ_ONLY ADMIN' ORDER BY GRANTEE",
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|g| split_grantee(g))
        .filter(|a| Some(a) != me.as_ref())
        .collect())
}

/// Everything a fence did on one server, for the journal.
async fn fence_read_only(
    ctx: &mut Ctx<'_>,
    m: &MysqlTarget,
    c: &mut mysql_async::Conn,
    kill: bool,
) -> Result<Sql<Value>> {
    let label = m.label();
    let sro = match var(c, "super_read_only").await {
        Ok(v) => v.is_some(),
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = c.query_drop("SET GLOBAL read_only = ON").await {
        return Ok(Err(e));
    }
    let revoked = if sro {
        if let Err(e) = c.query_drop("SET GLOBAL super_read_only = ON").await {
            return Ok(Err(e));
        }
        Vec::new()
    } else {
        match revoke_bypass(ctx, &label, c).await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        }
    };
    let killed = if kill {
        match kill_sessions(c, sro, &revoked).await {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        }
    } else {
        Vec::new()
    };
    let restore: Vec<String> = revoked
        .iter()
        .map(|(u, h)| format!("GRANT READ_ONLY ADMIN ON *.* TO {}@{}", quote(u), quote(h)))
        .collect();
    Ok(Ok(json!({
        "server": label,
        "mode": "read-only",
        "fenced": true,
        "reachable": true,
        "super_read_only": sro,
        "revoked-read-only-admin": revoked.iter().map(|(u, h)| json!({ "user": u, "host": h })).collect::<Vec<_>>(),
        "restore-with": restore,
        "killed-sessions": killed,
    })))
}

/// MariaDB: remove the bypass (READ_ONLY ADMIN). Intent is journaled
/// before the first REVOKE; a re-entered step merges what earlier attempts
/// revoked. Returns every account revoked by this run.
async fn revoke_bypass(
    ctx: &mut Ctx<'_>,
    label: &str,
    c: &mut mysql_async::Conn,
) -> Result<Sql<Vec<(String, String)>>> {
    let mut revoked: Vec<(String, String)> = Vec::new();
    let holders = match bypass_holders(c).await {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    for p in &ctx.progress {
        if p["server"] == json!(label) {
            if let Some(list) = p["revoke-read-only-admin"].as_array() {
                for a in list {
                    let u = a["user"].as_str().unwrap_or_default().to_owned();
                    let h = a["host"].as_str().unwrap_or_default().to_owned();
                    if !revoked.contains(&(u.clone(), h.clone())) {
                        revoked.push((u, h));
                    }
                }
            }
        }
    }
    let new: Vec<_> = holders
        .into_iter()
        .filter(|a| !revoked.contains(a))
        .collect();
    if !new.is_empty() {
        revoked.extend(new.iter().cloned());
        ctx.record(json!({
            "server": label,
            "revoke-read-only-admin": revoked.iter().map(|(u, h)| json!({ "user": u, "host": h })).collect::<Vec<_>>(),
        }))?;
    }
    // Not binlogged: a REVOKE in the old primary's binlog would be an
    // errant transaction that breaks its rejoin as a replica.
    if let Err(e) = c.query_drop("SET SESSION sql_log_bin = 0").await {
        return Ok(Err(e));
    }
    for (u, h) in &new {
        if let Err(e) = c
            .query_drop(format!(
                "REVOKE READ_ONLY ADMIN ON *.* FROM {}@{}",
                quote(u),
                quote(h)
            ))
            .await
        {
            return Ok(Err(e));
        }
    }
    Ok(Ok(revoked))
}

/// Sessions keep the privileges they logged in with: end those of the
/// accounts that could write. MySQL's super_read_only binds everyone, but
/// an open transaction would still try to commit: end all sessions.
async fn kill_sessions(
    c: &mut mysql_async::Conn,
    sro: bool,
    revoked: &[(String, String)],
) -> Sql<Vec<Value>> {
    let mut killed = Vec::new();
    let users: BTreeSet<String> = revoked.iter().map(|(u, _)| u.clone()).collect();
    let rows: Sql<Vec<(u64, String, String)>> = c
        .query(
            "SELECT ID, USER, COMMAND FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()",
        )
        .await;
    let rows = rows?;
    for (id, user, command) in rows {
        let replication = command.starts_with("Binlog Dump") || user == "system user";
        if replication || user.is_empty() || (!sro && !users.contains(&user)) {
            continue;
        }
        match c.query_drop(format!("KILL CONNECTION {id}")).await {
            Ok(()) => killed.push(json!({ "id": id, "user": user })),
            // Gone already (it ended between the list and the KILL).
            Err(mysql_async::Error::Server(se)) if se.code == 1094 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(killed)
}

async fn fence_one(ctx: &mut Ctx<'_>, s: &Spec, m: &MysqlTarget) -> Result<Value> {
    let t = s.timeout();
    let mut c = match m.connect(t).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(
                json!({ "server": m.label(), "fenced": false, "reachable": false, "error": e.to_string() }),
            )
        }
    };
    let v = match s.mode {
        Mode::ReadOnly => match fence_read_only(ctx, m, &mut c, s.kill_sessions()).await? {
            Ok(v) => v,
            Err(e) => {
                json!({ "server": m.label(), "fenced": false, "reachable": true, "error": one_line(&e) })
            }
        },
        Mode::Shutdown => match c.query_drop("SHUTDOWN").await {
            // The server may close the connection before it answers.
            Ok(()) | Err(mysql_async::Error::Io(_)) => {
                json!({ "server": m.label(), "mode": "shutdown", "fenced": true, "reachable": true })
            }
            Err(e) => {
                json!({ "server": m.label(), "mode": "shutdown", "fenced": false, "reachable": true, "error": one_line(&e) })
            }
        },
    };
    let _ = c.disconnect().await;
    Ok(v)
}

/// A probe write that went through: the fence does not hold.
#[derive(Debug, thiserror::Error)]
#[error("{who}: INSERT INTO {PROBE_TABLE} succeeded: the old primary still takes writes")]
struct Leak {
    who: String,
}

/// The probe's verdict: `Ok(proof)` when the write was refused (or the
/// server is down), `Err(Leak)` when it went through.
async fn probe_write(p: &MysqlTarget, t: Duration) -> std::result::Result<String, Leak> {
    let who = account_label(p);
    let mut c = match p.connect(t).await {
        Ok(c) => c,
        Err(e) => return Ok(format!("{who}: cannot connect ({e})")),
    };
    let r: Sql<()> = async {
        c.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL)"
        ))
        .await?;
        c.query_drop(format!("INSERT INTO {PROBE_TABLE} (at) VALUES (NOW(6))"))
            .await?;
        Ok(())
    }
    .await;
    let _ = c.disconnect().await;
    match r {
        Err(mysql_async::Error::Server(se)) => Ok(format!(
            "{who}: write refused with ERROR {} ({})",
            se.code, se.message
        )),
        Err(e) => Ok(format!("{who}: write failed ({})", one_line(&e))),
        Ok(()) => Err(Leak { who }),
    }
}

#[async_trait]
impl Step for Spec {
    fn validate(&self, _channels: &std::collections::BTreeSet<String>) -> Invalid {
        self.check()
    }
    fn describe(&self) -> Vec<String> {
        self.lines()
    }
    fn default_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(60)
    }
    fn secrets(&self) -> Vec<Secret> {
        self.mysql
            .iter()
            .chain(&self.probe)
            .map(MysqlTarget::secret)
            .collect()
    }

    async fn preview(&self, _ctx: &PreviewCtx<'_>) -> Result<Value> {
        let mut out = Vec::new();
        for m in &self.mysql {
            let v = match m.connect(self.timeout()).await {
                Err(e) => {
                    json!({ "server": m.label(), "reachable": false, "error": e.to_string() })
                }
                Ok(mut c) => {
                    let ro: std::result::Result<Option<i64>, _> =
                        c.query_first("SELECT @@global.read_only").await;
                    let holders = bypass_holders(&mut c).await;
                    let _ = c.disconnect().await;
                    match ro {
                        Ok(ro) => json!({
                            "server": m.label(),
                            "reachable": true,
                            "read_only": ro == Some(1),
                            "would": match self.mode {
                                Mode::ReadOnly => "SET GLOBAL read_only = ON, remove the bypass, kill sessions",
                                Mode::Shutdown => "SHUTDOWN",
                            },
                            "read_only_admin_holders": holders
                                .map(|h| h.iter().map(|(u, h)| format!("{u}@{h}")).collect::<Vec<_>>())
                                .unwrap_or_default(),
                        }),
                        Err(e) => {
                            json!({ "server": m.label(), "reachable": true, "error": one_line(&e) })
                        }
                    }
                }
            };
            out.push(v);
        }
        Ok(json!({ "servers": out }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let mut out = Vec::new();
        for m in &self.mysql {
            let v = fence_one(ctx, self, m).await?;
            if v["fenced"] != json!(true) {
                tracing::warn!(step = ctx.step, server = %m.label(), error = %v["error"], "could not fence; going on");
            }
            out.push(v);
        }
        if self.mode == Mode::Shutdown {
            // SHUTDOWN returns before the port closes: wait (bounded) for it.
            for m in &self.mysql {
                let t0 = tokio::time::Instant::now();
                while t0.elapsed() < self.timeout() && m.connect(self.timeout()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // The proof: every probe write must fail. A fence that demonstrably
        // does not hold fails the step (retryable: the next attempt fences again).
        let mut proofs = Vec::new();
        let mut leaks = Vec::new();
        for p in &self.probe {
            match probe_write(p, self.timeout()).await {
                Ok(proof) => proofs.push(proof),
                Err(leak) => leaks.push(leak.to_string()),
            }
        }
        if !leaks.is_empty() {
            ctx.record(json!({ "probe-failed": leaks }))?;
            return Err(ctx.fail(format!("the fence does not hold: {}", leaks.join("; "))));
        }
        let proof = if self.probe.is_empty() {
            json!("not proven: no probe account in the runbook")
        } else {
            json!(proofs)
        };
        Ok(
            json!({ "servers": out, "mode": match self.mode { Mode::ReadOnly => "read-only", Mode::Shutdown => "shutdown" }, "proof": proof }),
        )
    }
}
