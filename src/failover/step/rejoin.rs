//! `rejoin-mysql` (failback, MariaDB GTID): the old primary, back up, becomes
//! a replica of the new primary. It refuses when the old primary has errant
//! transactions (GTIDs the new primary never got: written after the
//! replica's last received event, or after the fence leaked) and lists
//! them, instead of letting replication diverge or silently skip them.
//!
//! Sequence: read_only = ON on the old primary; compare its
//! `@@gtid_binlog_state` (the last GTID per domain and server) with what the
//! new primary has (`@@gtid_binlog_state` and `@@gtid_slave_pos`); then
//! `STOP SLAVE`, `SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos`,
//! `CHANGE MASTER TO … MASTER_USE_GTID = slave_pos`, `START SLAVE`, and
//! wait (bounded) until it applied the new primary's position. Re-entering
//! is safe: a server already replicating from the new primary is only
//! waited for.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Invalid, MysqlTarget, PreviewCtx, Step};
use crate::base::{human_duration, Secret};
use crate::error::{one_line, Result};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    /// The server that rejoins as a replica.
    pub old_primary: MysqlTarget,
    /// The current primary (read only: its position).
    pub new_primary: MysqlTarget,
    /// How the old primary reaches the new one (default: new-primary's URL host and port).
    pub source_host: Option<String>,
    pub source_port: Option<u16>,
    /// The replication account on the new primary.
    pub replication_user: String,
    pub replication_password_env: Option<String>,
    pub replication_password_file: Option<PathBuf>,
    /// Per connection (default 5s).
    pub connect_timeout: Option<crate::base::Dur>,
}

type Sql<T> = std::result::Result<T, mysql_async::Error>;

async fn one(c: &mut mysql_async::Conn, q: &str) -> Sql<String> {
    Ok(c.query_first::<Option<String>, _>(q)
        .await?
        .flatten()
        .unwrap_or_default())
}

/// `d-s-n,...` → (domain, server) → seq.
fn state(s: &str) -> BTreeMap<(u32, u32), u64> {
    s.split(',')
        .filter_map(|g| {
            let mut it = g.trim().splitn(3, '-');
            Some((
                (it.next()?.parse().ok()?, it.next()?.parse().ok()?),
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// GTID ranges the old primary has and the new one lacks, e.g.
/// `0-1-5006..0-1-5010 (5)`. `new_*` are the new primary's views.
pub fn errant(old_state: &str, new_state: &str, new_slave_pos: &str) -> Vec<String> {
    let mut known = state(new_state);
    for (k, v) in state(new_slave_pos) {
        let e = known.entry(k).or_insert(0);
        *e = (*e).max(v);
    }
    state(old_state)
        .into_iter()
        .filter_map(|((d, s), n)| {
            let m = known.get(&(d, s)).copied().unwrap_or(0);
            (n > m).then(|| {
                if n == m + 1 {
                    format!("{d}-{s}-{n}")
                } else {
                    format!("{d}-{s}-{}..{d}-{s}-{n} ({})", m + 1, n - m)
                }
            })
        })
        .collect()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

impl Spec {
    fn check(&self) -> Invalid {
        self.old_primary
            .validate(false)
            .map_err(|(_, m)| ("old-primary", m))?;
        self.new_primary
            .validate(false)
            .map_err(|(_, m)| ("new-primary", m))?;
        if self.replication_user.trim().is_empty() {
            return Err(("replication-user", "must not be empty".into()));
        }
        if self.replication_password_env.is_some() && self.replication_password_file.is_some() {
            return Err((
                "replication-password-env",
                "set replication-password-env or replication-password-file, not both".into(),
            ));
        }
        Ok(())
    }

    fn repl_secret(&self) -> Secret {
        match (
            &self.replication_password_env,
            &self.replication_password_file,
        ) {
            (Some(v), _) => Secret::Env(v.clone()),
            (_, Some(f)) => Secret::File(f.clone()),
            _ => Secret::None,
        }
    }

    fn timeout(&self) -> Duration {
        self.connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5))
    }

    fn source(&self) -> (String, u16) {
        let o = mysql_async::Opts::from_url(&self.new_primary.url).expect("validated");
        (
            self.source_host
                .clone()
                .unwrap_or_else(|| o.ip_or_hostname().to_string()),
            self.source_port.unwrap_or(o.tcp_port()),
        )
    }

    /// (old's binlog state, new's binlog state, new's slave pos, new's binlog pos).
    async fn positions(
        &self,
        old: &mut mysql_async::Conn,
    ) -> std::result::Result<(String, String, String, String), super::Failure> {
        let mut n = self.new_primary.connect(self.timeout()).await?;
        let label = self.new_primary.label();
        let r = async {
            Ok::<_, mysql_async::Error>((
                one(&mut n, "SELECT @@global.gtid_binlog_state").await?,
                one(&mut n, "SELECT @@global.gtid_slave_pos").await?,
                one(&mut n, "SELECT @@global.gtid_binlog_pos").await?,
            ))
        }
        .await
        .map_err(|e| super::Failure::caused(&label, e));
        let _ = n.disconnect().await;
        let (ns, nsp, nbp) = r?;
        let os = one(old, "SELECT @@global.gtid_binlog_state")
            .await
            .map_err(|e| super::Failure::caused(self.old_primary.label(), e))?;
        Ok((os, ns, nsp, nbp))
    }
}

#[async_trait]
impl Step for Spec {
    fn validate(&self, _channels: &std::collections::BTreeSet<String>) -> Invalid {
        self.check()
    }
    fn describe(&self) -> Vec<String> {
        let (h, p) = self.source();
        vec![
            format!(
                "{}: read_only = ON, refuse on errant transactions (GTIDs {} lacks), then replicate from {h}:{p} by GTID (slave_pos) and wait until caught up",
                self.old_primary.label(),
                self.new_primary.label()
            ),
        ]
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }
    fn secrets(&self) -> Vec<Secret> {
        vec![
            self.old_primary.secret(),
            self.new_primary.secret(),
            self.repl_secret(),
        ]
    }

    async fn preview(&self, ctx: &PreviewCtx<'_>) -> Result<Value> {
        let mut old = self
            .old_primary
            .connect(self.timeout())
            .await
            .map_err(|m| super::failed_with(ctx.step, m, false))?;
        let p = self.positions(&mut old).await;
        let _ = old.disconnect().await;
        let (os, ns, nsp, nbp) = p.map_err(|m| super::failed_with(ctx.step, m, false))?;
        let e = errant(&os, &ns, &nsp);
        Ok(json!({
            "old-primary": { "gtid-binlog-state": os },
            "new-primary": { "gtid-binlog-state": ns, "gtid-slave-pos": nsp, "gtid-binlog-pos": nbp },
            "errant": e,
            "would": if e.is_empty() { "rejoin as a replica" } else { "refuse: errant transactions" },
        }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let mut old = self
            .old_primary
            .connect(self.timeout())
            .await
            .map_err(|m| ctx.fail_with(m))?;
        let r = rejoin(self, ctx, &mut old).await;
        let _ = old.disconnect().await;
        r
    }
}

async fn slave_field(c: &mut mysql_async::Conn, names: &[&str]) -> Sql<Option<Vec<String>>> {
    let rows: Vec<mysql_async::Row> = c.query("SHOW SLAVE STATUS").await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let cols: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    Ok(Some(
        names
            .iter()
            .map(|n| {
                cols.iter()
                    .position(|c| c == n)
                    .and_then(|i| row.get_opt::<Option<String>, _>(i))
                    .and_then(|r| r.ok())
                    .flatten()
                    .unwrap_or_default()
            })
            .collect(),
    ))
}

/// The old primary rejoins as a replica of the new one: checked (MariaDB,
/// read-only from now on), repointed once (journaled), then caught up.
async fn rejoin(spec: &Spec, ctx: &mut Ctx<'_>, old: &mut mysql_async::Conn) -> Result<Value> {
    let ol = spec.old_primary.label();
    let sql = |ctx: &Ctx<'_>, what: &str, e: mysql_async::Error| {
        ctx.fail(format!("{ol}: {what}: {}", one_line(&e)))
    };
    if !old
        .query::<(String, String), _>("SHOW GLOBAL VARIABLES LIKE 'super_read_only'")
        .await
        .map_err(|e| sql(ctx, "reading variables", e))?
        .is_empty()
    {
        return Err(ctx.fail_permanently(format!(
            "{ol}: MySQL (it has super_read_only): rejoin-mysql supports MariaDB GTID replication only"
        )));
    }
    // A replica must not take writes, whatever happens next.
    old.query_drop("SET GLOBAL read_only = ON")
        .await
        .map_err(|e| sql(ctx, "SET GLOBAL read_only = ON", e))?;
    let (host, port) = spec.source();
    if ctx.last("repointed").is_none() {
        repoint(spec, ctx, old, &host, port).await?;
    }
    let target = wait_caught_up(spec, ctx, old).await?;
    Ok(json!({
        "rejoined": true,
        "replicates-from": format!("{host}:{port}"),
        "caught-up-to": target,
        "from-gtid": ctx.last("from-gtid"),
        "errant": [],
    }))
}

/// No errant transactions on the old primary, then replication from the
/// new one at its own binlog position; journals `repointed`.
async fn repoint(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    old: &mut mysql_async::Conn,
    host: &str,
    port: u16,
) -> Result<()> {
    let ol = spec.old_primary.label();
    let sql = |ctx: &Ctx<'_>, what: &str, e: mysql_async::Error| {
        ctx.fail(format!("{ol}: {what}: {}", one_line(&e)))
    };
    let (os, ns, nsp, _) = spec.positions(old).await.map_err(|m| ctx.fail_with(m))?;
    let e = errant(&os, &ns, &nsp);
    if !e.is_empty() {
        ctx.record(
            json!({ "errant": e, "old-gtid-binlog-state": os, "new-gtid-binlog-state": ns }),
        )?;
        return Err(ctx.fail_permanently(format!(
            "{ol} has errant transactions that {} never got: {}; refusing to rejoin (replication would diverge). Inspect them (mariadb-binlog on the old primary), then rebuild the old primary from a backup of the new one",
            spec.new_primary.label(),
            e.join(", ")
        )));
    }
    let pw = spec
        .repl_secret()
        .read()
        .map_err(|e| ctx.fail(one_line(&e)))?
        .unwrap_or_default();
    old.query_drop("STOP SLAVE")
        .await
        .map_err(|e| sql(ctx, "STOP SLAVE", e))?;
    old.query_drop("SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos")
        .await
        .map_err(|e| sql(ctx, "SET GLOBAL gtid_slave_pos", e))?;
    // The statement carries the password: errors name the statement only.
    old.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {port}, MASTER_USER = {}, MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
        quote(host),
        quote(&spec.replication_user),
        quote(&pw)
    ))
    .await
    .map_err(|e| sql(ctx, "CHANGE MASTER TO", e))?;
    old.query_drop("START SLAVE")
        .await
        .map_err(|e| sql(ctx, "START SLAVE", e))?;
    let slave_pos = one(old, "SELECT @@global.gtid_slave_pos")
        .await
        .map_err(|e| sql(ctx, "reading gtid_slave_pos", e))?;
    ctx.record(json!({ "repointed": format!("{host}:{port}"), "from-gtid": slave_pos }))?;
    Ok(())
}

/// Wait until it has what the new primary had when we looked; a diverged
/// position or an SQL error ends the wait. Returns that position.
async fn wait_caught_up(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    old: &mut mysql_async::Conn,
) -> Result<String> {
    let ol = spec.old_primary.label();
    let sql = |ctx: &Ctx<'_>, what: &str, e: mysql_async::Error| {
        ctx.fail(format!("{ol}: {what}: {}", one_line(&e)))
    };
    let (_, _, _, target) = spec.positions(old).await.map_err(|m| ctx.fail_with(m))?;
    let t0 = std::time::Instant::now();
    loop {
        let r: Option<i64> = old
            .query_first(format!("SELECT MASTER_GTID_WAIT('{target}', 1)"))
            .await
            .map_err(|e| sql(ctx, "MASTER_GTID_WAIT", e))?;
        let f = slave_field(
            old,
            &[
                "Slave_IO_Running",
                "Slave_SQL_Running",
                "Last_IO_Error",
                "Last_SQL_Error",
            ],
        )
        .await
        .map_err(|e| sql(ctx, "SHOW SLAVE STATUS", e))?
        .unwrap_or_default();
        let get = |i: usize| f.get(i).cloned().unwrap_or_default();
        if !get(2).is_empty() && get(0) != "Yes" && get(2).contains("1236") {
            return Err(ctx.fail_permanently(format!(
                "{ol}: the new primary refuses its position (diverged): {}",
                get(2)
            )));
        }
        if !get(3).is_empty() {
            return Err(ctx.fail(format!("{ol}: replication SQL error: {}", get(3))));
        }
        if r == Some(0) && get(0) == "Yes" && get(1) == "Yes" {
            break;
        }
        if ctx.out_of_time(Duration::from_secs(1)) {
            return Err(ctx.fail(format!(
                "{ol}: not caught up with {target} after {} (IO {}, SQL {}, {})",
                human_duration(t0.elapsed()),
                get(0),
                get(1),
                get(2)
            )));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errant_transactions_are_what_the_new_primary_lacks() {
        // Promoted at 0-1-2780; the new primary wrote 0-2-2781..; the old had up to 0-1-5005.
        assert_eq!(
            errant("0-1-5005", "0-1-2780,0-2-2800", "0-1-2780"),
            vec!["0-1-2781..0-1-5005 (2225)"]
        );
        assert!(errant("0-1-2780", "0-1-2780,0-2-2800", "").is_empty());
        // Without log_slave_updates the new primary knows it from gtid_slave_pos.
        assert!(errant("0-1-2780", "0-2-2800", "0-1-2780").is_empty());
        assert_eq!(errant("0-1-11", "0-1-10", ""), vec!["0-1-11"]);
    }
}
