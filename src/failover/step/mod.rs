//! Failover steps. `StepKind` is the serde-tagged spec of every kind and
//! `build()` is the one place that turns a spec into a runnable `Step`.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::base::Secret;
use crate::error::{Error, Result};
use crate::failover::journal::{Journal, Record};
use crate::failover::runbook::{Runbook, StepSpec};

pub mod check_primary;
pub mod dns;
pub mod exec;
pub mod fence;
pub mod notify;
pub mod scale;
pub mod verify;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepKind {
    CheckPrimary(check_primary::Spec),
    FenceMysql(fence::Spec),
    DnsSwitch(dns::Spec),
    ScaleUp(scale::Spec),
    Verify(verify::Spec),
    Notify(notify::Spec),
    Exec(exec::Spec),
}

impl StepKind {
    pub const NAMES: [&'static str; 7] = [
        "check-primary",
        "fence-mysql",
        "dns-switch",
        "scale-up",
        "verify",
        "notify",
        "exec",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            StepKind::CheckPrimary(_) => "check-primary",
            StepKind::FenceMysql(_) => "fence-mysql",
            StepKind::DnsSwitch(_) => "dns-switch",
            StepKind::ScaleUp(_) => "scale-up",
            StepKind::Verify(_) => "verify",
            StepKind::Notify(_) => "notify",
            StepKind::Exec(_) => "exec",
        }
    }

    /// Checks that need no I/O; `Err((key, message))`.
    pub fn validate(
        &self,
        channels: &BTreeSet<String>,
    ) -> std::result::Result<(), (&'static str, String)> {
        match self {
            StepKind::CheckPrimary(s) => s.validate(),
            StepKind::FenceMysql(s) => s.validate(),
            StepKind::DnsSwitch(s) => s.validate(),
            StepKind::ScaleUp(s) => s.validate(),
            StepKind::Verify(s) => s.validate(),
            StepKind::Notify(s) => s.validate(channels),
            StepKind::Exec(s) => s.validate(),
        }
    }

    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(match self {
            StepKind::CheckPrimary(_) | StepKind::FenceMysql(_) | StepKind::Notify(_) => 60,
            StepKind::DnsSwitch(_) | StepKind::ScaleUp(_) | StepKind::Verify(_) => 600,
            StepKind::Exec(_) => 300,
        })
    }

    /// Plain-words lines for the plan.
    pub fn describe(&self) -> Vec<String> {
        match self {
            StepKind::CheckPrimary(s) => s.describe(),
            StepKind::FenceMysql(s) => s.describe(),
            StepKind::DnsSwitch(s) => s.describe(),
            StepKind::ScaleUp(s) => s.describe(),
            StepKind::Verify(s) => s.describe(),
            StepKind::Notify(s) => s.describe(),
            StepKind::Exec(s) => s.describe(),
        }
    }
}

/// What a running step can see and write.
pub struct Ctx<'a> {
    pub run: &'a str,
    pub step: &'a str,
    pub runbook: &'a Runbook,
    pub force: bool,
    /// The step must give up (with its own, more precise error) before this.
    pub deadline: Instant,
    pub cancel: CancellationToken,
    /// `step-progress` data from earlier attempts and runs, oldest first.
    pub progress: Vec<Value>,
    pub journal: &'a mut Journal,
}

impl Ctx<'_> {
    /// Journals progress (fsync) before the step goes on.
    pub fn record(&mut self, data: Value) -> Result<()> {
        self.journal.append(Record::StepProgress {
            step: self.step.to_owned(),
            data: data.clone(),
        })?;
        self.progress.push(data);
        Ok(())
    }

    /// The latest journaled value of `key` for this step.
    pub fn last(&self, key: &str) -> Option<&Value> {
        self.progress.iter().rev().find_map(|p| p.get(key))
    }

    pub fn forced(&mut self, reason: String) -> Result<()> {
        self.journal.append(Record::Forced {
            step: Some(self.step.to_owned()),
            by: crate::failover::journal::who(),
            reason,
        })?;
        Ok(())
    }

    pub fn fail(&self, msg: impl Into<String>) -> Error {
        step_error(self.step, msg)
    }

    /// True when there is no time left for another wait of `d`.
    pub fn out_of_time(&self, d: Duration) -> bool {
        Instant::now() + d >= self.deadline
    }
}

pub fn step_error(step: &str, msg: impl Into<String>) -> Error {
    Error::Failover {
        what: format!("step {step}"),
        msg: msg.into(),
    }
}

#[async_trait]
pub trait Step: Send + Sync {
    /// Read-only: what the step would change (`--dry-run`).
    async fn preview(&self, step: &str, runbook: &Runbook) -> Result<Value>;
    /// Does the step; returns details for the journal's `step-done` record.
    /// Must be safe to re-enter after a crash (see `Ctx::progress`).
    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value>;
}

/// The only place that maps a step spec to its implementation.
pub fn build(spec: &StepSpec) -> Box<dyn Step> {
    match &spec.kind {
        StepKind::CheckPrimary(s) => Box::new(check_primary::CheckPrimary(s.clone())),
        StepKind::FenceMysql(s) => Box::new(fence::Fence(s.clone())),
        StepKind::DnsSwitch(s) => Box::new(dns::DnsSwitch(s.clone())),
        StepKind::ScaleUp(s) => Box::new(scale::ScaleUp(s.clone())),
        StepKind::Verify(s) => Box::new(verify::Verify(s.clone())),
        StepKind::Notify(s) => Box::new(notify::NotifyStep(s.clone())),
        StepKind::Exec(s) => Box::new(exec::Exec(s.clone())),
    }
}

/// Reads every secret the step needs, before the run touches anything.
pub fn check_secrets(kind: &StepKind) -> Result<()> {
    let targets: Vec<&MysqlTarget> = match kind {
        StepKind::CheckPrimary(s) => s.mysql.iter().collect(),
        StepKind::FenceMysql(s) => s.mysql.iter().collect(),
        StepKind::Verify(s) => s.mysql.iter().collect(),
        _ => Vec::new(),
    };
    for t in targets {
        t.secret().read()?;
    }
    Ok(())
}

// ---------------------------------------------------------------- shared probes

/// An HTTP health URL.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpCheck {
    pub url: String,
    /// Default: any 2xx.
    pub expect_status: Option<u16>,
    pub body_contains: Option<String>,
}

impl HttpCheck {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(("http", format!("{:?} is not an http(s) URL", self.url)));
        }
        Ok(())
    }

    /// `Ok(what answered)` or `Err(why not)`.
    pub async fn probe(&self, client: &reqwest::Client) -> std::result::Result<String, String> {
        let resp = client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("GET {}: {}", self.url, crate::error::one_line(&e)))?;
        let status = resp.status().as_u16();
        let ok = match self.expect_status {
            Some(s) => status == s,
            None => (200..300).contains(&status),
        };
        if !ok {
            return Err(format!("GET {}: HTTP {status}", self.url));
        }
        if let Some(needle) = &self.body_contains {
            let body = resp
                .text()
                .await
                .map_err(|e| format!("GET {}: {}", self.url, crate::error::one_line(&e)))?;
            if !body.contains(needle.as_str()) {
                return Err(format!(
                    "GET {}: HTTP {status} but the body lacks {needle:?}",
                    self.url
                ));
            }
        }
        Ok(format!("GET {} answered HTTP {status}", self.url))
    }
}

pub fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    crate::base::http::client(timeout, true).map_err(|e| Error::Failover {
        what: "http client".into(),
        msg: e.to_string(),
    })
}

/// A MySQL server; the password comes from env or a file, never the URL.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MysqlTarget {
    pub url: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// verify only: a query that must return at least one row.
    pub query: Option<String>,
}

impl MysqlTarget {
    fn validate(&self, query_allowed: bool) -> std::result::Result<(), (&'static str, String)> {
        let opts = mysql_async::Opts::from_url(&self.url)
            .map_err(|e| ("mysql", format!("url {:?}: {e}", self.url)))?;
        if opts.pass().is_some() {
            return Err((
                "mysql",
                "put the password in password-env or password-file, not in the URL".into(),
            ));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err((
                "mysql",
                "set password-env or password-file, not both".into(),
            ));
        }
        if self.query.is_some() && !query_allowed {
            return Err(("mysql", "`query` applies to verify steps only".into()));
        }
        Ok(())
    }

    fn secret(&self) -> Secret {
        match (&self.password_env, &self.password_file) {
            (Some(v), _) => Secret::Env(v.clone()),
            (_, Some(f)) => Secret::File(f.clone()),
            _ => Secret::None,
        }
    }

    /// `host:port` for messages.
    pub fn label(&self) -> String {
        mysql_async::Opts::from_url(&self.url)
            .map(|o| format!("mysql {}:{}", o.ip_or_hostname(), o.tcp_port()))
            .unwrap_or_else(|_| "mysql".into())
    }

    pub async fn connect(
        &self,
        timeout: Duration,
    ) -> std::result::Result<mysql_async::Conn, String> {
        let opts = mysql_async::Opts::from_url(&self.url).map_err(|e| e.to_string())?;
        let mut b = mysql_async::OptsBuilder::from_opts(opts);
        if let Some(p) = self
            .secret()
            .read()
            .map_err(|e| crate::error::one_line(&e))?
        {
            b = b.pass(Some(p));
        }
        match tokio::time::timeout(timeout, mysql_async::Conn::new(b)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("{}: {}", self.label(), crate::error::one_line(&e))),
            Err(_) => Err(format!(
                "{}: no answer within {}",
                self.label(),
                crate::base::human_duration(timeout)
            )),
        }
    }

    /// `SELECT 1` (or the verify query, which must return rows).
    pub async fn probe(&self, timeout: Duration) -> std::result::Result<String, String> {
        use mysql_async::prelude::Queryable;
        let fut = async {
            let mut c = self.connect(timeout).await?;
            let q = self.query.as_deref().unwrap_or("SELECT 1");
            let rows: Vec<mysql_async::Row> = c
                .query(q)
                .await
                .map_err(|e| format!("{}: {q}: {}", self.label(), crate::error::one_line(&e)))?;
            let _ = c.disconnect().await;
            if rows.is_empty() {
                return Err(format!("{}: {q} returned no rows", self.label()));
            }
            Ok(format!("{} answered {q}", self.label()))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{}: no answer within {}",
                self.label(),
                crate::base::human_duration(timeout)
            )),
        }
    }
}
