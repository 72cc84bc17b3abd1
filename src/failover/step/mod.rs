//! Failover steps. Each kind is one file whose spec type implements `Step`
//! (validate, describe, secrets, default timeout, preview, run), which this
//! file defines with the context a step sees; the `steps!` list in `kinds`
//! is the one place that names them all: it derives the serde-tagged
//! `StepKind`, `StepKind::NAMES` and the one `match` (`StepKind::step`). A
//! new step is one new file plus one line there.
//! Steps see a small context (run id, step name, sites, channels, journal
//! access), never the runbook or the engine.
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
use crate::notify::ChannelSpec;

pub mod check_primary;
pub mod dns;
pub mod exec;
pub mod fence;
pub mod kinds;
pub mod notify;
pub mod promote;
pub mod rejoin;
pub mod scale;
pub mod verify;

/// The runbook-level facts a step may use (never the runbook itself).
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub runbook: String,
    pub from_site: String,
    pub to_site: String,
    pub channels: Vec<ChannelSpec>,
    /// `--force`: a live primary does not stop the run (journaled).
    pub force: bool,
    /// `--accept-data-loss`: promotion goes on past `max-data-loss` (journaled).
    pub accept_data_loss: bool,
    /// Opens a step's `archive` (the binlog archive top-up).
    pub archives: Option<crate::failover::archive::Archives>,
}

impl RunInfo {
    pub fn channel(&self, name: &str) -> Option<&ChannelSpec> {
        self.channels.iter().find(|c| c.name() == name)
    }
}

/// What a dry run's preview sees.
pub struct PreviewCtx<'a> {
    pub step: &'a str,
    pub info: &'a RunInfo,
}

/// What a running step can see and write.
pub struct Ctx<'a> {
    pub run: &'a str,
    pub step: &'a str,
    pub info: &'a RunInfo,
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

    pub fn fail_permanently(&self, msg: impl Into<String>) -> Error {
        permanent_error(self.step, msg)
    }

    /// The step error of a failure, its cause kept.
    pub fn fail_with(&self, f: impl Into<Failure>) -> Error {
        failed_with(self.step, f.into(), false)
    }

    /// True when there is no time left for another wait of `d`.
    pub fn out_of_time(&self, d: Duration) -> bool {
        crate::base::duration::deadline(Instant::now(), d) >= self.deadline
    }
}

pub fn step_error(step: &str, msg: impl Into<String>) -> Error {
    Error::StepFailed {
        step: step.to_owned(),
        msg: msg.into(),
        permanent: false,
        cause: None,
    }
}

/// A step error that retrying cannot fix: the engine does not retry it.
pub fn permanent_error(step: &str, msg: impl Into<String>) -> Error {
    Error::StepFailed {
        step: step.to_owned(),
        msg: msg.into(),
        permanent: true,
        cause: None,
    }
}

/// The step error of a failure: its text, and its cause as the source.
pub fn failed_with(step: &str, f: Failure, permanent: bool) -> Error {
    Error::StepFailed {
        step: step.to_owned(),
        msg: f.msg,
        permanent,
        cause: f.cause,
    }
}

/// Why a probe, a connection or a call made by a step failed, in the words
/// the step error and the journal show (`msg`). When an underlying error
/// (HTTP client, MySQL driver, Kubernetes client, a secret) is behind it,
/// it stays the source; `msg` already holds its text, so that
/// `error::one_line` reads as the message alone.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Failure {
    pub msg: String,
    #[source]
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Failure {
    /// A failure with nothing underneath: the other side answered, but
    /// not as required, or not in time.
    pub fn new(msg: impl Into<String>) -> Failure {
        Failure {
            msg: msg.into(),
            cause: None,
        }
    }

    /// `context: cause` (the cause's whole chain on one line), the cause kept.
    pub fn caused(
        context: impl std::fmt::Display,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Failure {
        let cause = cause.into();
        Failure {
            msg: format!("{context}: {}", crate::error::one_line(cause.as_ref())),
            cause: Some(cause),
        }
    }

    /// The cause's whole chain on one line as the message, the cause kept.
    pub fn of(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        let cause = cause.into();
        Failure {
            msg: crate::error::one_line(cause.as_ref()),
            cause: Some(cause),
        }
    }

    /// The same failure, its message preceded by `context: `.
    pub fn context(self, context: impl std::fmt::Display) -> Failure {
        Failure {
            msg: format!("{context}: {}", self.msg),
            cause: self.cause,
        }
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Failure {
        Failure::new(msg)
    }
}

impl From<&str> for Failure {
    fn from(msg: &str) -> Failure {
        Failure::new(msg)
    }
}

/// `Err((key, message))` from the checks that need no I/O.
pub type Invalid = std::result::Result<(), (&'static str, String)>;

#[async_trait]
pub trait Step: Send + Sync {
    /// Checks that need no I/O; `channels` are the runbook's channel names.
    fn validate(&self, channels: &BTreeSet<String>) -> Invalid;
    /// Plain-words lines for the plan.
    fn describe(&self) -> Vec<String>;
    fn default_timeout(&self) -> Duration;
    /// The secrets the step reads; all are read before a run starts.
    fn secrets(&self) -> Vec<Secret> {
        Vec::new()
    }
    /// A safety gate (check-primary): never retried, never `on-failure = "continue"`.
    fn is_gate(&self) -> bool {
        false
    }
    /// Read-only: what the step would change (`--dry-run`).
    async fn preview(&self, ctx: &PreviewCtx<'_>) -> Result<Value>;
    /// Does the step; returns details for the journal's `step-done` record.
    /// Must be safe to re-enter after a crash (see `Ctx::progress`).
    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value>;
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
    /// The body must be JSON that contains these keys with these values
    /// (nested tables match recursively; other keys may be present).
    pub expect_json: Option<toml::Table>,
}

/// True when `want` (TOML) is a subset of `got` (JSON).
fn json_contains(got: &Value, want: &toml::Value) -> bool {
    match want {
        toml::Value::Table(t) => t.iter().all(|(k, w)| {
            got.get(k.as_str())
                .map(|g| json_contains(g, w))
                .unwrap_or(false)
        }),
        toml::Value::String(s) => got.as_str() == Some(s.as_str()),
        toml::Value::Integer(i) => got.as_i64() == Some(*i),
        toml::Value::Float(f) => got.as_f64() == Some(*f),
        toml::Value::Boolean(b) => got.as_bool() == Some(*b),
        toml::Value::Array(a) => got
            .as_array()
            .map(|g| g.len() == a.len() && g.iter().zip(a).all(|(g, w)| json_contains(g, w)))
            .unwrap_or(false),
        toml::Value::Datetime(d) => got.as_str() == Some(d.to_string().as_str()),
    }
}

/// The start of a body for an error message (one line, bounded).
fn body_excerpt(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        format!("{}…", one.chars().take(200).collect::<String>())
    } else {
        one
    }
}

impl HttpCheck {
    fn validate(&self) -> Invalid {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(("http", format!("{:?} is not an http(s) URL", self.url)));
        }
        Ok(())
    }

    /// `Ok(what answered)` or `Err(why not)`.
    pub async fn probe(&self, client: &reqwest::Client) -> std::result::Result<String, Failure> {
        let resp = client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| Failure::caused(format_args!("GET {}", self.url), e))?;
        let status = resp.status().as_u16();
        let ok = match self.expect_status {
            Some(s) => status == s,
            None => (200..300).contains(&status),
        };
        if !ok {
            return Err(format!("GET {}: HTTP {status}", self.url).into());
        }
        if self.body_contains.is_some() || self.expect_json.is_some() {
            let body = resp
                .text()
                .await
                .map_err(|e| Failure::caused(format_args!("GET {}", self.url), e))?;
            if let Some(needle) = &self.body_contains {
                if !body.contains(needle.as_str()) {
                    return Err(format!(
                        "GET {}: HTTP {status} but the body lacks {needle:?}; body: {}",
                        self.url,
                        body_excerpt(&body)
                    )
                    .into());
                }
            }
            if let Some(want) = &self.expect_json {
                let want = toml::Value::Table(want.clone());
                match serde_json::from_str::<Value>(&body) {
                    Ok(got) if json_contains(&got, &want) => {}
                    Ok(_) => {
                        return Err(format!(
                            "GET {}: HTTP {status} but the JSON body does not match expect-json {}; body: {}",
                            self.url,
                            serde_json::to_string(&want).unwrap_or_default(),
                            body_excerpt(&body)
                        )
                        .into())
                    }
                    Err(e) => {
                        return Err(Failure {
                            msg: format!(
                                "GET {}: HTTP {status} but the body is not JSON ({e}); body: {}",
                                self.url,
                                body_excerpt(&body)
                            ),
                            cause: Some(e.into()),
                        })
                    }
                }
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
    fn validate(&self, query_allowed: bool) -> Invalid {
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

    pub fn secret(&self) -> Secret {
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
    ) -> std::result::Result<mysql_async::Conn, Failure> {
        let opts = mysql_async::Opts::from_url(&self.url).map_err(|e| Failure {
            msg: e.to_string(),
            cause: Some(e.into()),
        })?;
        let mut b = mysql_async::OptsBuilder::from_opts(opts);
        if let Some(p) = self.secret().read().map_err(Failure::of)? {
            b = b.pass(Some(p));
        }
        match tokio::time::timeout(timeout, mysql_async::Conn::new(b)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Failure::caused(self.label(), e)),
            Err(_) => Err(format!(
                "{}: no answer within {}",
                self.label(),
                crate::base::human_duration(timeout)
            )
            .into()),
        }
    }

    /// `SELECT 1` (or the verify query, which must return rows).
    pub async fn probe(&self, timeout: Duration) -> std::result::Result<String, Failure> {
        use mysql_async::prelude::Queryable;
        let fut = async {
            let mut c = self.connect(timeout).await?;
            let q = self.query.as_deref().unwrap_or("SELECT 1");
            let rows: Vec<mysql_async::Row> = c
                .query(q)
                .await
                .map_err(|e| Failure::caused(format_args!("{}: {q}", self.label()), e))?;
            let _ = c.disconnect().await;
            if rows.is_empty() {
                return Err(format!("{}: {q} returned no rows", self.label()).into());
            }
            Ok(format!("{} answered {q}", self.label()))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{}: no answer within {}",
                self.label(),
                crate::base::human_duration(timeout)
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_json_is_a_subset_match() {
        let want: toml::Table = toml::from_str("status = \"ok\"\n[db]\nup = true\n").unwrap();
        let want = toml::Value::Table(want);
        let got: Value =
            serde_json::from_str(r#"{"status": "ok", "db": {"up": true, "ms": 3}}"#).unwrap();
        assert!(json_contains(&got, &want));
        let got: Value = serde_json::from_str(r#"{"status":"ok","db":{"up":false}}"#).unwrap();
        assert!(!json_contains(&got, &want));
        let got: Value = serde_json::from_str(r#"{"status":"OK","db":{"up":true}}"#).unwrap();
        assert!(!json_contains(&got, &want));
    }
}
