//! `notify`: a message to some channels in the middle of a runbook. Each
//! channel's delivery is journaled, so a resumed run does not send it again;
//! a failed delivery is recorded and never fails the step.
use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Invalid, PreviewCtx, Step};
use crate::error::Result;
use crate::notify::{deliver, Message, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    pub channels: Vec<String>,
    pub subject: Option<String>,
    pub message: String,
}

impl Spec {
    fn check(&self, known: &BTreeSet<String>) -> Invalid {
        if self.channels.is_empty() {
            return Err(("channels", "name at least one channel".into()));
        }
        for c in &self.channels {
            if !known.contains(c) {
                return Err(("channels", format!("no [[channel]] is named {c:?}")));
            }
        }
        Ok(())
    }

    fn lines(&self) -> Vec<String> {
        vec![format!(
            "send {:?} to {}",
            self.message,
            self.channels.join(", ")
        )]
    }
}

#[async_trait]
impl Step for Spec {
    fn validate(&self, channels: &std::collections::BTreeSet<String>) -> Invalid {
        self.check(channels)
    }
    fn describe(&self) -> Vec<String> {
        self.lines()
    }
    fn default_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(60)
    }

    async fn preview(&self, _ctx: &PreviewCtx<'_>) -> Result<Value> {
        Ok(json!({ "would": "send", "channels": self.channels, "message": self.message }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let rb = ctx.info;
        let id = format!("{}.{}", ctx.run, ctx.step);
        let msg = Message {
            id: id.clone(),
            subject: self
                .subject
                .clone()
                .unwrap_or_else(|| format!("[cexdr] failover {}: {}", rb.runbook, ctx.step)),
            // Run id and idempotency key in the text too: a receiver that shows
            // only the text can still tell a resent message from a new one.
            text: format!("{}\n(run {}, message {id})", self.message, ctx.run),
            severity: Severity::Warning,
            fields: BTreeMap::from([
                ("run".to_owned(), ctx.run.to_owned()),
                ("runbook".to_owned(), rb.runbook.clone()),
                ("from".to_owned(), rb.from_site.clone()),
                ("to".to_owned(), rb.to_site.clone()),
            ]),
        };
        let mut out = Vec::new();
        for name in &self.channels {
            if let Some(d) = ctx
                .progress
                .iter()
                .find(|p| p["delivery"]["channel"] == json!(name))
            {
                out.push(d["delivery"].clone());
                continue;
            }
            let ch = rb.channel(name).expect("validated channel name");
            let d = deliver(ch, &msg).await;
            let v = serde_json::to_value(&d).expect("serialisable");
            ctx.record(json!({ "delivery": v }))?;
            out.push(v);
        }
        Ok(json!({ "deliveries": out }))
    }
}
