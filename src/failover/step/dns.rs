//! `dns-switch`: Route 53 UPSERT of one record to the backup site.
//! Skips the change when the record already has the target value; journals
//! the change id BEFORE waiting, waits with backoff until `GetChange` says
//! INSYNC, then waits out the old record's TTL (resolvers may still cache it).
//! Throttling and `PriorRequestNotComplete` are retried with backoff.
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Invalid, PreviewCtx, Step};
use crate::base::{human_duration, Dur};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RecordType {
    A,
    AAAA,
    CNAME,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    pub hosted_zone_id: String,
    /// Fully qualified name, e.g. `api.example.com.`.
    pub record: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// Target values (one for CNAME).
    pub values: Vec<String>,
    pub ttl: i64,
    pub region: Option<String>,
    /// A Route 53 endpoint other than AWS's (VPC endpoint, test server).
    pub endpoint: Option<String>,
    /// First wait between GetChange polls and API retries; doubles up to 30s (default 2s).
    pub poll_interval: Option<Dur>,
    /// Wait the old record's TTL after INSYNC (default true).
    pub wait_ttl: Option<bool>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Spec {
    fn check(&self) -> Invalid {
        if self.hosted_zone_id.trim().is_empty() {
            return Err(("hosted-zone-id", "must not be empty".into()));
        }
        if self.record.trim().is_empty() {
            return Err(("record", "must not be empty".into()));
        }
        if self.values.is_empty() {
            return Err(("values", "name the target value(s)".into()));
        }
        match self.record_type {
            RecordType::CNAME if self.values.len() != 1 => {
                return Err(("values", "a CNAME has exactly one value".into()))
            }
            RecordType::A => {
                for v in &self.values {
                    if v.parse::<std::net::Ipv4Addr>().is_err() {
                        return Err(("values", format!("{v:?} is not an IPv4 address")));
                    }
                }
            }
            RecordType::AAAA => {
                for v in &self.values {
                    if v.parse::<std::net::Ipv6Addr>().is_err() {
                        return Err(("values", format!("{v:?} is not an IPv6 address")));
                    }
                }
            }
            _ => {}
        }
        if !(0..=2_147_483_647).contains(&self.ttl) {
            return Err(("ttl", "must be between 0 and 2147483647".into()));
        }
        Ok(())
    }

    fn lines(&self) -> Vec<String> {
        vec![format!(
            "Route 53 zone {}: UPSERT {} {:?} → {} (TTL {}s), wait INSYNC{}",
            self.hosted_zone_id,
            fqdn(&self.record),
            self.record_type,
            self.values.join(", "),
            self.ttl,
            if self.wait_ttl.unwrap_or(true) {
                " and the old TTL"
            } else {
                ""
            }
        )]
    }

    fn rr_type(&self) -> RrType {
        match self.record_type {
            RecordType::A => RrType::A,
            RecordType::AAAA => RrType::Aaaa,
            RecordType::CNAME => RrType::Cname,
        }
    }

    fn first_wait(&self) -> Duration {
        self.poll_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(2))
    }

    fn target(&self) -> Vec<String> {
        normalise(self.record_type, &self.values)
    }
}

fn fqdn(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

/// Values compared without case, order or a trailing dot.
fn normalise(t: RecordType, values: &[String]) -> Vec<String> {
    let mut v: Vec<String> = values
        .iter()
        .map(|s| match t {
            RecordType::CNAME => fqdn(s),
            _ => s.trim().to_ascii_lowercase(),
        })
        .collect();
    v.sort();
    v
}

pub async fn client(region: Option<&str>, endpoint: Option<&str>) -> aws_sdk_route53::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(
            region.unwrap_or("us-east-1").to_owned(),
        ))
        // Retries are ours (below): they see PriorRequestNotComplete and the step's deadline.
        .retry_config(aws_config::retry::RetryConfig::disabled());
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
    }
    let conf = loader.load().await;
    aws_sdk_route53::Client::new(&conf)
}

/// Worth retrying: throttling, a change still in progress, network and 5xx.
fn transient<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => matches!(
            e.code(),
            Some(
                "Throttling"
                    | "ThrottlingException"
                    | "PriorRequestNotComplete"
                    | "RequestLimitExceeded"
                    | "ServiceUnavailable"
                    | "InternalFailure"
            )
        ),
    }
}

fn describe_err<
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
>(
    e: &SdkError<E, R>,
) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => crate::error::one_line(e),
    }
}

struct Current {
    values: Vec<String>,
    ttl: i64,
}

/// Why a Route 53 call of the step failed; the text is the step error's.
#[derive(Debug, thiserror::Error)]
enum DnsError {
    /// `op` failed: `said` is Route 53's code and message (or the SDK
    /// error's whole text); `tries` when busy answers were retried until the
    /// time ran out. `error` is the SDK error itself, kept for a caller but
    /// not reported as a source: `said` already words it.
    #[error("{op}: {said}{}", tries.map(|n| format!(" (gave up after {n} tries)")).unwrap_or_default())]
    Call {
        op: String,
        said: String,
        code: Option<String>,
        tries: Option<u32>,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}")]
    Build(#[from] aws_sdk_route53::error::BuildError),
    #[error("ChangeResourceRecordSets: no ChangeInfo in the answer")]
    NoChangeInfo,
    #[error("change {id} is still {status:?} after {polls} polls")]
    NotInsync {
        id: String,
        status: Option<ChangeStatus>,
        polls: u32,
    },
}

impl DnsError {
    fn call<E, R>(op: &str, e: SdkError<E, R>, tries: Option<u32>) -> DnsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        DnsError::Call {
            op: op.to_owned(),
            said: describe_err(&e),
            code: e.code().map(str::to_owned),
            tries,
            error: Box::new(e),
        }
    }

    /// Route 53 said something retrying cannot change.
    fn is_permanent(&self) -> bool {
        matches!(self, DnsError::Call { code: Some(c), .. } if PERMANENT.contains(&c.as_str()))
    }
}

impl Spec {
    /// Calls `f` until it succeeds, retrying transient errors with doubling waits.
    async fn retrying<T, E, R, F, Fut>(
        &self,
        ctx: Option<&Ctx<'_>>,
        op: &str,
        mut f: F,
    ) -> std::result::Result<T, DnsError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, R>>>,
    {
        let mut wait = self.first_wait();
        let mut tries = 0u32;
        loop {
            tries += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) => {
                    let late = match ctx {
                        Some(c) => c.out_of_time(wait),
                        None => tries >= 3,
                    };
                    if late {
                        return Err(DnsError::call(op, e, Some(tries)));
                    }
                    let msg = describe_err(&e);
                    tracing::info!(op, error = %msg, wait = %human_duration(wait), "Route 53 busy; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(DnsError::call(op, e, None)),
            }
        }
    }

    async fn current(
        &self,
        c: &aws_sdk_route53::Client,
        ctx: Option<&Ctx<'_>>,
    ) -> std::result::Result<Option<Current>, DnsError> {
        let s = self;
        let name = fqdn(&s.record);
        let out = self
            .retrying(ctx, "ListResourceRecordSets", || {
                c.list_resource_record_sets()
                    .hosted_zone_id(&s.hosted_zone_id)
                    .start_record_name(&name)
                    .start_record_type(s.rr_type())
                    .max_items(1)
                    .send()
            })
            .await?;
        Ok(out
            .resource_record_sets()
            .iter()
            .find(|r| fqdn(r.name()) == name && *r.r#type() == s.rr_type())
            .map(|r| Current {
                values: normalise(
                    s.record_type,
                    &r.resource_records()
                        .iter()
                        .map(|v| v.value().to_owned())
                        .collect::<Vec<_>>(),
                ),
                ttl: r.ttl().unwrap_or(0),
            }))
    }

    async fn upsert(
        &self,
        c: &aws_sdk_route53::Client,
        ctx: &Ctx<'_>,
    ) -> std::result::Result<(String, bool), DnsError> {
        let s = self;
        let mut rrs = ResourceRecordSet::builder()
            .name(fqdn(&s.record))
            .r#type(s.rr_type())
            .ttl(s.ttl);
        for v in &s.values {
            rrs = rrs.resource_records(ResourceRecord::builder().value(v).build()?);
        }
        let batch = ChangeBatch::builder()
            .comment(format!("cexdr failover run {} step {}", ctx.run, ctx.step))
            .changes(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(rrs.build()?)
                    .build()?,
            )
            .build()?;
        let out = self
            .retrying(Some(ctx), "ChangeResourceRecordSets", || {
                c.change_resource_record_sets()
                    .hosted_zone_id(&s.hosted_zone_id)
                    .change_batch(batch.clone())
                    .send()
            })
            .await?;
        let info = out.change_info().ok_or(DnsError::NoChangeInfo)?;
        Ok((change_id(info.id()), *info.status() == ChangeStatus::Insync))
    }

    async fn wait_insync(
        &self,
        c: &aws_sdk_route53::Client,
        ctx: &Ctx<'_>,
        id: &str,
    ) -> std::result::Result<u32, DnsError> {
        let mut wait = self.first_wait();
        let mut polls = 0;
        loop {
            polls += 1;
            let out = self
                .retrying(Some(ctx), "GetChange", || c.get_change().id(id).send())
                .await?;
            let status = out.change_info().map(|i| i.status().clone());
            if status == Some(ChangeStatus::Insync) {
                return Ok(polls);
            }
            if ctx.out_of_time(wait) {
                return Err(DnsError::NotInsync {
                    id: id.to_owned(),
                    status,
                    polls,
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
}

fn change_id(raw: &str) -> String {
    raw.trim_start_matches("/change/").to_owned()
}

/// Route 53 answers that retrying cannot change (`ListResourceRecordSets:
/// NoSuchHostedZone: …`).
const PERMANENT: [&str; 7] = [
    "NoSuchHostedZone",
    "AccessDenied",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidChangeBatch",
    "InvalidInput",
    "UnrecognizedClientException",
];

impl From<DnsError> for super::Failure {
    fn from(e: DnsError) -> super::Failure {
        super::Failure {
            msg: e.to_string(),
            cause: Some(Box::new(e)),
        }
    }
}

fn fail(ctx: &Ctx<'_>, e: DnsError) -> crate::error::Error {
    let permanent = e.is_permanent();
    super::failed_with(ctx.step, e.into(), permanent)
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

    async fn preview(&self, ctx: &PreviewCtx<'_>) -> Result<Value> {
        let step = ctx.step;
        let c = client(self.region.as_deref(), self.endpoint.as_deref()).await;
        let cur = self
            .current(&c, None)
            .await
            .map_err(|e| super::failed_with(step, e.into(), false))?;
        let target = self.target();
        Ok(json!({
            "record": fqdn(&self.record),
            "current": cur.as_ref().map(|c| json!({ "values": c.values, "ttl": c.ttl })),
            "target": { "values": target, "ttl": self.ttl },
            "would": if cur.as_ref().map(|c| c.values == target).unwrap_or(false) { "nothing (already the target)" } else { "UPSERT" },
        }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let s = self;
        let c = client(s.region.as_deref(), s.endpoint.as_deref()).await;
        let target = s.target();
        // A resumed run polls the journaled change instead of sending it again.
        let mut id = ctx
            .last("change-id")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let resumed = id.is_some();
        if id.is_none() {
            let cur = self
                .current(&c, Some(ctx))
                .await
                .map_err(|m| fail(ctx, m))?;
            let already = cur.as_ref().map(|c| c.values == target).unwrap_or(false);
            if already {
                // Either nothing to do, or an earlier attempt sent the change and
                // crashed before journaling its id: the previous record says which.
                let sent_before = ctx.last("previous").is_some();
                if !sent_before {
                    return Ok(
                        json!({ "changed": false, "record": fqdn(&s.record), "values": target, "reason": "already the target value" }),
                    );
                }
            } else {
                if ctx.last("previous").is_none() {
                    ctx.record(json!({ "previous": cur.as_ref().map(|c| json!({ "values": c.values, "ttl": c.ttl })) }))?;
                }
                let (cid, _insync) = self.upsert(&c, ctx).await.map_err(|m| fail(ctx, m))?;
                ctx.record(json!({ "change-id": cid }))?;
                id = Some(cid);
            }
        }
        let mut polls = 0;
        if let Some(id) = &id {
            if ctx.last("insync-at").is_none() {
                polls = self
                    .wait_insync(&c, ctx, id)
                    .await
                    .map_err(|m| fail(ctx, m))?;
                ctx.record(json!({ "insync-at": Utc::now() }))?;
            }
        } else if ctx.last("insync-at").is_none() {
            ctx.record(json!({ "insync-at": Utc::now() }))?;
        }
        let previous = ctx.last("previous").cloned().unwrap_or(Value::Null);
        let old_ttl = previous
            .get("ttl")
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
            .max(0) as u64;
        let mut waited_ttl = Duration::ZERO;
        if s.wait_ttl.unwrap_or(true) && old_ttl > 0 {
            let insync_at: DateTime<Utc> = ctx
                .last("insync-at")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_else(Utc::now);
            let until = insync_at + chrono::Duration::seconds(old_ttl as i64);
            if let Ok(left) = (until - Utc::now()).to_std() {
                if ctx.out_of_time(left) {
                    return Err(ctx.fail(format!(
                        "the old TTL ({old_ttl}s) does not fit in the step's timeout; raise `timeout`"
                    )));
                }
                tracing::info!(step = ctx.step, wait = %human_duration(left), "waiting out the old record's TTL");
                tokio::time::sleep(left).await;
                waited_ttl = left;
            }
        }
        Ok(json!({
            "changed": true,
            "record": fqdn(&s.record),
            "previous": previous,
            "values": target,
            "ttl": s.ttl,
            "change-id": id,
            "resumed": resumed,
            "polls": polls,
            "waited-ttl-ms": waited_ttl.as_millis() as u64,
        }))
    }
}
