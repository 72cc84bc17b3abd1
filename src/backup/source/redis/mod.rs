//! Redis RDB snapshots over the replication protocol (issue #4).
//!
//! cexdr connects like a replica: `AUTH`, `REPLCONF rdb-only 1`, `SYNC`
//! (falling back to `REPLCONF capa eof` + `PSYNC ? -1`), skips keepalive
//! newlines, and streams the `$<len>` or `$EOF:<mark>` payload straight into
//! the pipeline while checking the RDB magic, version and CRC-64. A cluster
//! is backed up as one artifact per master, snapshotted in parallel.
use std::io;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{Extract, Opened, Report, Source};
use crate::base::{ByteStream, Secret};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct RedisSpec {
    pub url: String,
    pub username: Option<String>,
    pub password: Secret,
    /// None: detect from `INFO cluster`.
    pub cluster: Option<bool>,
}

/// The keys of a redis job.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisKeys {
    url: Option<String>,
    password_env: Option<String>,
    password_file: Option<std::path::PathBuf>,
    username: Option<String>,
    cluster: Option<bool>,
}

impl super::FromPolicy for RedisSpec {
    type Keys = RedisKeys;

    fn from_policy(k: RedisKeys, input: &super::PolicyInput<'_>) -> Result<RedisSpec> {
        Ok(RedisSpec {
            url: input.url(&k.url, &["redis", "rediss"])?,
            username: k.username,
            password: input.secret(&k.password_env, &k.password_file)?,
            cluster: k.cluster,
        })
    }
}

impl super::SpecInfo for RedisSpec {
    fn describe(&self) -> String {
        format!(
            "  server: {} (cluster: {})\n",
            self.url,
            match self.cluster {
                Some(true) => "yes",
                Some(false) => "no",
                None => "detect",
            }
        )
    }

    fn server_url(&self) -> Option<&str> {
        Some(&self.url)
    }
}

mod conn;
mod drill;
pub mod rdb;
mod tls;

pub use conn::Addr;
use conn::{describe_error, Conn, Info, Reply, IDLE_TIMEOUT};
pub use drill::{restore, restore_test};

/// What restores and checks redis backups.
pub struct RedisKind;

#[async_trait]
impl super::SourceKind for RedisKind {
    async fn validate(&self, stream: ByteStream) -> Result<(u64, Vec<String>)> {
        validate(stream).await
    }
    async fn restore(
        &self,
        catalog: &crate::backup::catalog::Catalog,
        m: &crate::backup::catalog::Manifest,
        to: &str,
        opts: &super::RestoreOptions,
    ) -> Result<String> {
        restore(catalog, m, to, opts).await
    }
    async fn restore_test(
        &self,
        catalog: &crate::backup::catalog::Catalog,
        m: &crate::backup::catalog::Manifest,
        target: &super::ScratchTarget,
    ) -> Result<crate::backup::catalog::Verification> {
        match target.timeout {
            Some(limit) => {
                match tokio::time::timeout(limit, restore_test(catalog, m, target)).await {
                    Ok(r) => r,
                    // The scratch server's guard stops it and removes its folder.
                    Err(_) => Err(Error::Timeout {
                        after: crate::base::human_duration(limit),
                    }),
                }
            }
            None => restore_test(catalog, m, target).await,
        }
    }
}

/// Bytes read from the socket per chunk handed to the pipeline (the
/// pipeline regroups them into 1 MiB blocks).
const CHUNK: usize = 64 << 10;
/// Length of the `$EOF:<mark>` end-of-payload mark.
const MARK_LEN: usize = 40;

pub struct RedisSource {
    job: String,
    spec: RedisSpec,
}

impl RedisSource {
    pub fn new(job: String, spec: RedisSpec) -> Self {
        RedisSource { job, spec }
    }
}

#[derive(Clone)]
struct Creds {
    user: Option<String>,
    pass: Option<String>,
    tls: Option<tls::Tls>,
}

async fn connect_auth(addr: &Addr, creds: &Creds) -> Result<Conn> {
    let mut c = Conn::connect(addr, creds.tls.as_ref()).await?;
    if let Some(p) = &creds.pass {
        match &creds.user {
            Some(u) => c.ok(&[b"AUTH", u.as_bytes(), p.as_bytes()]).await?,
            None => c.ok(&[b"AUTH", p.as_bytes()]).await?,
        };
    }
    Ok(c)
}

/// How the payload is framed.
#[derive(Debug, Clone, Copy)]
enum Form {
    Length(u64),
    Eof([u8; MARK_LEN]),
}

/// A node whose snapshot transfer has begun (header read).
struct Started {
    conn: Conn,
    form: Form,
    details: Map<String, Value>,
}

enum SyncReply {
    Payload(Form),
    Refused(String),
}

/// Reads the reply to SYNC/PSYNC up to the payload header, skipping the
/// keepalive newlines; `+FULLRESYNC <id> <offset>` is returned via `full`.
async fn read_sync_reply(c: &mut Conn, full: &mut Option<(String, u64)>) -> Result<SyncReply> {
    loop {
        let b = c.read_byte().await?;
        match b {
            b'\n' => continue,
            b'-' => {
                let l = c.read_line().await?;
                return Ok(SyncReply::Refused(String::from_utf8_lossy(&l).into_owned()));
            }
            b'+' => {
                let l = String::from_utf8_lossy(&c.read_line().await?).into_owned();
                let mut parts = l.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("FULLRESYNC"), Some(id), Some(off)) => {
                        *full = Some((id.to_owned(), off.parse().unwrap_or(0)));
                    }
                    _ => {
                        return Err(c.err(format!(
                            "unexpected reply {l:?} to the snapshot request: not an RDB transfer"
                        )))
                    }
                }
            }
            b'$' => {
                let l = c.read_line().await?;
                if let Some(mark) = l.strip_prefix(b"EOF:") {
                    let mark: [u8; MARK_LEN] = mark.try_into().map_err(|_| {
                        c.err(format!(
                            "bad end-of-payload mark {:?}",
                            String::from_utf8_lossy(mark)
                        ))
                    })?;
                    return Ok(SyncReply::Payload(Form::Eof(mark)));
                }
                let n = std::str::from_utf8(&l)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        c.err(format!(
                            "bad payload header ${}: not an RDB transfer",
                            String::from_utf8_lossy(&l)
                        ))
                    })?;
                return Ok(SyncReply::Payload(Form::Length(n)));
            }
            other => {
                let mut shown = vec![other];
                if let Ok(l) = c.read_line().await {
                    shown.extend_from_slice(&l);
                }
                shown.truncate(60);
                return Err(c.err(format!(
                    "unexpected reply {:?} to the snapshot request: not an RDB transfer",
                    String::from_utf8_lossy(&shown)
                )));
            }
        }
    }
}

/// The replication handshake on an authenticated connection to a master,
/// up to the first payload byte.
async fn start_snapshot(mut c: Conn, info: &Info) -> Result<Started> {
    if info.get("role") == Some("slave") {
        return Err(c.err(format!(
            "not a master: this server is a replica of {}:{}; point url at the master",
            info.get("master_host").unwrap_or("?"),
            info.get("master_port").unwrap_or("?")
        )));
    }
    // rdb-only: the server sends the snapshot, then closes the link and
    // keeps no replica state for us (Redis 7.0+; older servers refuse it).
    let rdb_only = match c.cmd(&[b"REPLCONF", b"rdb-only", b"1"]).await? {
        Reply::Error(e) if e.starts_with("NOPERM") => {
            return Err(c.err(describe_error(b"replconf", &e)))
        }
        Reply::Error(_) => false,
        _ => true,
    };
    // Key counts right before the fork (Redis refuses SYNC pipelined behind
    // another reply, so this cannot be atomic with it).
    let mut keyspace = c.info("keyspace").await?.keyspace();
    c.send(&[&[b"SYNC"]]).await?;
    let mut full = None;
    let (form, transfer) = match read_sync_reply(&mut c, &mut full).await? {
        SyncReply::Payload(f) => (f, "sync"),
        SyncReply::Refused(e) if e.starts_with("NOPERM") || e.contains("unknown command") => {
            // The EOF-marker form (what redis-cli --rdb uses): for servers
            // where only PSYNC is allowed.
            if let Reply::Error(e2) = c.cmd(&[b"REPLCONF", b"capa", b"eof"]).await? {
                return Err(c.err(describe_error(b"replconf", &e2)));
            }
            keyspace = c.info("keyspace").await?.keyspace();
            c.send(&[&[b"PSYNC", b"?", b"-1"]]).await?;
            match read_sync_reply(&mut c, &mut full).await? {
                SyncReply::Payload(f) => (f, "psync"),
                SyncReply::Refused(e2) => {
                    return Err(c.err(format!(
                        "{}; PSYNC was refused too: {}",
                        describe_error(b"sync", &e),
                        e2
                    )))
                }
            }
        }
        SyncReply::Refused(e) => {
            return Err(c.err(format!(
                "the server refused the replica link: {}",
                describe_error(b"sync", &e)
            )))
        }
    };
    let mut d = Map::new();
    d.insert("node".into(), json!(c.addr.to_string()));
    d.insert("redis_version".into(), json!(info.get("redis_version")));
    d.insert(
        "transfer".into(),
        json!(match form {
            Form::Length(_) => format!("{transfer}, length-prefixed"),
            Form::Eof(_) => format!("{transfer}, eof-marked"),
        }),
    );
    d.insert("rdb_only".into(), json!(rdb_only));
    d.insert("keyspace".into(), Value::Object(keyspace));
    if let Some((id, off)) = full {
        d.insert(
            "replication".into(),
            json!({"id": id, "offset": off, "from": "FULLRESYNC"}),
        );
    }
    Ok(Started {
        conn: c,
        form,
        details: d,
    })
}

/// Streams the payload into `tx`, checking it as it passes. The newest
/// chunk is held back until the next one arrives, so a bad checksum fails
/// the stream before its last byte reaches the store.
async fn pump(c: Conn, form: Form, tx: mpsc::Sender<io::Result<Bytes>>) -> Result<rdb::Summary> {
    let mut p = Payload::new(c, form, tx);
    while p.left != Some(0) {
        let buf = p.read().await?;
        let Some((data, ended)) = p.frame(buf) else {
            continue;
        };
        if !data.is_empty() {
            p.forward(data).await?;
        }
        if ended {
            break;
        }
    }
    p.finish().await
}

/// A payload being pumped: the connection, where the payload ends, and
/// what has passed so far.
struct Payload {
    c: Conn,
    form: Form,
    out: Downstream,
    checker: rdb::Checker,
    /// The newest chunk, held back (see `pump`).
    pending: Option<Bytes>,
    /// Bytes still to read of a length-prefixed payload.
    left: Option<u64>,
    /// An EOF-marked payload's bytes that may be the start of the mark.
    tail: BytesMut,
    got: u64,
}

impl Payload {
    fn new(c: Conn, form: Form, tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Payload {
            out: Downstream {
                what: format!("redis {}", c.addr),
                tx,
            },
            c,
            form,
            checker: rdb::Checker::new(),
            pending: None,
            left: match form {
                Form::Length(n) => Some(n),
                Form::Eof(_) => None,
            },
            tail: BytesMut::new(),
            got: 0,
        }
    }

    /// The next read of the connection (never empty: the server closing
    /// it early is a truncated transfer).
    async fn read(&mut self) -> Result<BytesMut> {
        let got = self.got;
        let want = self.left.map_or(CHUNK, |l| l.min(CHUNK as u64) as usize);
        let mut buf = BytesMut::with_capacity(want);
        let read = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut self.c.io).take(want as u64).read_buf(&mut buf),
        )
        .await;
        let n = match read {
            Err(_) => {
                return Err(self
                    .out
                    .fail(
                        format!("no data for {IDLE_TIMEOUT:?} after {got} snapshot bytes"),
                        None,
                    )
                    .await)
            }
            Ok(Err(e)) => {
                return Err(self
                    .out
                    .fail(
                        format!("connection lost after {got} snapshot bytes: {e}"),
                        Some(e.into()),
                    )
                    .await)
            }
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            let msg = match self.form {
                Form::Length(total) => format!(
                    "the server closed the connection after {got} of {total} snapshot bytes (truncated transfer)"
                ),
                Form::Eof(_) => format!(
                    "the server closed the connection after {got} snapshot bytes, before the end-of-payload mark (truncated transfer)"
                ),
            };
            return Err(self.out.fail(msg, None).await);
        }
        self.got += n as u64;
        Ok(buf)
    }

    /// The payload bytes of a read, and whether the payload ended with
    /// it; None while an EOF-marked payload's bytes may still be its mark.
    fn frame(&mut self, buf: BytesMut) -> Option<(Bytes, bool)> {
        match self.form {
            Form::Length(_) => {
                self.left = self.left.map(|l| l - buf.len() as u64);
                Some((buf.freeze(), false))
            }
            Form::Eof(mark) => {
                let tail = &mut self.tail;
                tail.extend_from_slice(&buf);
                // Servers without rdb-only go on with the replication
                // stream right after the mark, maybe in the same read.
                if let Some(at) = tail.windows(MARK_LEN).position(|w| w == mark) {
                    Some((tail.split_to(at).freeze(), true))
                } else if tail.len() > MARK_LEN {
                    Some((tail.split_to(tail.len() - MARK_LEN).freeze(), false))
                } else {
                    None
                }
            }
        }
    }

    /// Checks `data` and sends the chunk held back before it.
    async fn forward(&mut self, data: Bytes) -> Result<()> {
        if let Err(m) = self.checker.feed(&data) {
            return Err(self.out.fail(m.to_string(), Some(m.into())).await);
        }
        if let Some(p) = self.pending.replace(data) {
            self.out.send(p).await?;
        }
        Ok(())
    }

    /// The end of the payload: its checksum, then the last chunk.
    async fn finish(self) -> Result<rdb::Summary> {
        match self.checker.finish() {
            Ok(sum) => {
                if let Some(p) = self.pending {
                    self.out.send(p).await?;
                }
                Ok(sum)
            }
            Err(m) => Err(self.out.fail(m.to_string(), Some(m.into())).await),
        }
    }
}

/// Where the payload goes: the backup pipeline's stream.
struct Downstream {
    tx: mpsc::Sender<io::Result<Bytes>>,
    what: String,
}

impl Downstream {
    /// The error also goes down the stream, so the store never finishes
    /// the object. The stream gets the text; the error returned keeps the
    /// cause.
    async fn fail(
        &self,
        msg: String,
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        let _ = self
            .tx
            .send(Err(Error::source_err(&self.what, &msg).into_io()))
            .await;
        Error::Source {
            what: self.what.clone(),
            msg,
            cause,
        }
    }

    /// A checked chunk; a pipeline that stopped reading stops the pump.
    async fn send(&self, p: Bytes) -> Result<()> {
        if self.tx.send(Ok(p)).await.is_err() {
            return Err(Error::source_err(&self.what, "the backup pipeline stopped"));
        }
        Ok(())
    }
}

/// Turns a started transfer into an extract named `name`.
fn extract(name: String, s: Started) -> Extract {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(2);
    let stream: ByteStream = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let Started {
        conn,
        form,
        mut details,
    } = s;
    let task = tokio::spawn(pump(conn, form, tx));
    let finish = async move {
        let sum = task
            .await
            .map_err(|e| Error::source_with("redis snapshot", "task failed", e))??;
        let mut warnings = Vec::new();
        if sum.crc64.is_none() {
            warnings.push(format!(
                "{}: the server writes RDB files without a checksum (rdbchecksum no); only the stored SHA-256 protects this snapshot",
                details["node"].as_str().unwrap_or("redis")
            ));
        }
        if !details.contains_key("replication") {
            if let (Some(id), Some(off)) = (sum.aux.get("repl-id"), sum.aux.get("repl-offset")) {
                details.insert(
                    "replication".into(),
                    json!({"id": id, "offset": off, "from": "rdb"}),
                );
            }
        }
        if let Value::Object(extra) = sum.details() {
            details.extend(extra);
        }
        Ok(Report {
            details: Value::Object(details),
            warnings,
        })
    }
    .boxed();
    Extract {
        name,
        stream,
        finish,
    }
}

/// A master of a cluster, from `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq)]
struct Shard {
    node_id: String,
    host: String,
    port: u16,
    slots: Vec<String>,
}

/// Why a CLUSTER NODES answer cannot be captured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ClusterNodesError {
    #[error("unexpected CLUSTER NODES line {0:?}")]
    Line(String),
    #[error("master {id} ({addr}) is marked {flags}: its slots {slots} cannot be captured")]
    Failed {
        id: String,
        addr: String,
        flags: String,
        slots: String,
    },
    #[error("bad node address {0:?}")]
    Address(String),
}

/// Masters that own slots, sorted by their first slot.
fn parse_cluster_nodes(
    text: &str,
    seed_host: &str,
) -> std::result::Result<Vec<Shard>, ClusterNodesError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(ClusterNodesError::Line(line.to_owned()));
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        if !flags.contains(&"master") {
            continue;
        }
        let slots: Vec<String> = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| s.to_string())
            .collect();
        if slots.is_empty() {
            continue;
        }
        if flags.contains(&"fail") || flags.contains(&"noaddr") {
            return Err(ClusterNodesError::Failed {
                id: f[0].to_owned(),
                addr: f[1].to_owned(),
                flags: f[2].to_owned(),
                slots: slots.join(","),
            });
        }
        let hostport = f[1].split(['@', ',']).next().unwrap_or("");
        let (h, p) = hostport
            .rsplit_once(':')
            .ok_or_else(|| ClusterNodesError::Address(f[1].to_owned()))?;
        let host = if h.is_empty() { seed_host } else { h };
        out.push(Shard {
            node_id: f[0].to_owned(),
            host: host.trim_matches(['[', ']']).to_owned(),
            port: p
                .parse()
                .map_err(|_| ClusterNodesError::Address(f[1].to_owned()))?,
            slots,
        });
    }
    let first = |s: &Shard| {
        s.slots[0]
            .split('-')
            .next()
            .and_then(|x| x.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    };
    out.sort_by_key(first);
    Ok(out)
}

fn slot_count(slots: &[String]) -> u32 {
    slots
        .iter()
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap_or(0) + 1 - a.parse::<u32>().unwrap_or(0),
            None => 1,
        })
        .sum()
}

#[async_trait]
impl Source for RedisSource {
    async fn open(&self) -> Result<Opened> {
        let what = format!("redis {}", self.spec.url);
        let addr = Addr::parse(&self.spec.url).map_err(|m| Error::source_from(&what, m))?;
        let user = self.spec.username.clone().or(addr.user.clone());
        let pass = self.spec.password.read()?;
        if user.is_some() && pass.is_none() {
            return Err(Error::Usage(format!(
                "job {}: username is set but no password-env or password-file",
                self.job
            )));
        }
        let tls = if addr.tls {
            Some(tls::Tls::new(&what)?)
        } else {
            None
        };
        let creds = Creds { user, pass, tls };
        let mut seed = connect_auth(&addr, &creds).await?;
        let info = Info::parse(&seed.ok(&[b"INFO"]).await?.text());
        let enabled = info.get("cluster_enabled") == Some("1");
        let cluster = match self.spec.cluster {
            Some(true) if !enabled => {
                return Err(seed.err(
                    "cluster = true, but this server has cluster mode disabled (INFO cluster: cluster_enabled:0)",
                ))
            }
            Some(c) => c,
            None => enabled,
        };
        let version = info.get("redis_version").map(str::to_owned);
        if !cluster {
            let started = start_snapshot(seed, &info).await?;
            let mut details = json!({
                "mode": "standalone",
                "redis_version": version,
            });
            if enabled {
                details["note"] =
                    json!("cluster = false: only this node's slots are in the backup");
            }
            return Ok(Opened {
                extracts: vec![extract("dump.rdb".into(), started)],
                details,
                parts: None,
            });
        }

        let nodes = seed.ok(&[b"CLUSTER", b"NODES"]).await?.text();
        drop(seed);
        let shards =
            parse_cluster_nodes(&nodes, &addr.host).map_err(|m| Error::source_from(&what, m))?;
        if shards.is_empty() {
            return Err(Error::source_err(
                &what,
                "the cluster has no master owning slots",
            ));
        }
        let covered: u32 = shards.iter().map(|s| slot_count(&s.slots)).sum();
        // Every master at once: shards are captured at about the same time,
        // not at the same instant (as with redis-cli --cluster backup).
        let starts = shards.iter().map(|s| {
            let a = addr.with_host_port(&s.host, s.port);
            let creds = creds.clone();
            async move {
                let mut c = connect_auth(&a, &creds).await?;
                let info = Info::parse(&c.ok(&[b"INFO"]).await?.text());
                start_snapshot(c, &info).await
            }
        });
        let started = futures::future::join_all(starts).await;
        let mut extracts = Vec::new();
        let mut listed = Vec::new();
        for (s, st) in shards.iter().zip(started) {
            // Any shard that cannot start fails the whole backup (the
            // others' connections close when dropped).
            let st = st?;
            let name = format!("shard-{}.rdb", s.node_id);
            listed.push(json!({
                "name": name,
                "node_id": s.node_id,
                "node": format!("{}:{}", s.host, s.port),
                "slots": s.slots,
            }));
            extracts.push(extract(name, st));
        }
        let mut details = json!({
            "mode": "cluster",
            "redis_version": version,
            "shards": listed,
            "slots_covered": covered,
        });
        if covered != 16384 {
            details["note"] = json!(format!("only {covered} of 16384 slots are assigned"));
        }
        Ok(Opened {
            extracts,
            details,
            parts: None,
        })
    }
}

/// Checks the decompressed RDB of a stored artifact (magic, version, CRC).
pub async fn validate(mut stream: ByteStream) -> Result<(u64, Vec<String>)> {
    use futures::StreamExt;
    let mut c = rdb::Checker::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::io("reading artifact", e))?;
        c.feed(&chunk)
            .map_err(|m| Error::source_from("RDB check", m))?;
    }
    let sum = c.finish().map_err(|m| Error::source_from("RDB check", m))?;
    Ok((sum.bytes, sum.checks()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_golden() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [42->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001 myself,master - 0 0 1 connected 0-5460
aaaa000000000000000000000000000000000000 127.0.0.1:30009@31009 master - 0 0 9 connected
";
        let s = parse_cluster_nodes(text, "10.1.1.1").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].host.as_str(), s[0].port, s[0].slots.clone()),
            ("10.1.1.1", 30001, vec!["0-5460".to_string()])
        );
        assert_eq!(s[1].node_id, "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1");
        assert_eq!(s[2].slots, vec!["10923-16383".to_string()]);
        assert_eq!(s.iter().map(|x| slot_count(&x.slots)).sum::<u32>(), 16384);

        let failed = "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master,fail - 0 1 2 connected 5461-10922\n";
        assert!(parse_cluster_nodes(failed, "h")
            .unwrap_err()
            .to_string()
            .contains("marked master,fail"));
    }
}
