//! `verify`: the backup site serves — HTTP health URLs (status, optional
//! body match) and MySQL queries, M consecutive green rounds.
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{http_client, Ctx, HttpCheck, Invalid, MysqlTarget, PreviewCtx, Step};
use crate::base::Secret;
use crate::base::{human_duration, Dur};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    #[serde(default)]
    pub mysql: Vec<MysqlTarget>,
    /// Consecutive green rounds needed (default 3).
    pub successes: Option<u32>,
    pub interval: Option<Dur>,
    pub probe_timeout: Option<Dur>,
}

impl Spec {
    fn check(&self) -> Invalid {
        if self.http.is_empty() && self.mysql.is_empty() {
            return Err((
                "http",
                "name at least one http or mysql check of the backup site".into(),
            ));
        }
        for h in &self.http {
            h.validate()?;
        }
        for m in &self.mysql {
            m.validate(true)?;
        }
        if self.successes == Some(0) {
            return Err(("successes", "must be at least 1".into()));
        }
        Ok(())
    }

    fn successes(&self) -> u32 {
        self.successes.unwrap_or(3)
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
            .map(|h| {
                format!(
                    "GET {} expects {}{}{}",
                    h.url,
                    h.expect_status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "2xx".into()),
                    h.body_contains
                        .as_ref()
                        .map(|b| format!(" and {b:?} in the body"))
                        .unwrap_or_default(),
                    h.expect_json
                        .as_ref()
                        .map(|j| format!(
                            " and JSON {}",
                            serde_json::to_string(j).unwrap_or_default()
                        ))
                        .unwrap_or_default()
                )
            })
            .collect();
        v.extend(
            self.mysql
                .iter()
                .map(|m| format!("{} {}", m.label(), m.query.as_deref().unwrap_or("SELECT 1"))),
        );
        v.push(format!(
            "{} consecutive green round(s), {} apart",
            self.successes(),
            human_duration(self.interval())
        ));
        v
    }

    async fn round(&self) -> Result<std::result::Result<Vec<String>, Vec<String>>> {
        let client = http_client(self.probe_timeout())?;
        let t = self.probe_timeout();
        let (h, m) = futures::join!(
            join_all(self.http.iter().map(|h| h.probe(&client))),
            join_all(self.mysql.iter().map(|m| m.probe(t)))
        );
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for r in h.into_iter().chain(m) {
            match r {
                Ok(s) => ok.push(s),
                Err(e) => bad.push(e.to_string()),
            }
        }
        Ok(if bad.is_empty() { Ok(ok) } else { Err(bad) })
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
        std::time::Duration::from_secs(600)
    }
    fn secrets(&self) -> Vec<Secret> {
        self.mysql.iter().map(MysqlTarget::secret).collect()
    }

    async fn preview(&self, _ctx: &PreviewCtx<'_>) -> Result<Value> {
        Ok(match self.round().await? {
            Ok(ok) => json!({ "green": true, "answered": ok }),
            Err(bad) => json!({ "green": false, "failing": bad }),
        })
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let need = self.successes();
        let mut streak = 0;
        let mut rounds = 0;
        loop {
            rounds += 1;
            match self.round().await? {
                Ok(ok) => {
                    streak += 1;
                    if streak >= need {
                        return Ok(json!({ "green": true, "rounds": rounds, "answered": ok }));
                    }
                }
                Err(bad) => {
                    streak = 0;
                    if ctx.out_of_time(self.interval()) {
                        return Err(ctx.fail(format!(
                            "the backup site is not green after {rounds} round(s): {}",
                            bad.join("; ")
                        )));
                    }
                    tracing::info!(step = ctx.step, failing = %bad.join("; "), "not green yet");
                }
            }
            if ctx.out_of_time(self.interval()) {
                return Err(ctx.fail(format!(
                    "only {streak} of {need} consecutive green rounds before the timeout"
                )));
            }
            tokio::time::sleep(self.interval()).await;
        }
    }
}
