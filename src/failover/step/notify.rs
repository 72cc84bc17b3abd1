//! `notify`: a message to some channels in the middle of a runbook. Each
//! channel's delivery is journaled, so a resumed run does not send it again;
//! a failed delivery is recorded and never fails the step.
use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Step};
use crate::error::Result;
use crate::failover::runbook::Runbook;
use crate::notify::{deliver, Message, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    pub channels: Vec<String>,
    pub subject: Option<String>,
    pub message: String,
}

impl Spec {
    pub fn validate(
        &self,
        known: &BTreeSet<String>,
    ) -> std::result::Result<(), (&'static str, String)> {
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

    pub fn describe(&self) -> Vec<String> {
        vec![format!(
            "send {:?} to {}",
            self.message,
            self.channels.join(", ")
        )]
    }
}

pub struct NotifyStep(pub Spec);

#[async_trait]
impl Step for NotifyStep {
    async fn preview(&self, _step: &str, _rb: &Runbook) -> Result<Value> {
        Ok(json!({ "would": "send", "channels": self.0.channels, "message": self.0.message }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let rb = ctx.runbook;
        let msg = Message {
            id: format!("{}.{}", ctx.run, ctx.step),
            subject: self
                .0
                .subject
                .clone()
                .unwrap_or_else(|| format!("[cexdr] failover {}: {}", rb.name, ctx.step)),
            text: self.0.message.clone(),
            severity: Severity::Warning,
            fields: BTreeMap::from([
                ("run".to_owned(), ctx.run.to_owned()),
                ("runbook".to_owned(), rb.name.clone()),
                ("from".to_owned(), rb.from_site.clone()),
                ("to".to_owned(), rb.to_site.clone()),
            ]),
        };
        let mut out = Vec::new();
        for name in &self.0.channels {
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
