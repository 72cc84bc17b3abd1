//! `check-primary`: is the primary site really down? Every probe of every
//! check must fail; anything that answers stops the failover (unless
//! `--force`, which the journal records with who and when).
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{http_client, Ctx, HttpCheck, Invalid, MysqlTarget, PreviewCtx, Step};
use crate::base::Secret;
use crate::base::{human_duration, Dur};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    #[serde(default)]
    pub mysql: Vec<MysqlTarget>,
    /// Rounds of probes (default 3).
    pub probes: Option<u32>,
    /// Pause between rounds (default 2s).
    pub interval: Option<Dur>,
    /// Per probe (default 3s).
    pub probe_timeout: Option<Dur>,
}

impl Spec {
    fn check(&self) -> Invalid {
        if self.http.is_empty() && self.mysql.is_empty() {
            return Err((
                "http",
                "name at least one http or mysql check of the primary".into(),
            ));
        }
        for h in &self.http {
            h.validate()?;
        }
        for m in &self.mysql {
            m.validate(false)?;
        }
        if self.probes == Some(0) {
            return Err(("probes", "must be at least 1".into()));
        }
        Ok(())
    }

    fn probes(&self) -> u32 {
        self.probes.unwrap_or(3)
    }
    fn interval(&self) -> Duration {
        self.interval.map(|d| d.0).unwrap_or(Duration::from_secs(2))
    }
    fn probe_timeout(&self) -> Duration {
        self.probe_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(3))
    }

    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .http
            .iter()
            .map(|h| format!("primary down? GET {}", h.url))
            .collect();
        v.extend(
            self.mysql
                .iter()
                .map(|m| format!("primary down? {} SELECT 1", m.label())),
        );
        v.push(format!(
            "{} probe round(s) {} apart; anything that answers stops the failover",
            self.probes(),
            human_duration(self.interval())
        ));
        v
    }

    /// One round: what answered and what failed.
    async fn round(&self) -> Result<(Vec<String>, Vec<String>)> {
        let client = http_client(self.probe_timeout())?;
        let t = self.probe_timeout();
        let http = join_all(self.http.iter().map(|h| h.probe(&client)));
        let mysql = join_all(self.mysql.iter().map(|m| m.probe(t)));
        let (h, m) = futures::join!(http, mysql);
        let mut up = Vec::new();
        let mut down = Vec::new();
        for r in h.into_iter().chain(m) {
            match r {
                Ok(s) => up.push(s),
                Err(e) => down.push(e.to_string()),
            }
        }
        Ok((up, down))
    }

    /// Probes until something answers or every round failed.
    async fn probe_all(&self) -> Result<(Vec<String>, Vec<String>)> {
        let mut failures = Vec::new();
        for i in 0..self.probes() {
            if i > 0 {
                tokio::time::sleep(self.interval()).await;
            }
            let (up, down) = self.round().await?;
            failures.extend(down.into_iter().map(|d| format!("round {}: {d}", i + 1)));
            if !up.is_empty() {
                return Ok((up, failures));
            }
        }
        Ok((Vec::new(), failures))
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
        Duration::from_secs(60)
    }
    fn secrets(&self) -> Vec<Secret> {
        self.mysql.iter().map(MysqlTarget::secret).collect()
    }
    fn is_gate(&self) -> bool {
        true
    }

    async fn preview(&self, _ctx: &PreviewCtx<'_>) -> Result<Value> {
        let (up, failures) = self.probe_all().await?;
        Ok(json!({
            "primary": if up.is_empty() { "down" } else { "up" },
            "answered": up,
            "failures": failures,
            "would": if up.is_empty() { "proceed" } else { "refuse (the primary answers)" },
        }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let (up, failures) = self.probe_all().await?;
        if up.is_empty() {
            return Ok(json!({ "primary": "down", "failures": failures }));
        }
        if !ctx.info.force {
            return Err(Error::PrimaryAlive {
                step: ctx.step.to_owned(),
                msg: format!(
                    "the primary is not down: {}; refusing to fail over (--force overrides, and is journaled)",
                    up.join("; ")
                ),
            });
        }
        ctx.forced(format!("primary answered: {}", up.join("; ")))?;
        tracing::warn!(
            step = ctx.step,
            "the primary answers; going on because of --force"
        );
        Ok(json!({ "primary": "up", "forced": true, "answered": up, "failures": failures }))
    }
}
