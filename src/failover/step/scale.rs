//! `scale-up`: Deployments and StatefulSets chosen by namespace + label
//! selector (never "all"), scaled through the `/scale` subresource. The
//! previous replica counts are journaled first (for failback); then the step
//! waits until each workload is really ready. An HPA that targets a workload
//! is reported: it may scale it back.
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Invalid, PreviewCtx, Step};
use crate::base::{human_duration, Dur};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    Deployment,
    Statefulset,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    /// Default: $KUBECONFIG / ~/.kube/config, or the in-cluster service account.
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
    pub namespace: String,
    /// A label selector, e.g. `cexdr.io/standby=true`; required and never empty.
    pub selector: String,
    pub replicas: i32,
    pub kinds: Option<Vec<WorkloadKind>>,
    pub poll_interval: Option<Dur>,
    /// A failover adds capacity: a workload that already runs more than
    /// `replicas` is left alone unless this is true (default false).
    pub allow_scale_down: Option<bool>,
}

impl Spec {
    fn check(&self) -> Invalid {
        if self.namespace.trim().is_empty() {
            return Err(("namespace", "must not be empty".into()));
        }
        if self.selector.trim().is_empty() {
            return Err(("selector", "a label selector is required (scaling everything in a namespace is what the old script got wrong)".into()));
        }
        if self.replicas < 1 {
            return Err(("replicas", "must be at least 1".into()));
        }
        if matches!(&self.kinds, Some(k) if k.is_empty()) {
            return Err(("kinds", "name deployment and/or statefulset".into()));
        }
        Ok(())
    }

    fn lines(&self) -> Vec<String> {
        vec![format!(
            "scale {} in namespace {} with labels {} to {} replicas{}, wait until ready",
            self.kinds()
                .iter()
                .map(|k| match k {
                    WorkloadKind::Deployment => "deployments",
                    WorkloadKind::Statefulset => "statefulsets",
                })
                .collect::<Vec<_>>()
                .join(" and "),
            self.namespace,
            self.selector,
            self.replicas,
            self.context
                .as_ref()
                .map(|c| format!(" (context {c})"))
                .unwrap_or_default()
        )]
    }

    fn kinds(&self) -> Vec<WorkloadKind> {
        self.kinds
            .clone()
            .unwrap_or(vec![WorkloadKind::Deployment, WorkloadKind::Statefulset])
    }

    fn poll(&self) -> Duration {
        self.poll_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(2))
    }

    /// The client and where it points (`Kubernetes API URL (context C)`),
    /// so that an unreachable API is named in errors.
    async fn client(&self) -> std::result::Result<(Client, String), super::Failure> {
        use super::Failure;
        crate::base::http::ensure_crypto_provider();
        let opts = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let mut cfg = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    Failure::caused(format_args!("kubeconfig {}", path.display()), e)
                })?;
                Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| {
                        Failure::caused(format_args!("kubeconfig {}", path.display()), e)
                    })?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| Failure::caused("kubeconfig", e))?,
            None => Config::infer()
                .await
                .map_err(|e| Failure::caused("no Kubernetes configuration", e))?,
        };
        cfg.connect_timeout = Some(Duration::from_secs(5));
        cfg.read_timeout = Some(Duration::from_secs(20));
        let at = format!(
            "Kubernetes API {} (context {})",
            cfg.cluster_url,
            self.context.as_deref().unwrap_or("current")
        );
        Client::try_from(cfg)
            .map(|c| (c, at.clone()))
            .map_err(|e| Failure::caused(format_args!("{at}: client"), e))
    }
}

#[derive(Debug, Clone)]
struct Workload {
    kind: WorkloadKind,
    name: String,
    replicas: i32,
}

impl Workload {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::Statefulset => "StatefulSet",
        }
    }
}

fn kerr(e: kube::Error) -> String {
    match &e {
        kube::Error::Api(s) => format!("API {}: {}", s.code, s.message),
        _ => crate::error::one_line(&e),
    }
}

/// 4xx answers other than conflict / throttling cannot get better by retrying
/// (401, 403, 404, 422); neither can a selector that matches nothing.
fn permanent(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429)
}

/// A step failure message and whether a retry could help.
type Fail = (String, bool);

/// Ready = the controller saw the latest spec and N replicas are updated, available and ready.
fn deployment_ready(d: &Deployment, n: i32) -> (bool, String) {
    let gen = d.metadata.generation.unwrap_or(0);
    let st = d.status.clone().unwrap_or_default();
    let obs = st.observed_generation.unwrap_or(0);
    let (u, a, r) = (
        st.updated_replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
        st.ready_replicas.unwrap_or(0),
    );
    (
        obs >= gen && u == n && a == n && r == n,
        format!("generation {obs}/{gen}, updated {u}, available {a}, ready {r} of {n}"),
    )
}

fn statefulset_ready(s: &StatefulSet, n: i32) -> (bool, String) {
    let gen = s.metadata.generation.unwrap_or(0);
    let st = s.status.clone().unwrap_or_default();
    let obs = st.observed_generation.unwrap_or(0);
    let (u, a, r) = (
        st.updated_replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
        st.ready_replicas.unwrap_or(0),
    );
    (
        obs >= gen && u == n && a == n && r == n,
        format!("generation {obs}/{gen}, updated {u}, available {a}, ready {r} of {n}"),
    )
}

impl Spec {
    async fn list(&self, client: &Client, at: &str) -> std::result::Result<Vec<Workload>, Fail> {
        let s = self;
        let lp = ListParams::default().labels(&s.selector);
        let mut out = Vec::new();
        for k in s.kinds() {
            match k {
                WorkloadKind::Deployment => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), &s.namespace);
                    for d in api.list(&lp).await.map_err(|e| {
                        let p = permanent(&e);
                        (
                            format!(
                                "listing deployments in {} at {at}: {}",
                                s.namespace,
                                kerr(e)
                            ),
                            p,
                        )
                    })? {
                        out.push(Workload {
                            kind: k,
                            name: d.metadata.name.unwrap_or_default(),
                            replicas: d.spec.and_then(|s| s.replicas).unwrap_or(1),
                        });
                    }
                }
                WorkloadKind::Statefulset => {
                    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &s.namespace);
                    for d in api.list(&lp).await.map_err(|e| {
                        let p = permanent(&e);
                        (
                            format!(
                                "listing statefulsets in {} at {at}: {}",
                                s.namespace,
                                kerr(e)
                            ),
                            p,
                        )
                    })? {
                        out.push(Workload {
                            kind: k,
                            name: d.metadata.name.unwrap_or_default(),
                            replicas: d.spec.and_then(|s| s.replicas).unwrap_or(1),
                        });
                    }
                }
            }
        }
        if out.is_empty() {
            return Err((
                format!(
                    "selector {:?} matches no {} in namespace {}",
                    s.selector,
                    s.kinds()
                        .iter()
                        .map(|k| match k {
                            WorkloadKind::Deployment => "Deployment",
                            WorkloadKind::Statefulset => "StatefulSet",
                        })
                        .collect::<Vec<_>>()
                        .join(" or "),
                    s.namespace
                ),
                true,
            ));
        }
        Ok(out)
    }

    /// Names of HPAs that target one of the workloads (they may undo the scale).
    async fn hpa_warnings(&self, client: &Client, ws: &[Workload]) -> Vec<String> {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &self.namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => list
                .into_iter()
                .filter_map(|h| {
                    let spec = h.spec?;
                    let t = &spec.scale_target_ref;
                    ws.iter().find(|w| w.name == t.name && w.kind_name() == t.kind).map(|w| {
                        format!(
                            "HPA {} targets {} {} (min {}, max {}): it may change the replica count",
                            h.metadata.name.unwrap_or_default(),
                            w.kind_name(),
                            w.name,
                            spec.min_replicas.unwrap_or(1),
                            spec.max_replicas
                        )
                    })
                })
                .collect(),
            Err(e) => vec![format!("could not list HPAs: {}", kerr(e))],
        }
    }

    /// What `w` should run: `replicas`, or more if it already runs more.
    fn target(&self, w: &Workload) -> i32 {
        if w.replicas > self.replicas && !self.allow_scale_down.unwrap_or(false) {
            w.replicas
        } else {
            self.replicas
        }
    }

    async fn status(
        &self,
        client: &Client,
        w: &Workload,
    ) -> std::result::Result<(bool, String), Fail> {
        let s = self;
        let n = self.target(w);
        match w.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &s.namespace);
                let d = api.get_status(&w.name).await.map_err(|e| {
                    let p = permanent(&e);
                    (format!("Deployment {}: {}", w.name, kerr(e)), p)
                })?;
                Ok(deployment_ready(&d, n))
            }
            WorkloadKind::Statefulset => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), &s.namespace);
                let d = api.get_status(&w.name).await.map_err(|e| {
                    let p = permanent(&e);
                    (format!("StatefulSet {}: {}", w.name, kerr(e)), p)
                })?;
                Ok(statefulset_ready(&d, n))
            }
        }
    }

    async fn scale(&self, client: &Client, w: &Workload) -> std::result::Result<(), Fail> {
        let s = self;
        let patch = Patch::Merge(json!({ "spec": { "replicas": s.replicas } }));
        let pp = PatchParams::default();
        match w.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &s.namespace);
                api.patch_scale(&w.name, &pp, &patch)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let p = permanent(&e);
                        (format!("scaling Deployment {}: {}", w.name, kerr(e)), p)
                    })
            }
            WorkloadKind::Statefulset => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), &s.namespace);
                api.patch_scale(&w.name, &pp, &patch)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let p = permanent(&e);
                        (format!("scaling StatefulSet {}: {}", w.name, kerr(e)), p)
                    })
            }
        }
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

    async fn preview(&self, ctx: &PreviewCtx<'_>) -> Result<Value> {
        let step = ctx.step;
        let e = |m: String| super::step_error(step, m);
        let (client, at) = self
            .client()
            .await
            .map_err(|f| super::failed_with(step, f, false))?;
        let ws = self.list(&client, &at).await.map_err(|(m, _)| e(m))?;
        let warnings = self.hpa_warnings(&client, &ws).await;
        Ok(json!({
            "namespace": self.namespace,
            "workloads": ws.iter().map(|w| json!({ "kind": w.kind_name(), "name": w.name, "current": w.replicas, "target": self.target(w) })).collect::<Vec<_>>(),
            "warnings": warnings,
        }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let fail = |ctx: &Ctx<'_>, (m, permanent): Fail| {
            if permanent {
                ctx.fail_permanently(m)
            } else {
                ctx.fail(m)
            }
        };
        let (client, at) = self.client().await.map_err(|f| ctx.fail_with(f))?;
        let ws = self.list(&client, &at).await.map_err(|f| fail(ctx, f))?;
        // The counts before the first attempt are the ones failback needs: keep them.
        if ctx.last("previous").is_none() {
            ctx.record(json!({ "previous": ws.iter().map(|w| json!({ "kind": w.kind_name(), "name": w.name, "replicas": w.replicas })).collect::<Vec<_>>() }))?;
        }
        let warnings = self.hpa_warnings(&client, &ws).await;
        for w in &warnings {
            tracing::warn!(step = ctx.step, "{w}");
        }
        let mut kept = Vec::new();
        for w in &ws {
            if self.target(w) != self.replicas {
                // Never fewer replicas during a failover (allow-scale-down = false).
                kept.push(format!(
                    "{} {} runs {} > {}: left alone (allow-scale-down = false)",
                    w.kind_name(),
                    w.name,
                    w.replicas,
                    self.replicas
                ));
                continue;
            }
            self.scale(&client, w).await.map_err(|f| fail(ctx, f))?;
        }
        ctx.record(json!({ "scaled": ws.iter().filter(|w| self.target(w) == self.replicas).map(|w| format!("{} {}", w.kind_name(), w.name)).collect::<Vec<_>>(), "replicas": self.replicas, "kept": kept }))?;
        let mut wait = self.poll();
        let mut polls = 0;
        loop {
            polls += 1;
            let mut not_ready = Vec::new();
            for w in &ws {
                let (ready, why) = self.status(&client, w).await.map_err(|f| fail(ctx, f))?;
                if !ready {
                    not_ready.push(format!("{} {}: {why}", w.kind_name(), w.name));
                }
            }
            if not_ready.is_empty() {
                break;
            }
            if ctx.out_of_time(wait) {
                return Err(ctx.fail(format!(
                    "not ready after {polls} polls: {}",
                    not_ready.join("; ")
                )));
            }
            tracing::info!(step = ctx.step, waiting = %not_ready.join("; "), "waiting for workloads");
            tokio::time::sleep(wait).await;
            wait = (wait * 3 / 2).min(Duration::from_secs(15));
        }
        let previous = ctx.last("previous").cloned().unwrap_or(Value::Null);
        Ok(json!({
            "namespace": self.namespace,
            "replicas": self.replicas,
            "previous": previous,
            "ready-after-polls": polls,
            "warnings": warnings,
            "kept": kept,
            "poll-interval": human_duration(self.poll()),
        }))
    }
}
