//! `promote-mysql`: the backup site's replica becomes the primary, in the
//! order that loses nothing it received (measured in
//! shared/notes/pitr-and-replicas.md §4, MariaDB 10.11 with GTID):
//!
//! 1. it must be a GTID replica whose SQL thread runs (or has nothing left);
//! 2. `STOP SLAVE IO_THREAD`: nothing new arrives from here on;
//! 3. read what it received (`Gtid_IO_Pos`), journal it;
//! 4. `MASTER_GTID_WAIT(received, t)` until the SQL thread applied all of it
//!    (bounded by the step's timeout);
//! 5. with `archive`, the top-up: `STOP SLAVE SQL_THREAD`, then the
//!    transactions of the old primary that the binlog archive holds and the
//!    replica never received are applied (as MHA applies differential relay
//!    logs), binlog on and GTIDs kept, so the promoted server's own replicas
//!    get them. The archive must be the replica's source's timeline (the
//!    newest segment's server id = `Master_Server_Id`), else refused by name;
//! 6. the data-loss guard (`max-data-loss`) against the old primary's last
//!    known position: from the old primary when it answers, else from the
//!    archive's head; the time span from the archive's commit times;
//! 7. `STOP SLAVE; RESET SLAVE ALL` (only now: doing it before the relay log
//!    is applied deletes the relay log, 2,225 of 5,000 transactions lost in
//!    the probe), `SET GLOBAL read_only = OFF`, journal the GTID position.
//!
//! Every point is safe to re-enter: while `SHOW SLAVE STATUS` still shows a
//! replica, an attempt runs the sequence again (each statement is idempotent
//! and the wait is instant when applied); once the replication config is
//! gone, only the journal's `applied` record allows going on (a server that
//! was never a replica is refused). The top-up is re-entered until its
//! `top-up-done` record: each attempt first waits for the named lock a
//! client orphaned by a kill -9 of cexdr still holds, then reads the
//! replica's position again, and the exact GTID filter applies only what is
//! after it (committed transactions are in the position; a cut one was
//! rolled back).
//!
//! MySQL 8 (`SHOW REPLICA STATUS`, `WAIT_FOR_EXECUTED_GTID_SET`) is refused by
//! name: only MariaDB's GTID replication was tested.
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Invalid, MysqlTarget, PreviewCtx, Step};
use crate::base::{human_duration, parse_duration, Secret};
use crate::error::{one_line, Result};
use crate::failover::archive::{ArchiveRef, ArchiveTopUp, Head};

/// The named lock the top-up's client session holds (see the module doc).
const TOPUP_LOCK: &str = "cexdr_promote_topup";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    /// The replica to promote (the promoter account needs SLAVE MONITOR,
    /// REPLICATION SLAVE ADMIN, RELOAD and READ_ONLY ADMIN).
    pub replica: MysqlTarget,
    /// The old primary, read (never written) for its last position when it
    /// answers: the evidence for the RPO and the data-loss guard.
    pub old_primary: Option<MysqlTarget>,
    /// `"30s"` (time) or `"100 transactions"`: the most the promoted
    /// database may lack. Unknown loss (old primary unreachable) counts as
    /// over budget. `--accept-data-loss` overrides, journaled.
    pub max_data_loss: Option<String>,
    /// Per connection (default 5s).
    pub connect_timeout: Option<crate::base::Dur>,
    /// The PITR binlog archive of the old primary: `{ policy = "…", job = "…" }`.
    /// What it holds beyond what the replica received is applied before
    /// promotion, and it dates the RPO.
    pub archive: Option<ArchiveRef>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Budget {
    Time(Duration),
    Transactions(u64),
}

/// A `max-data-loss` that is neither a duration nor a count.
#[derive(Debug, thiserror::Error)]
enum BudgetError {
    #[error("{0:?}: expected a count like \"100 transactions\"")]
    Count(String),
    #[error("{text:?}: a duration (\"30s\") or a count (\"100 transactions\"): {source}")]
    Neither {
        text: String,
        #[source]
        source: crate::base::DurationError,
    },
}

fn parse_budget(s: &str) -> std::result::Result<Budget, BudgetError> {
    let t = s.trim();
    for suffix in [" transactions", " transaction", " tx", "tx"] {
        if let Some(n) = t.strip_suffix(suffix) {
            return n
                .trim()
                .parse::<u64>()
                .map(Budget::Transactions)
                .map_err(|_| BudgetError::Count(s.to_owned()));
        }
    }
    parse_duration(t)
        .map(Budget::Time)
        .map_err(|source| BudgetError::Neither {
            text: s.to_owned(),
            source,
        })
}

/// MariaDB GTID positions: `domain-server-seq,...` → domain → (server, seq).
pub fn parse_gtids(s: &str) -> BTreeMap<u32, (u32, u64)> {
    s.split(',')
        .filter_map(|g| {
            let mut it = g.trim().splitn(3, '-');
            let d = it.next()?.parse().ok()?;
            let srv = it.next()?.parse().ok()?;
            let seq = it.next()?.parse().ok()?;
            Some((d, (srv, seq)))
        })
        .collect()
}

/// Transactions in `ahead` that `behind` lacks, per domain (sequence numbers
/// are contiguous within a domain under gtid_strict_mode).
pub fn lacking(ahead: &str, behind: &str) -> u64 {
    let (a, b) = (parse_gtids(ahead), parse_gtids(behind));
    a.iter()
        .map(|(d, (_, seq))| seq.saturating_sub(b.get(d).map(|x| x.1).unwrap_or(0)))
        .sum()
}

/// Per domain the later of two positions (`gtid_slave_pos` holds what
/// replication applied, `gtid_binlog_pos` what the top-up applied).
pub fn merge_positions(a: &str, b: &str) -> String {
    let mut m = parse_gtids(a);
    for (d, (srv, seq)) in parse_gtids(b) {
        let e = m.entry(d).or_insert((srv, seq));
        if seq > e.1 {
            *e = (srv, seq);
        }
    }
    m.iter()
        .map(|(d, (srv, seq))| format!("{d}-{srv}-{seq}"))
        .collect::<Vec<_>>()
        .join(",")
}

type Sql<T> = std::result::Result<T, mysql_async::Error>;

/// One row of `SHOW SLAVE STATUS` as name → value (None: not a replica).
async fn slave_status(c: &mut mysql_async::Conn) -> Sql<Option<BTreeMap<String, String>>> {
    let rows: Vec<mysql_async::Row> = c.query("SHOW SLAVE STATUS").await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let cols: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    let mut m = BTreeMap::new();
    for (i, name) in cols.into_iter().enumerate() {
        let v: Option<String> = row.get_opt(i).and_then(|r| r.ok()).flatten();
        m.insert(name, v.unwrap_or_default());
    }
    Ok(Some(m))
}

async fn one(c: &mut mysql_async::Conn, q: &str) -> Sql<String> {
    // Variables in their own SELECT (the notes' read_only gotcha).
    Ok(c.query_first::<Option<String>, _>(q)
        .await?
        .flatten()
        .unwrap_or_default())
}

impl Spec {
    fn check(&self) -> Invalid {
        self.replica
            .validate(false)
            .map_err(|(_, m)| ("replica", m))?;
        if let Some(p) = &self.old_primary {
            p.validate(false).map_err(|(_, m)| ("old-primary", m))?;
        }
        if let Some(b) = &self.max_data_loss {
            parse_budget(b).map_err(|m| ("max-data-loss", m.to_string()))?;
        }
        if let Some(a) = &self.archive {
            a.validate().map_err(|m| ("archive", m.to_string()))?;
        }
        Ok(())
    }

    fn budget(&self) -> Option<Budget> {
        self.max_data_loss
            .as_deref()
            .map(|b| parse_budget(b).expect("validated"))
    }

    fn timeout(&self) -> Duration {
        self.connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5))
    }

    fn lines(&self) -> Vec<String> {
        let mut v = vec![
            format!(
                "promote {}: STOP SLAVE IO_THREAD, wait until the SQL thread applied all it received, then STOP SLAVE, RESET SLAVE ALL, read_only = OFF",
                self.replica.label()
            ),
        ];
        match (&self.max_data_loss, &self.old_primary) {
            (Some(b), Some(p)) => v.push(format!(
                "refuse if it lacks more than {b} of {}'s last position (or the loss is unknown) unless --accept-data-loss",
                p.label()
            )),
            (Some(b), None) => v.push(format!(
                "max-data-loss {b}: without old-primary the loss is unknown, so the step needs --accept-data-loss"
            )),
            (None, _) => v.push("no max-data-loss guard".into()),
        }
        match &self.archive {
            Some(a) => v.push(format!(
                "before the reset, top up from the {}: apply (binlog on, GTIDs kept) what it holds of the replica's source beyond what the replica received; refuse if its timeline is another server's",
                a.label()
            )),
            None => v.push(
                "no binlog archive top-up (no `archive`): what the replica never received stays lost, and the RPO's time span is unknown".into(),
            ),
        }
        v
    }

    /// The old primary's `@@gtid_binlog_pos`, or why it is unknown.
    async fn old_position(&self) -> std::result::Result<String, super::Failure> {
        let Some(p) = &self.old_primary else {
            return Err("no old-primary in the runbook".into());
        };
        let mut c = p.connect(self.timeout()).await?;
        let pos = one(&mut c, "SELECT @@global.gtid_binlog_pos")
            .await
            .map_err(|e| super::Failure::caused(p.label(), e));
        let _ = c.disconnect().await;
        pos
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The archive as the step sees it: opened, and its head when it has one.
struct Opened {
    label: String,
    archive: std::sync::Arc<dyn ArchiveTopUp>,
    head: Option<Head>,
}

async fn open_archive(
    spec: &Spec,
    info: &super::RunInfo,
) -> std::result::Result<Option<Opened>, super::Failure> {
    let Some(r) = &spec.archive else {
        return Ok(None);
    };
    let Some(opener) = &info.archives else {
        return Err(format!(
            "archive: this cexdr run has no access to the {} (only `cexdr failover` provides it)",
            r.label()
        )
        .into());
    };
    let archive = opener
        .0
        .open(r)
        .await
        .map_err(|e| super::Failure::caused(r.label(), e))?;
    let head = archive
        .head()
        .await
        .map_err(|e| super::Failure::caused(r.label(), e))?;
    Ok(Some(Opened {
        label: r.label(),
        archive,
        head,
    }))
}

/// Why the archive's timeline is not the replica's source's, if it is not.
fn foreign_timeline(o: &Opened, master_server_id: Option<u32>) -> Option<String> {
    let h = o.head.as_ref()?;
    match master_server_id {
        Some(id) if id == h.server_id => None,
        Some(id) => Some(format!(
            "the {} ends on timeline {} (server {} at {}), but the replica replicates from server {id}: not the replica's source; refusing to apply another server's transactions",
            o.label, h.timeline, h.server_id, h.server_address
        )),
        None => Some(format!(
            "the {} ends on timeline {} (server {}), but the replica's source server id is unknown (Master_Server_Id is 0: it never connected); refusing to apply transactions that cannot be shown to be its source's",
            o.label, h.timeline, h.server_id
        )),
    }
}

/// Why applying the archive from `from` would leave a hole, if it would:
/// in a domain where the archive is ahead, its continuous stretch must start
/// at or before the replica's position.
fn hole(h: &Head, from: &str) -> Option<String> {
    let (start, have) = (parse_gtids(&h.stretch_start), parse_gtids(from));
    let holes: Vec<String> = parse_gtids(&h.position)
        .iter()
        .filter_map(|(d, (_, seq))| {
            let at = have.get(d).map(|x| x.1).unwrap_or(0);
            let begins = start.get(d).map(|x| x.1).unwrap_or(0);
            (*seq > at && begins > at).then(|| {
                format!("domain {d}: the replica is at seq {at}, the archive's continuous stretch starts after seq {begins}")
            })
        })
        .collect();
    (!holes.is_empty()).then(|| {
        format!(
            "not applied: the archive (timeline {}) cannot top the replica up without a hole ({})",
            h.timeline,
            holes.join("; ")
        )
    })
}

/// The commit time of GTID `d-srv-seq` from the archive.
async fn stamp(o: &Opened, d: u32, srv: u32, seq: u64) -> Option<chrono::DateTime<chrono::Utc>> {
    o.archive
        .commit_time(&format!("{d}-{srv}-{seq}"))
        .await
        .ok()
        .flatten()
}

/// The data-loss evidence: what the promoted database (position `have`)
/// lacks of the old primary's last known position, in transactions and in
/// time (commit time of the old primary's newest transaction minus that of
/// the promoted database's newest, per domain, the largest).
async fn loss(spec: &Spec, archive: Option<&Opened>, have: &str) -> Value {
    let head = archive.and_then(|o| o.head.as_ref());
    let (old, source) = match spec.old_position().await {
        Ok(old) => (Some(old), "old primary (it answered)".to_string()),
        Err(why) => match (archive, head) {
            (Some(o), Some(h)) => (
                Some(h.position.clone()),
                format!(
                    "{}, timeline {}, newest segment {} (the old primary did not answer: {why})",
                    o.label, h.timeline, h.newest_seq
                ),
            ),
            (Some(o), None) => (
                None,
                format!("unknown: {why}; the {} holds nothing", o.label),
            ),
            (None, _) => (
                None,
                format!("unknown: {why}; no binlog archive in the step (`archive`)"),
            ),
        },
    };
    let Some(old) = old else {
        return json!({
            "old-primary-position": Value::Null,
            "source": source,
            "promoted-position": have,
            "transactions": Value::Null,
            "seconds": Value::Null,
            "seconds-unknown": "the old primary's last position is unknown",
        });
    };
    let n = lacking(&old, have);
    let mut v = json!({
        "old-primary-position": old,
        "source": source,
        "promoted-position": have,
        "transactions": n,
        "seconds": Value::Null,
    });
    if n == 0 {
        v["seconds"] = json!(0);
        return v;
    }
    let Some(o) = archive else {
        v["seconds-unknown"] = json!("no binlog archive in the step: the commit times of the lacking transactions are only in the old primary's binlog, which is not read");
        return v;
    };
    let (oldg, haveg) = (parse_gtids(&old), parse_gtids(have));
    let mut span: Option<i64> = Some(0);
    let (mut newest_old, mut newest_have) = (None, None);
    let mut why = Vec::new();
    for (d, (srv, seq)) in &oldg {
        let had = haveg.get(d).copied();
        if had.map(|h| h.1).unwrap_or(0) >= *seq {
            continue;
        }
        let t_old = stamp(o, *d, *srv, *seq).await;
        // Nothing of the domain at all: the span starts at its first lacking one.
        let (hs, hq) = had.unwrap_or((*srv, 1));
        let t_have = stamp(o, *d, hs, hq).await;
        match (t_old, t_have) {
            (Some(a), Some(b)) => {
                span = span.map(|s| s.max((a - b).num_seconds().max(0)));
                newest_old = newest_old.max(Some(a));
                newest_have = newest_have.max(Some(b));
            }
            (None, _) => {
                span = None;
                why.push(format!("the old primary's newest transaction {d}-{srv}-{seq} is not in the {} (archived up to {})", o.label, head.map(|h| h.position.as_str()).unwrap_or("nothing")));
            }
            (_, None) => {
                span = None;
                why.push(format!(
                    "the promoted database's newest transaction {d}-{hs}-{hq} is not in the {}",
                    o.label
                ));
            }
        }
    }
    v["seconds"] = span.map(|s| json!(s)).unwrap_or(Value::Null);
    if let Some(t) = newest_old {
        v["old-newest-commit"] = json!(rfc3339(t));
    }
    if let Some(t) = newest_have {
        v["promoted-newest-commit"] = json!(rfc3339(t));
    }
    if !why.is_empty() {
        v["seconds-unknown"] = json!(why.join("; "));
    }
    v
}

/// `Some(reason)` when the loss is over budget (or unknown with a budget).
fn over_budget(budget: Option<Budget>, loss: &Value) -> Option<String> {
    let b = budget?;
    let tx = loss["transactions"].as_u64();
    match (b, tx) {
        (_, None) => Some(format!(
            "the data loss is unknown ({})",
            loss["source"].as_str().unwrap_or("?")
        )),
        (Budget::Transactions(max), Some(n)) if n > max => Some(format!(
            "the replica lacks {n} transaction(s) of the old primary's {}; max-data-loss is {max}",
            loss["old-primary-position"].as_str().unwrap_or("?")
        )),
        // Commit times are whole seconds: a span measured as S seconds may
        // be up to (not including) S + 1, which must fit the budget.
        (Budget::Time(d), Some(n)) if n > 0 => match loss["seconds"].as_u64() {
            Some(s) if Duration::from_secs(s + 1) <= d => None,
            Some(s) => Some(format!(
                "the replica lacks {n} transaction(s) of the old primary spanning {s} s of commits (up to {} s at whole-second precision); max-data-loss is {}",
                s + 1,
                human_duration(d)
            )),
            None => Some(format!(
                "the replica lacks {n} transaction(s) of the old primary; their age is not known ({}), so the {} budget cannot be shown to hold",
                loss["seconds-unknown"].as_str().unwrap_or("no commit times"),
                human_duration(d)
            )),
        },
        _ => None,
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
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }
    fn secrets(&self) -> Vec<Secret> {
        std::iter::once(&self.replica)
            .chain(&self.old_primary)
            .map(MysqlTarget::secret)
            .collect()
    }

    async fn preview(&self, ctx: &PreviewCtx<'_>) -> Result<Value> {
        let mut c = self
            .replica
            .connect(self.timeout())
            .await
            .map_err(|m| super::failed_with(ctx.step, m, false))?;
        let st = slave_status(&mut c).await;
        let applied = one(&mut c, "SELECT @@global.gtid_slave_pos").await;
        let binlog_pos = one(&mut c, "SELECT @@global.gtid_binlog_pos").await;
        let _ = c.disconnect().await;
        let st = st.map_err(|e| super::step_error(ctx.step, one_line(&e)))?;
        let applied = applied.unwrap_or_default();
        let Some(st) = st else {
            return Ok(
                json!({ "replica": self.replica.label(), "is-replica": false, "would": "refuse: not a replica" }),
            );
        };
        let mut have = merge_positions(&applied, &binlog_pos.unwrap_or_default());
        let mut top_up = Value::Null;
        let mut refuse = None;
        let archive = match open_archive(self, ctx.info).await {
            Ok(a) => a,
            Err(e) => {
                refuse = Some(format!("refuse: {e}"));
                None
            }
        };
        if let Some(o) = &archive {
            let master = st
                .get("Master_Server_Id")
                .and_then(|x| x.parse::<u32>().ok())
                .filter(|x| *x != 0);
            top_up = match (&o.head, foreign_timeline(o, master)) {
                (_, Some(why)) => {
                    refuse = Some(format!("refuse: {why}"));
                    json!({ "archive": o.label, "refuse": why })
                }
                (None, None) => {
                    json!({ "archive": o.label, "head": Value::Null, "would-apply": 0 })
                }
                (Some(h), None) => {
                    let gap = hole(h, &have);
                    let n = if gap.is_some() {
                        0
                    } else {
                        lacking(&h.position, &have)
                    };
                    let v = json!({
                        "archive": o.label,
                        "timeline": h.timeline,
                        "stretch-start": h.stretch_start,
                        "head": h.position,
                        "newest-commit": h.newest_commit.map(rfc3339),
                        "would-apply": n,
                        "not-applied": gap,
                    });
                    // The guard below sees the replica as the top-up leaves it.
                    if n > 0 {
                        have = merge_positions(&have, &h.position);
                    }
                    v
                }
            };
        }
        let loss = loss(self, archive.as_ref(), &have).await;
        let would = match (refuse, over_budget(self.budget(), &loss)) {
            (Some(r), _) => r,
            (None, Some(why)) => format!("refuse unless --accept-data-loss: {why}"),
            (None, None) => "promote".into(),
        };
        Ok(json!({
            "replica": self.replica.label(),
            "is-replica": true,
            "using-gtid": st.get("Using_Gtid"),
            "io-running": st.get("Slave_IO_Running"),
            "sql-running": st.get("Slave_SQL_Running"),
            "received": st.get("Gtid_IO_Pos"),
            "applied": applied,
            "archive-top-up": top_up,
            "data-loss": loss,
            "would": would,
        }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let label = self.replica.label();
        let mut c = self
            .replica
            .connect(self.timeout())
            .await
            .map_err(|m| ctx.fail_with(m))?;
        let r = promote(self, ctx, &mut c).await;
        let _ = c.disconnect().await;
        r.map(|mut v| {
            v["replica"] = json!(label);
            v
        })
    }
}

/// What the server was when the step (re-)entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Still a replica: it is drained, then its replication is reset.
    Replica,
    /// Replication already reset by this run (a crash after RESET SLAVE
    /// ALL): the journal's `applied` brought us here.
    Reset,
}

/// A failed statement, named with the replica and what it did.
fn sql_fail(spec: &Spec, ctx: &Ctx<'_>, what: &str, e: mysql_async::Error) -> crate::error::Error {
    ctx.fail(format!(
        "{}: {what}: {}",
        spec.replica.label(),
        one_line(&e)
    ))
}

/// The promotion, phase by phase (module doc): check the server, drain
/// the replica (1-4), top up from the archive (5), guard the data loss
/// (6), make it the primary (7), and say what was done.
async fn promote(spec: &Spec, ctx: &mut Ctx<'_>, c: &mut mysql_async::Conn) -> Result<Value> {
    let role = check_server(spec, ctx, c).await?;
    let applied = ctx
        .last("applied")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let archive = top_up_from_archive(spec, ctx, c, role).await?;
    let loss = guard_data_loss(spec, ctx, c, &applied, archive.as_ref()).await?;
    let (binlog_pos, current_pos) = make_primary(spec, ctx, c, role).await?;
    Ok(json!({
        "promoted": true,
        "received": ctx.last("received"),
        "applied": applied,
        "gtid-binlog-pos": binlog_pos,
        "gtid-current-pos": current_pos,
        "data-loss": loss,
        "accepted-data-loss": ctx.last("accepted-data-loss"),
        "archive-top-up": ctx.last("top-up-done").cloned().unwrap_or_else(|| match &spec.archive {
            Some(_) => json!("not needed"),
            None => json!("no archive in the step"),
        }),
    }))
}

/// MariaDB, and either a replica (then drained: points 1-4) or the one
/// this run already promoted past its wait; anything else is refused.
async fn check_server(spec: &Spec, ctx: &mut Ctx<'_>, c: &mut mysql_async::Conn) -> Result<Role> {
    let is_mysql = !c
        .query::<(String, String), _>("SHOW GLOBAL VARIABLES LIKE 'super_read_only'")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading variables", e))?
        .is_empty();
    if is_mysql {
        return Err(ctx.fail_permanently(format!(
            "{}: MySQL (it has super_read_only): promote-mysql supports MariaDB GTID replicas only; use an exec hook for MySQL 8",
            spec.replica.label()
        )));
    }
    let status = slave_status(c)
        .await
        .map_err(|e| sql_fail(spec, ctx, "SHOW SLAVE STATUS", e))?;
    let applied_before = ctx.last("applied").cloned();
    match status {
        Some(st) => {
            start_applying(spec, ctx, c, &st).await?;
            let received = stop_receiving(spec, ctx, c, &st).await?;
            wait_applied(spec, ctx, c, &received).await?;
            Ok(Role::Replica)
        }
        None if applied_before.is_some() => Ok(Role::Reset),
        // No replication config and no journaled wait: never our replica.
        None => Err(ctx.fail_permanently(format!(
            "{}: not a replica (SHOW SLAVE STATUS is empty) and this run never promoted it; refusing to make a second primary",
            spec.replica.label()
        ))),
    }
}

/// Point 1: a GTID replica whose SQL thread can apply what it has.
async fn start_applying(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    st: &BTreeMap<String, String>,
) -> Result<()> {
    let get = |k: &str| st.get(k).cloned().unwrap_or_default();
    let recovering = ctx.last("relay-recovery").is_some();
    if get("Using_Gtid").eq_ignore_ascii_case("no") && !recovering {
        return Err(ctx.fail_permanently(format!(
            "{}: replicates by file and position (Using_Gtid = No); promote-mysql needs GTID replication (MASTER_USE_GTID = slave_pos)",
            spec.replica.label()
        )));
    }
    if get("Slave_SQL_Running") == "Yes" {
        return Ok(());
    }
    let err = get("Last_SQL_Error");
    if !err.is_empty() {
        return Err(ctx.fail(format!(
            "{}: the SQL thread stopped with an error ({err}); it cannot apply what the replica received: fix it and resume",
            spec.replica.label(),
        )));
    }
    if get("Slave_IO_Running") == "No" && !recovering {
        return recover_relay_log(spec, ctx, c, st).await;
    }
    // The IO thread runs (or the relay log is being recovered):
    // starting the SQL thread keeps the relay log.
    c.query_drop("START SLAVE SQL_THREAD")
        .await
        .map_err(|e| sql_fail(spec, ctx, "START SLAVE SQL_THREAD", e))
}

/// Both threads stopped (an operator's STOP SLAVE, or a crash after
/// ours). With GTID, MariaDB discards the relay log at the next START
/// (measured): whatever was received but not applied would be lost. So
/// apply it by relay-log position first; with nothing pending, leave both
/// stopped.
async fn recover_relay_log(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    st: &BTreeMap<String, String>,
) -> Result<()> {
    let get = |k: &str| st.get(k).cloned().unwrap_or_default();
    let received = get("Gtid_IO_Pos");
    let applied = one(c, "SELECT @@global.gtid_slave_pos")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading gtid_slave_pos", e))?;
    if lacking(&received, &applied) == 0 {
        return Ok(());
    }
    let (file, pos) = (get("Relay_Log_File"), get("Relay_Log_Pos"));
    if file.is_empty() || pos.parse::<u64>().is_err() {
        return Err(ctx.fail_permanently(format!(
            "{}: both replication threads are stopped with transactions received but not applied (received {received}, applied {applied}) and no relay-log position to apply them from",
            spec.replica.label()
        )));
    }
    ctx.record(json!({ "received": received, "relay-recovery": { "file": file, "pos": pos, "applied-before": applied } }))?;
    c.query_drop(format!(
        "CHANGE MASTER TO MASTER_USE_GTID = no, RELAY_LOG_FILE = '{}', RELAY_LOG_POS = {pos}",
        file.replace('\'', "")
    ))
    .await
    .map_err(|e| sql_fail(spec, ctx, "CHANGE MASTER TO RELAY_LOG_FILE", e))?;
    c.query_drop("START SLAVE SQL_THREAD")
        .await
        .map_err(|e| sql_fail(spec, ctx, "START SLAVE SQL_THREAD", e))
}

/// Points 2 and 3: nothing new arrives from the (dead or fenced) primary;
/// what it received is journaled before the wait (with the primary it came from).
async fn stop_receiving(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    st: &BTreeMap<String, String>,
) -> Result<String> {
    let get = |k: &str| st.get(k).cloned().unwrap_or_default();
    c.query_drop("STOP SLAVE IO_THREAD")
        .await
        .map_err(|e| sql_fail(spec, ctx, "STOP SLAVE IO_THREAD", e))?;
    let received = match slave_status(c)
        .await
        .map_err(|e| sql_fail(spec, ctx, "SHOW SLAVE STATUS", e))?
    {
        Some(st) => st.get("Gtid_IO_Pos").cloned().unwrap_or_default(),
        None => String::new(),
    };
    let journaled = ctx
        .last("received")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let received = if !received.is_empty() {
        received
    } else if !journaled.is_empty() {
        journaled
    } else {
        one(c, "SELECT @@global.gtid_slave_pos")
            .await
            .map_err(|e| sql_fail(spec, ctx, "reading gtid_slave_pos", e))?
    };
    let master_id = get("Master_Server_Id")
        .parse::<u32>()
        .ok()
        .filter(|x| *x != 0);
    ctx.record(json!({ "received": received, "master": format!("{}:{}", get("Master_Host"), get("Master_Port")), "master-server-id": master_id }))?;
    Ok(received)
}

/// Point 4: wait until the SQL thread applied all it received; journal `applied`.
async fn wait_applied(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    received: &str,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let left = ctx
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let wait = left
            .saturating_sub(Duration::from_secs(1))
            .min(Duration::from_secs(5))
            .as_secs()
            .max(1);
        let r: Option<i64> = c
            .query_first(format!("SELECT MASTER_GTID_WAIT('{received}', {wait})"))
            .await
            .map_err(|e| sql_fail(spec, ctx, "MASTER_GTID_WAIT", e))?;
        if r == Some(0) {
            break;
        }
        if ctx.out_of_time(Duration::from_secs(wait)) {
            let applied = one(c, "SELECT @@global.gtid_slave_pos")
                .await
                .unwrap_or_default();
            return Err(ctx.fail(format!(
                "{}: the SQL thread has not applied all it received after {} (received {received}, applied {applied}); nothing was reset: resume to keep waiting",
                spec.replica.label(),
                human_duration(t0.elapsed())
            )));
        }
    }
    let applied = one(c, "SELECT @@global.gtid_slave_pos")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading gtid_slave_pos", e))?;
    ctx.record(json!({ "applied": applied, "apply-wait-ms": t0.elapsed().as_millis() as u64 }))
}

/// Point 5: the top-up from the binlog archive (before anything
/// irreversible); returns the opened archive, which the guard reads too.
async fn top_up_from_archive(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    role: Role,
) -> Result<Option<Opened>> {
    let archive = if ctx.last("data-loss").is_some() && ctx.last("top-up-done").is_some() {
        None // a resume after the guard: both are journaled
    } else {
        open_archive(spec, ctx.info)
            .await
            .map_err(|m| ctx.fail_with(m))?
    };
    if let Some(o) = &archive {
        if ctx.last("top-up-done").is_none() {
            top_up(spec, ctx, c, o, role).await?;
        }
    }
    Ok(archive)
}

/// Point 6: the data-loss guard, against what the promoted database now
/// has (journaled once; a resume reads it back).
async fn guard_data_loss(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    applied: &str,
    archive: Option<&Opened>,
) -> Result<Value> {
    let loss = match ctx.last("data-loss").cloned() {
        Some(l) => l,
        None => {
            let slave = one(c, "SELECT @@global.gtid_slave_pos")
                .await
                .map_err(|e| sql_fail(spec, ctx, "reading gtid_slave_pos", e))?;
            let binlog = one(c, "SELECT @@global.gtid_binlog_pos")
                .await
                .map_err(|e| sql_fail(spec, ctx, "reading gtid_binlog_pos", e))?;
            let have = merge_positions(&merge_positions(applied, &slave), &binlog);
            let l = loss(spec, archive, &have).await;
            ctx.record(json!({ "data-loss": l }))?;
            l
        }
    };
    if let Some(why) = over_budget(spec.budget(), &loss) {
        if !ctx.info.accept_data_loss {
            return Err(ctx.fail_permanently(format!(
                "{why}: refusing to promote {} (max-data-loss {}); the replica is unchanged but its IO thread is stopped. --accept-data-loss promotes anyway (journaled)",
                spec.replica.label(),
                spec.max_data_loss.as_deref().unwrap_or("?")
            )));
        }
        if ctx.last("accepted-data-loss").is_none() {
            ctx.forced(format!("--accept-data-loss: {why}"))?;
            ctx.record(json!({ "accepted-data-loss": why }))?;
        }
    }
    Ok(loss)
}

/// Point 7, only now: replication off, writable; the new primary's
/// positions, journaled.
async fn make_primary(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    role: Role,
) -> Result<(String, String)> {
    if role == Role::Replica {
        c.query_drop("STOP SLAVE")
            .await
            .map_err(|e| sql_fail(spec, ctx, "STOP SLAVE", e))?;
        c.query_drop("RESET SLAVE ALL")
            .await
            .map_err(|e| sql_fail(spec, ctx, "RESET SLAVE ALL", e))?;
    }
    c.query_drop("SET GLOBAL read_only = OFF")
        .await
        .map_err(|e| sql_fail(spec, ctx, "SET GLOBAL read_only = OFF", e))?;
    let binlog_pos = one(c, "SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading gtid_binlog_pos", e))?;
    let current_pos = one(c, "SELECT @@global.gtid_current_pos")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading gtid_current_pos", e))?;
    let promoted_at = chrono::Utc::now().to_rfc3339();
    ctx.record(json!({ "promoted": true, "gtid-binlog-pos": binlog_pos, "gtid-current-pos": current_pos, "at": promoted_at }))?;
    Ok((binlog_pos, current_pos))
}

/// The top-up (module doc, point 5): journals `top-up` before it applies
/// and `top-up-done` (count, first and last GTID, last commit time) after.
/// Phases: check the archive and the server, quiesce, plan the stretch,
/// apply it, record what was applied.
async fn top_up(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    o: &Opened,
    role: Role,
) -> Result<()> {
    let Some(head) = check_top_up(spec, ctx, c, o).await? else {
        return Ok(());
    };
    quiesce_for_top_up(spec, ctx, c, role).await?;
    let Some(stretch) = plan_top_up(spec, ctx, c, o, head).await? else {
        return Ok(());
    };
    let t0 = std::time::Instant::now();
    let applied = apply_top_up(spec, ctx, o, &stretch.from).await?;
    record_top_up(spec, ctx, c, o, &stretch, &applied, t0).await
}

/// What a top-up applies: the archive's head, where this attempt starts,
/// and where the first attempt of the run started (what the count is from).
struct Stretch {
    head: Head,
    from: String,
    first_from: String,
}

/// The archive's timeline is this replica's, and the server can record
/// what is applied; the archive's head, or None when it holds nothing
/// (then `top-up-done` is journaled here).
async fn check_top_up(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    o: &Opened,
) -> Result<Option<Head>> {
    let label = spec.replica.label();
    let master = ctx
        .progress
        .iter()
        .rev()
        .find_map(|p| p.get("master-server-id"))
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok());
    if let Some(why) = foreign_timeline(o, master) {
        return Err(ctx.fail_permanently(why));
    }
    let Some(head) = o.head.clone() else {
        ctx.record(json!({ "top-up-done": { "archive": o.label, "transactions": 0, "why": "the archive holds nothing" } }))?;
        return Ok(None);
    };
    // Without the binlog the applied GTIDs would be in no position: a
    // resume could not tell what was applied, and no replica would get them.
    if one(c, "SELECT @@global.log_bin")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading log_bin", e))?
        != "1"
    {
        return Err(ctx.fail_permanently(format!(
            "{label}: binary logging is off (log_bin = 0): a top-up from the {} needs it on the promoted server (its position records what was applied; its replicas get them)",
            o.label
        )));
    }
    Ok(Some(head))
}

/// The replica's SQL thread stopped, and no client of a killed cexdr
/// still applying (it holds the top-up lock: wait for it).
async fn quiesce_for_top_up(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    role: Role,
) -> Result<()> {
    let label = spec.replica.label();
    if role == Role::Replica {
        c.query_drop("STOP SLAVE SQL_THREAD")
            .await
            .map_err(|e| sql_fail(spec, ctx, "STOP SLAVE SQL_THREAD", e))?;
    }
    let left = ctx
        .deadline
        .saturating_duration_since(tokio::time::Instant::now());
    let wait = left
        .saturating_sub(Duration::from_secs(1))
        .as_secs()
        .clamp(1, 30);
    let got: Option<i64> = c
        .query_first(format!("SELECT GET_LOCK('{TOPUP_LOCK}', {wait})"))
        .await
        .map_err(|e| sql_fail(spec, ctx, "GET_LOCK", e))?;
    if got != Some(1) {
        return Err(ctx.fail(format!(
            "{label}: another session holds the lock {TOPUP_LOCK} after {wait} s (an earlier top-up's client still applying?); resume to wait again"
        )));
    }
    c.query_drop(format!("DO RELEASE_LOCK('{TOPUP_LOCK}')"))
        .await
        .map_err(|e| sql_fail(spec, ctx, "RELEASE_LOCK", e))
}

/// Where the stretch starts, journaled as `top-up` before anything is
/// applied; None when it would leave a hole (`top-up-done` says why).
async fn plan_top_up(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    o: &Opened,
    head: Head,
) -> Result<Option<Stretch>> {
    let slave = one(c, "SELECT @@global.gtid_slave_pos")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading gtid_slave_pos", e))?;
    let binlog = one(c, "SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading gtid_binlog_pos", e))?;
    let from = merge_positions(&slave, &binlog);
    let first_from = match ctx.last("top-up").and_then(|t| t["from"].as_str()) {
        Some(f) => f.to_owned(),
        None => from.clone(),
    };
    // A stretch that starts after the replica's position would leave a hole:
    // nothing is applied, and the guard counts what stays lacking.
    if let Some(why) = hole(&head, &from) {
        ctx.record(json!({ "top-up-done": {
            "archive": o.label, "timeline": head.timeline, "head": head.position,
            "from": first_from, "transactions": 0, "not-applied": why,
        } }))?;
        return Ok(None);
    }
    ctx.record(json!({ "top-up": {
        "archive": o.label, "timeline": head.timeline, "head": head.position,
        "from": first_from, "attempt-from": from,
    } }))?;
    Ok(Some(Stretch {
        head,
        from,
        first_from,
    }))
}

/// The archive applies its transactions after `from` to the replica.
async fn apply_top_up(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    o: &Opened,
    from: &str,
) -> Result<crate::failover::archive::Applied> {
    let label = spec.replica.label();
    let opts = mysql_async::Opts::from_url(&spec.replica.url)
        .map_err(|e| ctx.fail(format!("{label}: {e}")))?;
    let password = spec
        .replica
        .secret()
        .read()
        .map_err(|e| ctx.fail(format!("{label}: {}", one_line(&e))))?;
    let target = crate::failover::archive::Target {
        host: opts.ip_or_hostname().to_string(),
        port: opts.tcp_port(),
        user: opts.user().unwrap_or("root").to_string(),
        password,
        lock: TOPUP_LOCK.into(),
    };
    o.archive.apply(from, &target).await.map_err(|e| {
        ctx.fail_with(super::Failure::caused(
            format_args!("top-up of {label} from the {}", o.label),
            e,
        ))
    })
}

/// The server's position must cover what was sent; `top-up-done` counts
/// from the first attempt's position.
async fn record_top_up(
    spec: &Spec,
    ctx: &mut Ctx<'_>,
    c: &mut mysql_async::Conn,
    o: &Opened,
    stretch: &Stretch,
    applied: &crate::failover::archive::Applied,
    t0: std::time::Instant,
) -> Result<()> {
    let label = spec.replica.label();
    let Stretch {
        head,
        from,
        first_from,
    } = stretch;
    let binlog = one(c, "SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(|e| sql_fail(spec, ctx, "reading gtid_binlog_pos", e))?;
    let after = merge_positions(from, &binlog);
    if lacking(&applied.last_gtid, &after) > 0 {
        return Err(ctx.fail(format!(
            "top-up of {label}: the archive's transactions up to {} were sent but the server's position is {after}",
            applied.last_gtid
        )));
    }
    // The newest applied transaction's commit time (the RPO's other end).
    let mut last_commit = None;
    for (d, (srv, seq)) in parse_gtids(&after) {
        if seq > parse_gtids(first_from).get(&d).map(|x| x.1).unwrap_or(0) {
            last_commit = last_commit.max(stamp(o, d, srv, seq).await);
        }
    }
    let total = lacking(&after, first_from);
    let first = if total == 0 {
        String::new()
    } else if from == first_from {
        applied.first_gtid.clone()
    } else {
        // The first GTID after the first attempt's position, per domain.
        parse_gtids(&after)
            .iter()
            .filter_map(|(d, (srv, seq))| {
                let f = parse_gtids(first_from).get(d).map(|x| x.1).unwrap_or(0);
                (*seq > f).then(|| format!("{d}-{srv}-{}", f + 1))
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    ctx.record(json!({ "top-up-done": {
        "archive": o.label,
        "timeline": head.timeline,
        "head": head.position,
        "from": first_from,
        "transactions": total,
        "first-gtid": first,
        "last-gtid": if total == 0 { Value::Null } else { json!(after) },
        "last-commit": last_commit.map(rfc3339),
        "this-attempt": applied.transactions,
        "apply-ms": t0.elapsed().as_millis() as u64,
    } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_and_gtid_arithmetic() {
        assert_eq!(
            parse_budget("30s").unwrap(),
            Budget::Time(Duration::from_secs(30))
        );
        assert_eq!(
            parse_budget("100 transactions").unwrap(),
            Budget::Transactions(100)
        );
        assert_eq!(parse_budget("0 tx").unwrap(), Budget::Transactions(0));
        assert!(parse_budget("many").is_err());
        assert_eq!(lacking("0-1-5005", "0-1-2780"), 2225);
        assert_eq!(lacking("0-1-10,1-1-7", "0-2-12"), 7);
        assert_eq!(lacking("0-1-10", "0-1-10"), 0);
        let unknown = json!({ "transactions": null, "source": "unknown: x" });
        assert!(over_budget(Some(Budget::Transactions(5)), &unknown).is_some());
        assert!(over_budget(None, &unknown).is_none());
        let some = json!({ "transactions": 3, "old-primary-position": "0-1-3" });
        assert!(over_budget(Some(Budget::Transactions(5)), &some).is_none());
        assert!(over_budget(Some(Budget::Transactions(2)), &some).is_some());
        assert!(over_budget(Some(Budget::Time(Duration::from_secs(9))), &some).is_some());
        let dated = json!({ "transactions": 3, "seconds": 4 });
        assert!(over_budget(Some(Budget::Time(Duration::from_secs(5))), &dated).is_none());
        assert!(over_budget(Some(Budget::Time(Duration::from_secs(4))), &dated).is_some());
        assert_eq!(merge_positions("0-1-5,1-1-2", "0-2-7"), "0-2-7,1-1-2");
        assert_eq!(merge_positions("0-1-9", "0-2-7"), "0-1-9");
    }

    /// Commit seconds by sequence number (domain 0), for the RPO arithmetic.
    struct Stamps(BTreeMap<u64, i64>, Option<Head>);

    #[async_trait]
    impl ArchiveTopUp for Stamps {
        async fn head(
            &self,
        ) -> std::result::Result<Option<Head>, crate::failover::archive::ArchiveError> {
            Ok(self.1.clone())
        }
        async fn commit_time(
            &self,
            gtid: &str,
        ) -> std::result::Result<
            Option<chrono::DateTime<chrono::Utc>>,
            crate::failover::archive::ArchiveError,
        > {
            let (_, (_, seq)) = parse_gtids(gtid).into_iter().next().unwrap();
            Ok(self
                .0
                .get(&seq)
                .map(|t| chrono::DateTime::from_timestamp(*t, 0).unwrap()))
        }
        async fn apply(
            &self,
            _: &str,
            _: &crate::failover::archive::Target,
        ) -> std::result::Result<
            crate::failover::archive::Applied,
            crate::failover::archive::ArchiveError,
        > {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn the_rpo_time_span_comes_from_the_archive_commit_times() {
        let spec: Spec =
            toml::from_str("replica = { url = \"mysql://r@127.0.0.1:1/\" }\n").unwrap();
        let head = Head {
            timeline: "0001-s1".into(),
            server_id: 1,
            server_address: "p:3306".into(),
            position: "0-1-10".into(),
            stretch_start: "0-1-0".into(),
            newest_commit: None,
            newest_seq: 4,
        };
        let o = Opened {
            label: "binlog archive of job j".into(),
            archive: std::sync::Arc::new(Stamps([(7, 100), (10, 112)].into(), Some(head.clone()))),
            head: Some(head),
        };
        // Old primary unreachable (none in the spec): the archive's head counts.
        let l = loss(&spec, Some(&o), "0-1-7").await;
        assert_eq!(
            (l["transactions"].as_u64(), l["seconds"].as_u64()),
            (Some(3), Some(12)),
            "{l}"
        );
        assert!(
            l["source"]
                .as_str()
                .unwrap()
                .contains("binlog archive of job j, timeline 0001-s1"),
            "{l}"
        );
        assert_eq!(l["old-newest-commit"], "1970-01-01T00:01:52Z");
        let l = loss(&spec, Some(&o), "0-1-10").await;
        assert_eq!(
            (l["transactions"].as_u64(), l["seconds"].as_u64()),
            (Some(0), Some(0))
        );
        // The promoted database's newest transaction is not archived: unknown, and why.
        let l = loss(&spec, Some(&o), "0-1-5").await;
        assert!(
            l["seconds"].is_null() && l["seconds-unknown"].as_str().unwrap().contains("0-1-5"),
            "{l}"
        );
        // No archive, old primary unknown: nothing is known.
        let l = loss(&spec, None, "0-1-5").await;
        assert!(l["transactions"].is_null() && l["seconds"].is_null(), "{l}");
        // A foreign timeline is named.
        let why = foreign_timeline(&o, Some(2)).unwrap();
        assert!(
            why.contains("timeline 0001-s1") && why.contains("replicates from server 2"),
            "{why}"
        );
        assert!(foreign_timeline(&o, Some(1)).is_none());
        assert!(foreign_timeline(&o, None).unwrap().contains("unknown"));
        let h = o.head.as_ref().unwrap();
        assert!(hole(h, "0-1-3").is_none());
        let later = Head {
            stretch_start: "0-1-5".into(),
            ..h.clone()
        };
        assert!(hole(&later, "0-1-3")
            .unwrap()
            .contains("starts after seq 5"));
        assert!(hole(&later, "0-1-5").is_none());
        assert!(
            hole(&later, "0-1-10").is_none(),
            "nothing to apply: no hole"
        );
    }
}
