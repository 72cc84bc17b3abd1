//! Small local servers the failover tests start on 127.0.0.1 port 0: a
//! scripted Route 53, a Kubernetes API speaking the endpoints cexdr uses,
//! HTTP health endpoints and webhook receivers, a scratch MariaDB and an
//! aiosmtpd SMTP server. They are real servers on real sockets, spoken to by
//! the real clients (aws-sdk-route53, kube-rs, reqwest, lettre, mysql_async).
#![allow(dead_code)]
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------- HTTP

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

pub struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(status: u16, v: &Value) -> Resp {
        Resp {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap(),
        }
    }
    pub fn text(status: u16, s: &str) -> Resp {
        Resp {
            status,
            content_type: "text/plain",
            body: s.as_bytes().to_vec(),
        }
    }
    pub fn xml(status: u16, s: String) -> Resp {
        Resp {
            status,
            content_type: "text/xml",
            body: s.into_bytes(),
        }
    }
}

pub type Handler = Arc<dyn Fn(Req) -> BoxFuture<'static, Resp> + Send + Sync>;

pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_req(sock: &mut tokio::net::TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let mut parts = first.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect();
    Some(Req {
        method,
        path: pct_decode(path),
        query,
        headers,
        body,
    })
}

/// Serves `handler`; `read_delay` holds each connection before reading it.
pub async fn serve(handler: Handler, read_delay: Duration) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                continue;
            };
            let h = handler.clone();
            tokio::spawn(async move {
                if !read_delay.is_zero() {
                    tokio::time::sleep(read_delay).await;
                }
                let Some(req) = read_req(&mut sock).await else {
                    return;
                };
                let r = h(req).await;
                let head = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    r.status,
                    r.content_type,
                    r.body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&r.body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server {
        addr,
        url: format!("http://{addr}"),
        task,
    }
}

pub fn handler<F>(f: F) -> Handler
where
    F: Fn(Req) -> Resp + Send + Sync + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |r| {
        let f = f.clone();
        Box::pin(async move { f(r) })
    })
}

/// A port with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A port that accepts connections and never answers (a hung host).
pub async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let t = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, t)
}

// ---------------------------------------------------------------- health + receivers

/// `GET /healthz` answering `status` (changeable) with body `{"status":"ok"}`.
pub struct Health {
    pub server: Server,
    pub status: Arc<Mutex<u16>>,
    pub hits: Arc<Mutex<u32>>,
}

pub async fn health(status: u16) -> Health {
    let st = Arc::new(Mutex::new(status));
    let hits = Arc::new(Mutex::new(0));
    let (s2, h2) = (st.clone(), hits.clone());
    let server = serve(
        handler(move |_r| {
            *h2.lock().unwrap() += 1;
            let s = *s2.lock().unwrap();
            Resp::text(
                s,
                if s == 200 {
                    "{\"status\":\"ok\"}"
                } else {
                    "{\"status\":\"down\"}"
                },
            )
        }),
        Duration::ZERO,
    )
    .await;
    Health {
        server,
        status: st,
        hits,
    }
}

/// Headers (lower-case names) and JSON body of one received request.
pub type Received = (BTreeMap<String, String>, Value);

/// Records every POST it receives (body JSON + headers).
pub struct Receiver {
    pub server: Server,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn messages(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
    pub fn url(&self) -> String {
        format!("{}/hook", self.server.url)
    }
}

pub async fn receiver(status: u16, read_delay: Duration) -> Receiver {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let server = serve(
        handler(move |r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            g.lock().unwrap().push((r.headers, v));
            Resp::text(status, "ok")
        }),
        read_delay,
    )
    .await;
    Receiver { server, got }
}

// ---------------------------------------------------------------- Route 53

#[derive(Default)]
pub struct R53State {
    /// (name, type) → (ttl, values)
    pub records: BTreeMap<(String, String), (i64, Vec<String>)>,
    /// Errors to answer first, per operation ("list", "change", "get"), in order.
    pub script: BTreeMap<&'static str, VecDeque<&'static str>>,
    /// GetChange answers PENDING this many times per change, then INSYNC.
    pub pending_polls: u32,
    pub accepted_changes: Vec<String>,
    pub calls: BTreeMap<&'static str, u32>,
    pub polls: BTreeMap<String, u32>,
}

pub struct Route53 {
    pub server: Server,
    pub state: Arc<Mutex<R53State>>,
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(a) {
        let r = &rest[i + a.len()..];
        match r.find(b) {
            Some(j) => {
                out.push(&r[..j]);
                rest = &r[j + b.len()..];
            }
            None => break,
        }
    }
    out
}

const NS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

fn r53_error(code: &str) -> Resp {
    Resp::xml(
        400,
        format!("<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>scripted {code}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"),
    )
}

fn change_info(id: &str, status: &str) -> String {
    format!("<ChangeInfo><Id>/change/{id}</Id><Status>{status}</Status><SubmittedAt>2026-11-25T00:00:00.000Z</SubmittedAt></ChangeInfo>")
}

pub async fn route53(pending_polls: u32) -> Route53 {
    let state = Arc::new(Mutex::new(R53State {
        pending_polls,
        ..Default::default()
    }));
    let st = state.clone();
    let server = serve(
        handler(move |r| {
            let mut s = st.lock().unwrap();
            let op = if r.path.ends_with("/rrset") && r.method == "GET" {
                "list"
            } else if r.path.ends_with("/rrset/") || (r.path.ends_with("/rrset") && r.method == "POST") {
                "change"
            } else if r.path.starts_with("/2013-04-01/change/") {
                "get"
            } else {
                return Resp::text(404, "unknown path");
            };
            *s.calls.entry(op).or_default() += 1;
            if let Some(code) = s.script.get_mut(op).and_then(|q| q.pop_front()) {
                return r53_error(code);
            }
            match op {
                "list" => {
                    let name = r.query.get("name").cloned().unwrap_or_default();
                    let ty = r.query.get("type").cloned().unwrap_or_default();
                    let mut body = String::new();
                    if let Some((ttl, vals)) = s.records.get(&(name.clone(), ty.clone())) {
                        let rr: String = vals.iter().map(|v| format!("<ResourceRecord><Value>{v}</Value></ResourceRecord>")).collect();
                        body = format!("<ResourceRecordSet><Name>{name}</Name><Type>{ty}</Type><TTL>{ttl}</TTL><ResourceRecords>{rr}</ResourceRecords></ResourceRecordSet>");
                    }
                    Resp::xml(200, format!("<?xml version=\"1.0\"?>\n<ListResourceRecordSetsResponse xmlns=\"{NS}\"><ResourceRecordSets>{body}</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems></ListResourceRecordSetsResponse>"))
                }
                "change" => {
                    let body = String::from_utf8_lossy(&r.body).into_owned();
                    let name = between(&body, "<Name>", "</Name>").first().map(|s| s.to_string()).unwrap_or_default();
                    let ty = between(&body, "<Type>", "</Type>").first().map(|s| s.to_string()).unwrap_or_default();
                    let ttl: i64 = between(&body, "<TTL>", "</TTL>").first().and_then(|s| s.parse().ok()).unwrap_or(0);
                    let vals = between(&body, "<Value>", "</Value>").iter().map(|s| s.to_string()).collect();
                    s.records.insert((name, ty), (ttl, vals));
                    let id = format!("C{:04}", s.accepted_changes.len() + 1);
                    s.accepted_changes.push(id.clone());
                    Resp::xml(200, format!("<?xml version=\"1.0\"?>\n<ChangeResourceRecordSetsResponse xmlns=\"{NS}\">{}</ChangeResourceRecordSetsResponse>", change_info(&id, "PENDING")))
                }
                _ => {
                    let id = r.path.trim_start_matches("/2013-04-01/change/").to_owned();
                    let pending = s.pending_polls;
                    let n = s.polls.entry(id.clone()).or_default();
                    *n += 1;
                    let status = if *n > pending { "INSYNC" } else { "PENDING" };
                    Resp::xml(200, format!("<?xml version=\"1.0\"?>\n<GetChangeResponse xmlns=\"{NS}\">{}</GetChangeResponse>", change_info(&id, status)))
                }
            }
        }),
        Duration::ZERO,
    )
    .await;
    Route53 { server, state }
}

// ---------------------------------------------------------------- Kubernetes

#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: &'static str, // "deployments" | "statefulsets"
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub replicas: i32,
    pub generation: i64,
    pub observed: i64,
    pub ready: i32,
}

#[derive(Default)]
pub struct KubeState {
    pub workloads: Vec<Workload>,
    /// Rollouts finish at the first status read (benchmarks: no waiting).
    pub instant: bool,
    /// An HPA (name, target kind, target name).
    pub hpas: Vec<(String, String, String)>,
    pub scale_calls: Vec<(String, i32)>,
    pub requests: Vec<String>,
}

pub struct Kube {
    pub server: Server,
    pub state: Arc<Mutex<KubeState>>,
    pub kubeconfig: PathBuf,
}

fn matches_selector(labels: &BTreeMap<String, String>, sel: &str) -> bool {
    sel.split(',')
        .filter(|s| !s.is_empty())
        .all(|t| match t.split_once('=') {
            Some((k, v)) => labels.get(k.trim()).map(|x| x == v.trim()).unwrap_or(false),
            None => labels.contains_key(t.trim()),
        })
}

fn workload_json(w: &Workload, ns: &str) -> Value {
    let kind = if w.kind == "deployments" {
        "Deployment"
    } else {
        "StatefulSet"
    };
    let mut spec = json!({
        "replicas": w.replicas,
        "selector": { "matchLabels": w.labels },
        "template": { "metadata": { "labels": w.labels }, "spec": { "containers": [{ "name": "app", "image": "cex/app:1" }] } },
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(w.name);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": { "name": w.name, "namespace": ns, "labels": w.labels, "generation": w.generation, "resourceVersion": "1" },
        "spec": spec,
        "status": {
            "observedGeneration": w.observed,
            "replicas": w.ready,
            "updatedReplicas": w.ready,
            "readyReplicas": w.ready,
            "availableReplicas": w.ready,
        },
    })
}

/// `GET .../status` advances the rollout one step per poll: first the
/// controller observes the new generation, then one more replica is ready.
fn advance(w: &mut Workload) {
    if w.observed < w.generation {
        w.observed = w.generation;
    } else if w.ready < w.replicas {
        w.ready += 1;
    } else if w.ready > w.replicas {
        w.ready = w.replicas;
    }
}

pub async fn kube(dir: &Path, workloads: Vec<Workload>) -> Kube {
    let state = Arc::new(Mutex::new(KubeState {
        workloads,
        ..Default::default()
    }));
    let st = state.clone();
    let server = serve(
        handler(move |r| {
            let mut s = st.lock().unwrap();
            s.requests.push(format!("{} {}", r.method, r.path));
            let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
            // /apis/apps/v1/namespaces/{ns}/{kind}[/{name}[/scale|/status]]
            if parts.len() >= 6 && parts[0] == "apis" && parts[1] == "autoscaling" {
                let ns = parts[4];
                let items: Vec<Value> = s.hpas.iter().map(|(n, k, t)| json!({
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": { "name": n, "namespace": ns },
                    "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": k, "name": t }, "minReplicas": 1, "maxReplicas": 10 },
                })).collect();
                return Resp::json(200, &json!({ "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {}, "items": items }));
            }
            if parts.len() < 6 || parts[0] != "apis" || parts[1] != "apps" {
                return Resp::json(404, &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404 }));
            }
            let ns = parts[4].to_owned();
            let kind = parts[5];
            if parts.len() == 6 && r.method == "GET" {
                let sel = r.query.get("labelSelector").cloned().unwrap_or_default();
                let items: Vec<Value> = s
                    .workloads
                    .iter()
                    .filter(|w| w.kind == kind && matches_selector(&w.labels, &sel))
                    .map(|w| workload_json(w, &ns))
                    .collect();
                let list_kind = if kind == "deployments" { "DeploymentList" } else { "StatefulSetList" };
                return Resp::json(200, &json!({ "apiVersion": "apps/v1", "kind": list_kind, "metadata": { "resourceVersion": "1" }, "items": items }));
            }
            let name = parts.get(6).copied().unwrap_or_default().to_owned();
            let sub = parts.get(7).copied();
            let Some(i) = s.workloads.iter().position(|w| w.kind == kind && w.name == name) else {
                return Resp::json(404, &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{kind} {name} not found"), "reason": "NotFound", "code": 404 }));
            };
            match (r.method.as_str(), sub) {
                ("PATCH", Some("scale")) => {
                    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    let n = v["spec"]["replicas"].as_i64().unwrap_or(-1) as i32;
                    s.scale_calls.push((name.clone(), n));
                    let w = &mut s.workloads[i];
                    if w.replicas != n {
                        w.replicas = n;
                        w.generation += 1;
                    }
                    let w = w.clone();
                    Resp::json(200, &json!({
                        "apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": { "name": w.name, "namespace": ns },
                        "spec": { "replicas": w.replicas }, "status": { "replicas": w.ready },
                    }))
                }
                ("GET", Some("status")) | ("GET", None) => {
                    let instant = s.instant;
                    let w = &mut s.workloads[i];
                    advance(w);
                    while instant && (w.observed < w.generation || w.ready != w.replicas) {
                        advance(w);
                    }
                    let w = w.clone();
                    Resp::json(200, &workload_json(&w, &ns))
                }
                _ => Resp::json(405, &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "method not allowed", "code": 405 })),
            }
        }),
        Duration::ZERO,
    )
    .await;
    let kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &server.url);
    Kube {
        server,
        state,
        kubeconfig,
    }
}

pub fn write_kubeconfig(path: &Path, server: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: backup\n  cluster:\n    server: {server}\nusers:\n- name: sre\n  user:\n    token: test-token\ncontexts:\n- name: cex-backup\n  context:\n    cluster: backup\n    user: sre\n    namespace: cex-app\ncurrent-context: cex-backup\n"
        ),
    )
    .unwrap();
}

pub fn workload(
    kind: &'static str,
    name: &str,
    labels: &[(&str, &str)],
    replicas: i32,
) -> Workload {
    Workload {
        kind,
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        replicas,
        generation: 1,
        observed: 1,
        ready: replicas,
    }
}

// ---------------------------------------------------------------- SMTP

/// aiosmtpd on a free port; every message is appended to `dir/mail.jsonl`.
pub struct Smtp {
    pub port: u16,
    pub file: PathBuf,
    child: std::process::Child,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub fn smtp(dir: &Path) -> Smtp {
    let python = crate::common::service("CEXDR_TEST_PYTHON");
    let port = closed_port();
    let file = dir.join("mail.jsonl");
    let script = dir.join("smtpd.py");
    std::fs::write(
        &script,
        r#"
import asyncio, json, sys, email
from aiosmtpd.controller import Controller
port, out = int(sys.argv[1]), sys.argv[2]
class H:
    async def handle_DATA(self, server, session, envelope):
        m = email.message_from_bytes(envelope.content)
        with open(out, "a") as f:
            f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                "subject": m["Subject"], "message_id": m["Message-ID"],
                                "body": m.get_payload(decode=True).decode("utf-8", "replace")}) + "\n")
        return "250 OK"
c = Controller(H(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
import time
while True:
    time.sleep(3600)
"#,
    )
    .unwrap();
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .arg(port.to_string())
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
    Smtp { port, file, child }
}

// ---------------------------------------------------------------- scratch MariaDB

/// A private mariadbd (own datadir, free port) that a test may fence without
/// touching the shared server.
pub struct ScratchMariadb {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for ScratchMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScratchMariadb {
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }
}

pub fn scratch_mariadb() -> ScratchMariadb {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = std::process::Command::new("mariadb-install-db")
        .args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ])
        .arg(format!("--datadir={}", data.display()))
        .output()
        .expect("mariadb-install-db");
    assert!(
        st.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let port = closed_port();
    let child = std::process::Command::new("mariadbd")
        .args([
            "--no-defaults",
            "--user=root",
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.path().join("sock").display()))
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
        .spawn()
        .expect("mariadbd");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ScratchMariadb {
        port,
        child,
        _dir: dir,
    }
}
