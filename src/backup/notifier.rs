//! Backup events on the policy's notification channels (`[notify]`): what
//! to say and when. Delivery itself is `crate::notify`'s.
use std::collections::BTreeMap;

use crate::backup::catalog::Manifest;
use crate::backup::policy::{BackupEvent, Policy};
use crate::notify::{deliver, ChannelSpec, Delivery, Message, Severity};

/// Sends backup events to the policy's channels. Never fails its caller:
/// a failed delivery is logged and counted in the metrics.
#[derive(Clone)]
pub struct Notifier {
    channels: Vec<ChannelSpec>,
    on: std::collections::BTreeSet<BackupEvent>,
    metrics: Option<crate::backup::metrics::Metrics>,
}

impl Notifier {
    pub fn for_policy(p: &Policy, metrics: Option<crate::backup::metrics::Metrics>) -> Notifier {
        let channels = p
            .channels
            .iter()
            .filter(|c| p.notify.channels.iter().any(|n| n == c.name()))
            .cloned()
            .collect();
        Notifier {
            channels,
            on: p.notify.on.clone(),
            metrics,
        }
    }

    pub async fn send(
        &self,
        ev: BackupEvent,
        job: &str,
        subject: String,
        text: String,
        fields: BTreeMap<String, String>,
    ) -> Vec<Delivery> {
        if self.channels.is_empty() || !self.on.contains(&ev) {
            return Vec::new();
        }
        let severity = match ev {
            BackupEvent::Success => Severity::Info,
            BackupEvent::PruneError => Severity::Warning,
            _ => Severity::Critical,
        };
        let mut fields = fields;
        fields.insert("job".into(), job.to_owned());
        fields.insert("host".into(), crate::base::host_name());
        let msg = Message {
            id: format!(
                "cexdr-{}-{job}-{:016x}",
                serde_json::to_value(ev)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                rand::random::<u64>()
            ),
            subject,
            text,
            severity,
            fields,
        };
        let out = futures::future::join_all(self.channels.iter().map(|c| deliver(c, &msg))).await;
        for d in &out {
            if !d.ok {
                if let Some(m) = &self.metrics {
                    m.notification_failed(&d.channel);
                }
            }
        }
        out
    }

    pub async fn backup_failed(&self, job: &str, error: &str) {
        self.send(
            BackupEvent::Failure,
            job,
            format!("cexdr: backup of {job} FAILED"),
            error.to_owned(),
            BTreeMap::new(),
        )
        .await;
    }

    pub async fn backup_succeeded(&self, m: &Manifest) {
        let fields = BTreeMap::from([
            ("id".to_owned(), m.id.clone()),
            ("stored_bytes".to_owned(), m.stored_bytes.to_string()),
            ("sha256".to_owned(), m.sha256.clone()),
        ]);
        self.send(
            BackupEvent::Success,
            &m.job,
            format!("cexdr: backup of {} done", m.job),
            format!("backup {} is complete", m.id),
            fields,
        )
        .await;
    }

    pub async fn verification_failed(&self, m: &Manifest, error: &str) {
        let fields = BTreeMap::from([("id".to_owned(), m.id.clone())]);
        self.send(
            BackupEvent::VerificationFailure,
            &m.job,
            format!("cexdr: verification of {} backup {} FAILED", m.job, m.id),
            error.to_owned(),
            fields,
        )
        .await;
    }

    /// A drill that could not run at all (no backup, a bad target).
    pub async fn drill_failed(&self, job: &str, error: &str) {
        self.send(
            BackupEvent::VerificationFailure,
            job,
            format!("cexdr: restore drill of {job} FAILED"),
            error.to_owned(),
            BTreeMap::new(),
        )
        .await;
    }

    pub async fn prune_failed(&self, job: &str, error: &str) {
        self.send(
            BackupEvent::PruneError,
            job,
            format!("cexdr: prune of {job} failed"),
            error.to_owned(),
            BTreeMap::new(),
        )
        .await;
    }
}

#[async_trait::async_trait]
impl super::job::EventSink for Notifier {
    async fn event(&self, e: &super::job::Event) {
        use super::job::Event as E;
        match e {
            E::VerificationFailed {
                manifest,
                method,
                error,
                ..
            } => {
                self.verification_failed(manifest, &format!("{method}: {error}"))
                    .await
            }
            E::DrillFailed { job, error } => self.drill_failed(job, error).await,
            E::Succeeded { manifest, .. } => self.backup_succeeded(manifest).await,
            E::Failed { job, error, .. } => self.backup_failed(job, error).await,
            E::PruneFailed { job, error } => self.prune_failed(job, error).await,
            E::Pruned { job, report } if !report.errors.is_empty() => {
                self.prune_failed(job, &report.errors.join("; ")).await
            }
            _ => {}
        }
    }
}
