//! `cexdr failover` end to end through the binary, against local fakes that
//! are real servers: a scripted Route 53 (PENDING → INSYNC, throttling), a
//! Kubernetes API reached through a kubeconfig, HTTP health endpoints, Slack
//! and webhook receivers, aiosmtpd, and the real MariaDB as the backup
//! site's database. See tests/fakes/mod.rs; Route 53 against moto is in
//! tests/failover_moto.rs.
use crate::common;
use crate::fakes;
use crate::mariadb_server::MariaDb;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;

use fakes::*;

const SLACK_VAR: &str = "FO_TEST_SLACK_URL";
const SMS_VAR: &str = "FO_TEST_SMS_TOKEN";
const DB_PW_VAR: &str = "FO_TEST_BACKUP_DB_PASSWORD";
const DB_PW: &str = "fo-backup-secret";

/// The backup site's database: a separate database and user on the real MariaDB.
async fn backup_db() -> String {
    let root = common::mysql_url();
    let pool = mysql_async::Pool::new(root.as_str());
    let mut c = pool.get_conn().await.expect("MariaDB");
    for q in [
        "CREATE DATABASE IF NOT EXISTS cexdr_fo_backup".to_owned(),
        "CREATE TABLE IF NOT EXISTS cexdr_fo_backup.accounts (id INT PRIMARY KEY)".to_owned(),
        "INSERT IGNORE INTO cexdr_fo_backup.accounts VALUES (1)".to_owned(),
        format!("CREATE USER IF NOT EXISTS 'cexdr_fo'@'%' IDENTIFIED BY '{DB_PW}'"),
        format!("CREATE USER IF NOT EXISTS 'cexdr_fo'@'localhost' IDENTIFIED BY '{DB_PW}'"),
        "GRANT SELECT ON cexdr_fo_backup.* TO 'cexdr_fo'@'%'".to_owned(),
        "GRANT SELECT ON cexdr_fo_backup.* TO 'cexdr_fo'@'localhost'".to_owned(),
    ] {
        c.query_drop(q)
            .await
            .expect("setting up the backup database");
    }
    drop(c);
    pool.disconnect().await.unwrap();
    let o = mysql_async::Opts::from_url(&root).unwrap();
    format!(
        "mysql://cexdr_fo@{}:{}/cexdr_fo_backup",
        o.ip_or_hostname(),
        o.tcp_port()
    )
}

struct Site {
    dir: tempfile::TempDir,
    primary: Health,
    backup: Health,
    r53: Route53,
    kube: Kube,
    slack: Receiver,
    sms: Receiver,
    smtp: Smtp,
    backup_db: String,
    runbook: PathBuf,
    /// With `Knobs::promote`: the old primary (killed) and its GTID replica.
    pair: Option<(MariaDb, MariaDb)>,
}

struct Knobs {
    primary_up: bool,
    /// GetChange answers PENDING this often first.
    pending: u32,
    /// Slow fakes, so that a kill can land in the middle of each step.
    slow: bool,
    /// The SMS webhook holds each request this long before reading it.
    receiver_delay: Duration,
    /// Every wait satisfied at once (the benchmark).
    instant: bool,
    /// A private primary (with rows, then kill -9) + GTID replica, and a
    /// promote-mysql step after the fence.
    promote: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            primary_up: false,
            pending: 2,
            slow: false,
            receiver_delay: Duration::ZERO,
            instant: false,
            promote: false,
        }
    }
}

const ZONE: &str = "Z0FAKE";
const RECORD: &str = "api.example.com.";
const OLD: &str = "api-primary-lb.example.com.";
const NEW: &str = "api-backup-lb.example.com.";

impl Site {
    async fn new(k: Knobs) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let primary = health(200).await;
        let backup = health(200).await;
        let r53 = route53(k.pending).await;
        r53.state
            .lock()
            .unwrap()
            .records
            .insert((RECORD.into(), "CNAME".into()), (0, vec![OLD.into()]));
        let kube = kube(
            dir.path(),
            vec![
                workload(
                    "deployments",
                    "matching-engine",
                    &[("app", "matching"), ("cexdr.io/standby", "true")],
                    0,
                ),
                workload(
                    "deployments",
                    "api-gateway",
                    &[("app", "api"), ("cexdr.io/standby", "true")],
                    1,
                ),
                workload(
                    "statefulsets",
                    "wallet-signer",
                    &[("app", "wallet"), ("cexdr.io/standby", "true")],
                    0,
                ),
                workload("deployments", "reporting", &[("app", "reporting")], 0),
            ],
        )
        .await;
        kube.state.lock().unwrap().instant = k.instant;
        kube.state.lock().unwrap().hpas.push((
            "api-gateway-hpa".into(),
            "Deployment".into(),
            "api-gateway".into(),
        ));
        let slack = receiver(200, Duration::ZERO).await;
        let sms = receiver(200, k.receiver_delay).await;
        let smtp = smtp(dir.path());
        let backup_db = backup_db().await;
        let pair = k.promote.then(|| {
            let mut p = MariaDb::primary();
            p.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY)");
            let r = MariaDb::replica_of(&p);
            for _ in 0..20 {
                p.sql("INSERT INTO shop.orders VALUES ()");
            }
            r.wait_caught_up(&p);
            p.kill9();
            (p, r)
        });
        let mut s = Site {
            pair,
            runbook: dir.path().join("runbook.toml"),
            dir,
            primary,
            backup,
            r53,
            kube,
            slack,
            sms,
            smtp,
            backup_db,
        };
        s.write_runbook(&k, "");
        s
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write_runbook(&mut self, k: &Knobs, extra_steps: &str) {
        let primary_http = if k.primary_up {
            format!("{}/healthz", self.primary.server.url)
        } else {
            format!("http://127.0.0.1:{}/healthz", closed_port())
        };
        let primary_mysql = if k.primary_up {
            common::mysql_url()
        } else if let Some((p, _)) = &self.pair {
            p.url()
        } else {
            format!("mysql://root@127.0.0.1:{}/", closed_port())
        };
        let fence_mysql = match &self.pair {
            Some((p, _)) => p.url(),
            None => format!("mysql://root@127.0.0.1:{}/", self.fence_port(k.slow)),
        };
        let promote = match &self.pair {
            Some((p, r)) => format!(
                "\n[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\nreplica = {{ url = \"{}\" }}\nold-primary = {{ url = \"{}\" }}\nconnect-timeout = \"500ms\"\n",
                r.url(),
                p.url()
            ),
            None => String::new(),
        };
        let (probes, interval) = if k.slow {
            (3, "300ms")
        } else if k.instant {
            (1, "50ms")
        } else {
            (2, "50ms")
        };
        let successes = if k.instant { 1 } else { 3 };
        let poll = if k.slow { "200ms" } else { "20ms" };
        let exec = if k.slow {
            "sleep 0.6; echo hook ran for $CEXDR_STEP"
        } else {
            "echo hook ran for $CEXDR_STEP"
        };
        let text = format!(
            r#"
name = "e2e"
from-site = "primary"
to-site = "backup"
state-dir = "{state}"
cool-down = "1h"

[notify]
channels = ["slack", "sms", "mail"]

[[channel]]
name = "slack"
kind = "slack"
webhook-url-env = "{SLACK_VAR}"

[[channel]]
name = "sms"
kind = "webhook"
url = "{sms}"
headers = {{ X-Team = "sre" }}
secret-headers = {{ Authorization = "{SMS_VAR}" }}

[[channel]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {smtp}
tls = "plain"
from = "cexdr <cexdr@example.com>"
to = ["sre@example.com"]

[[step]]
name = "primary-down"
kind = "check-primary"
probes = {probes}
interval = "{interval}"
probe-timeout = "1s"
http = [{{ url = "{primary_http}" }}]
mysql = [{{ url = "{primary_mysql}" }}]

[[step]]
name = "fence"
kind = "fence-mysql"
connect-timeout = "{fence_timeout}"
mysql = [{{ url = "{fence_mysql}" }}]
{promote}
[[step]]
name = "scale"
kind = "scale-up"
timeout = "30s"
kubeconfig = "{kubeconfig}"
namespace = "cex-app"
selector = "cexdr.io/standby=true"
replicas = 3
poll-interval = "{poll}"

[[step]]
name = "dns"
kind = "dns-switch"
timeout = "30s"
hosted-zone-id = "{ZONE}"
record = "{RECORD}"
type = "CNAME"
values = ["{NEW}"]
ttl = 60
endpoint = "{r53}"
poll-interval = "{poll}"

[[step]]
name = "verify"
kind = "verify"
timeout = "20s"
successes = {successes}
interval = "{poll}"
http = [{{ url = "{backup}/healthz", expect-status = 200, body-contains = "ok" }}]
mysql = [{{ url = "{db}", password-env = "{DB_PW_VAR}", query = "SELECT id FROM accounts" }}]

[[step]]
name = "tell-support"
kind = "notify"
channels = ["slack"]
message = "api.example.com serves from the backup site"

[[step]]
name = "hook"
kind = "exec"
argv = ["sh", "-c", "{exec}"]
{extra_steps}
"#,
            state = self.state_dir().display(),
            sms = self.sms.url(),
            smtp = self.smtp.port,
            fence_timeout = if k.slow { "700ms" } else { "200ms" },
            kubeconfig = self.kube.kubeconfig.display(),
            r53 = self.r53.server.url,
            backup = self.backup.server.url,
            db = self.backup_db,
        );
        std::fs::write(&self.runbook, text).unwrap();
    }

    /// Slow runs fence a host that accepts and never answers (a hung primary).
    fn fence_port(&self, slow: bool) -> u16 {
        if slow {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            // Kept open (never accepted) for the test's life: connects hang.
            std::mem::forget(l);
            port
        } else {
            closed_port()
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = crate::common::cexdr_async(args);
        c.env(SLACK_VAR, self.slack.url())
            .env(SMS_VAR, "Bearer sms-token")
            .env(DB_PW_VAR, DB_PW);
        c
    }

    async fn cexdr(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    async fn failover(&self, extra: &[&str]) -> Output {
        let rb = self.runbook.to_str().unwrap().to_owned();
        let mut args = vec!["failover", "--runbook", rb.as_str(), "--yes"];
        args.extend_from_slice(extra);
        self.cexdr(&args).await
    }

    async fn status(&self) -> Value {
        let rb = self.runbook.to_str().unwrap().to_owned();
        let o = self
            .cexdr(&["failover", "status", "--runbook", &rb, "--json"])
            .await;
        common::assert_code(&o, 0);
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn journals(&self) -> Vec<PathBuf> {
        let d = self.state_dir().join("e2e").join("runs");
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn records(&self, journal: &Path) -> Vec<Value> {
        std::fs::read_to_string(journal)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn dns_value(&self) -> Vec<String> {
        self.r53.state.lock().unwrap().records[&(RECORD.to_owned(), "CNAME".to_owned())]
            .1
            .clone()
    }

    fn replicas(&self, name: &str) -> i32 {
        self.kube
            .state
            .lock()
            .unwrap()
            .workloads
            .iter()
            .find(|w| w.name == name)
            .unwrap()
            .replicas
    }

    /// Notification ids each receiver got, in order.
    fn slack_texts(&self) -> Vec<String> {
        self.slack
            .messages()
            .iter()
            .map(|(_, v)| v["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
    fn sms_ids(&self) -> Vec<String> {
        self.sms
            .messages()
            .iter()
            .map(|(_, v)| v["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
    fn mail_ids(&self) -> Vec<String> {
        self.smtp
            .messages()
            .iter()
            .map(|m| m["message_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

fn out(o: &Output) -> String {
    format!("{}{}", common::stdout(o), common::stderr(o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_down_full_run_then_cool_down() {
    let site = Site::new(Knobs::default()).await;
    let o = site.failover(&[]).await;
    common::assert_code(&o, 0);
    let text = common::stdout(&o);
    assert!(
        text.contains("failover") && text.contains("completed"),
        "{text}"
    );

    // DNS changed once, to the target.
    assert_eq!(site.dns_value(), vec![NEW.to_owned()]);
    assert_eq!(site.r53.state.lock().unwrap().accepted_changes.len(), 1);
    // The selected workloads scaled to 3 and nothing else.
    assert_eq!(site.replicas("matching-engine"), 3);
    assert_eq!(site.replicas("api-gateway"), 3);
    assert_eq!(site.replicas("wallet-signer"), 3);
    assert_eq!(site.replicas("reporting"), 0);
    let scaled: Vec<String> = site
        .kube
        .state
        .lock()
        .unwrap()
        .scale_calls
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(scaled.len(), 3, "{scaled:?}");

    // Notifications: start + end on every channel, the step's message on Slack.
    let slack = site.slack_texts();
    assert_eq!(slack.len(), 3, "{slack:?}");
    assert!(slack[0].contains("started"), "{}", slack[0]);
    assert!(slack[1].contains("backup site"), "{}", slack[1]);
    assert!(slack[2].contains("finished"), "{}", slack[2]);
    assert!(
        slack[2].contains("RTO"),
        "the end message carries the summary: {}",
        slack[2]
    );
    let sms = site.sms.messages();
    assert_eq!(sms.len(), 2);
    assert_eq!(
        sms[0].0.get("authorization").map(String::as_str),
        Some("Bearer sms-token")
    );
    assert_eq!(sms[0].0.get("x-team").map(String::as_str), Some("sre"));
    assert!(site.sms_ids()[0].ends_with(".start") && site.sms_ids()[1].ends_with(".end"));
    let mails = site.smtp.messages();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(mails[0]["subject"].as_str().unwrap().contains("started"));
    assert!(mails[1]["body"].as_str().unwrap().contains("verify done"));

    // The journal is complete, and `status` reads it.
    let j = site.journals();
    assert_eq!(j.len(), 1);
    let recs = site.records(&j[0]);
    assert_eq!(recs.first().unwrap()["type"], "run-started");
    assert_eq!(recs.last().unwrap()["type"], "run-finished");
    assert_eq!(recs.last().unwrap()["outcome"], "succeeded");
    // The change id is journaled before the wait for INSYNC.
    let cid = recs
        .iter()
        .position(|r| r["type"] == "step-progress" && r["data"].get("change-id").is_some())
        .unwrap();
    let insync = recs
        .iter()
        .position(|r| r["type"] == "step-progress" && r["data"].get("insync-at").is_some())
        .unwrap();
    assert!(cid < insync);
    // Previous replica counts are journaled for failback.
    let prev = recs
        .iter()
        .find(|r| {
            r["type"] == "step-progress"
                && r["step"] == "scale"
                && r["data"].get("previous").is_some()
        })
        .unwrap();
    assert_eq!(prev["data"]["previous"].as_array().unwrap().len(), 3);
    let scale_done = recs
        .iter()
        .find(|r| r["type"] == "step-done" && r["step"] == "scale")
        .unwrap();
    assert!(scale_done["details"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("api-gateway-hpa"));
    let hook = recs
        .iter()
        .find(|r| r["type"] == "step-done" && r["step"] == "hook")
        .unwrap();
    assert_eq!(hook["details"]["stdout"], "hook ran for hook\n");

    let st = site.status().await;
    assert_eq!(st["outcome"], "succeeded");
    assert!(st["rto_ms"].as_i64().unwrap() >= 0);
    assert!(st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "done"));
    let rb = site.runbook.to_str().unwrap().to_owned();
    let o = site.cexdr(&["failover", "status", "--runbook", &rb]).await;
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("RTO (start → verify green)"),
        "{}",
        common::stdout(&o)
    );

    // Within the cool-down a second failover is refused...
    let o = site.failover(&[]).await;
    common::assert_code(&o, 1);
    assert!(common::stderr(&o).contains("cool-down"), "{}", out(&o));
    assert_eq!(site.journals().len(), 1, "a refused run writes no journal");
    // ...unless forced, which is journaled; DNS is already the target: not re-sent.
    let o = site.failover(&["--force"]).await;
    common::assert_code(&o, 0);
    assert_eq!(site.r53.state.lock().unwrap().accepted_changes.len(), 1);
    let recs = site.records(&site.journals()[1]);
    assert!(recs.iter().any(|r| r["type"] == "forced"), "{recs:?}");
    let dns = recs
        .iter()
        .find(|r| r["type"] == "step-done" && r["step"] == "dns")
        .unwrap();
    assert_eq!(dns["details"]["changed"], false);
}

/// The issue's runbook: check-primary → fence → promote-mysql → scale-up →
/// dns-switch → verify → notify (+ hook) against the fakes, with a private
/// primary (20 rows, then kill -9) and its GTID replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_runbook_with_promotion_after_kill_9_of_the_primary() {
    let site = Site::new(Knobs {
        promote: true,
        ..Knobs::default()
    })
    .await;
    let o = site.failover(&[]).await;
    common::assert_code(&o, 0);
    let (_, r) = site.pair.as_ref().unwrap();
    assert_eq!(r.sql("SELECT COUNT(*) FROM shop.orders"), "20");
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
    assert_eq!(site.dns_value(), vec![NEW.to_owned()]);
    assert_eq!(site.replicas("wallet-signer"), 3);
    let recs = site.records(&site.journals()[0]);
    let plan = recs[0]["plan"].as_array().unwrap();
    assert_eq!(plan[2], "promote:promote-mysql");
    let st = site.status().await;
    assert_eq!(st["outcome"], "succeeded");
    assert!(st["rto_ms"].as_i64().unwrap() > 0);
    assert_eq!(st["rpo"]["step"], "promote");
    assert!(
        st["rpo"]["evidence"]["promoted-at"].as_str().is_some(),
        "{st}"
    );
    // Every message says its run and idempotency key.
    let run = recs[0]["run"].as_str().unwrap();
    for t in site.slack_texts() {
        assert!(t.contains(&format!("(run {run}, message {run}.")), "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_healthy_is_refused_and_force_is_journaled() {
    let mut site = Site::new(Knobs::default()).await;
    site.write_runbook(
        &Knobs {
            primary_up: true,
            ..Knobs::default()
        },
        "",
    );
    let o = site.failover(&[]).await;
    common::assert_code(&o, 10);
    let err = common::stderr(&o);
    assert!(err.contains("step primary-down"), "{err}");
    assert!(err.contains("the primary is not down"), "{err}");
    assert!(
        err.contains(&format!(
            "GET {}/healthz answered HTTP 200",
            site.primary.server.url
        )),
        "{err}"
    );
    // Nothing changed.
    assert_eq!(site.r53.state.lock().unwrap().calls.get("change"), None);
    assert!(site.kube.state.lock().unwrap().scale_calls.is_empty());
    let recs = site.records(&site.journals()[0]);
    let last = recs.last().unwrap();
    assert_eq!(last["outcome"], "refused");
    assert_eq!(last["failed_step"], "primary-down");
    // The refusal went out (start + refused, no end), as good news, not a failure.
    let slack = site.slack_texts();
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(slack[1].contains("refused") && slack[1].contains("primary-down"));
    assert!(!slack[1].contains("FAILED"), "{}", slack[1]);

    // A refused run is finished: a new --force run goes through and says who forced it.
    let o = site.failover(&["--force"]).await;
    common::assert_code(&o, 0);
    let recs = site.records(&site.journals()[1]);
    let forced: Vec<&Value> = recs.iter().filter(|r| r["type"] == "forced").collect();
    assert!(
        forced
            .iter()
            .any(|r| r["step"] == "primary-down"
                && r["reason"].as_str().unwrap().contains("answered")),
        "{forced:?}"
    );
    assert!(forced
        .iter()
        .all(|r| r["by"].as_str().unwrap().contains('@')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_step_aborts_with_exit_11_and_the_journal_says_where() {
    let site = Site::new(Knobs::default()).await;
    *site.backup.status.lock().unwrap() = 503;
    // A short verify timeout: the backup site never gets green.
    let text = std::fs::read_to_string(&site.runbook).unwrap().replace(
        "timeout = \"20s\"\nsuccesses = 3",
        "timeout = \"1s\"\nsuccesses = 3",
    );
    std::fs::write(&site.runbook, text).unwrap();
    let o = site.failover(&[]).await;
    common::assert_code(&o, 11);
    let err = common::stderr(&o);
    assert!(
        err.contains("step verify") && err.contains("HTTP 503"),
        "{err}"
    );
    let st = site.status().await;
    assert_eq!(st["outcome"], "failed");
    assert_eq!(st["failed_step"], "verify");
    let steps = st["steps"].as_array().unwrap();
    let by_name = |n: &str| steps.iter().find(|s| s["name"] == n).unwrap()["status"].clone();
    assert_eq!(by_name("dns"), "done");
    assert_eq!(by_name("verify"), "failed");
    assert_eq!(by_name("tell-support"), "pending");
    assert!(st["rto_ms"].is_null());
    // start + failure; no end, no step message.
    assert_eq!(site.sms_ids().len(), 2);
    assert!(site.sms_ids()[1].ends_with(".failure"));

    // Fixed: --resume finishes from the failed step, without redoing DNS.
    *site.backup.status.lock().unwrap() = 200;
    let o = site.failover(&["--resume"]).await;
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("dns: already done"),
        "{}",
        out(&o)
    );
    assert_eq!(site.r53.state.lock().unwrap().accepted_changes.len(), 1);
    assert_eq!(site.status().await["outcome"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_changes_nothing() {
    let site = Site::new(Knobs::default()).await;
    let o = site.failover(&["--dry-run"]).await;
    common::assert_code(&o, 0);
    let text = common::stdout(&o);
    // Current vs target DNS value and replicas.
    assert!(text.contains(OLD) && text.contains(NEW), "{text}");
    assert!(
        text.contains("\"current\":0") && text.contains("\"target\":3"),
        "{text}"
    );
    assert!(text.contains("api-gateway-hpa"), "{text}");
    assert_eq!(site.dns_value(), vec![OLD.to_owned()]);
    assert_eq!(site.r53.state.lock().unwrap().calls.get("change"), None);
    assert!(site.kube.state.lock().unwrap().scale_calls.is_empty());
    assert!(
        site.slack.messages().is_empty()
            && site.sms.messages().is_empty()
            && site.smtp.messages().is_empty()
    );
    assert!(
        !site.state_dir().exists(),
        "a dry run writes no journal or lock"
    );
}

/// Kills the binary (SIGKILL) in the middle of each step in turn, then
/// resumes: DNS is changed once and each notification arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_every_step_then_resume() {
    let steps = [
        "primary-down",
        "fence",
        "scale",
        "dns",
        "verify",
        "tell-support",
        "hook",
    ];
    for (i, step) in steps.iter().enumerate() {
        let site = Site::new(Knobs {
            slow: true,
            pending: 3,
            ..Knobs::default()
        })
        .await;
        let rb = site.runbook.to_str().unwrap().to_owned();
        let mut child = site
            .command(&["failover", "--runbook", &rb, "--yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for this step's step-started record, then a little into the step.
        let t0 = Instant::now();
        loop {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "step {step} never started"
            );
            if let Some(j) = site.journals().first() {
                let recs = std::fs::read_to_string(j).unwrap();
                if recs.lines().any(|l| {
                    l.contains("\"type\":\"step-started\"")
                        && l.contains(&format!("\"step\":\"{step}\""))
                }) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        child.start_kill().unwrap(); // SIGKILL
        let st = child.wait().await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "step {step}: the process had already ended"
        );
        let before = site.status().await;
        assert!(before["outcome"].is_null(), "step {step}: {before}");
        let o = site.failover(&["--resume"]).await;
        common::assert_code(&o, 0);
        assert!(
            common::stdout(&o).contains(&format!("{step}: re-entering an interrupted step"))
                || i == 0
                || common::stdout(&o).contains(&format!("{step}: already done")),
            "step {step}: {}",
            out(&o)
        );
        let st = site.status().await;
        assert_eq!(st["outcome"], "succeeded", "step {step}");
        assert_eq!(st["resumed"], 1);
        assert_eq!(
            site.r53.state.lock().unwrap().accepted_changes.len(),
            1,
            "step {step}: DNS changed once"
        );
        assert_eq!(site.dns_value(), vec![NEW.to_owned()]);
        assert_eq!(site.replicas("wallet-signer"), 3);
        // Each notification once: start and end on every channel, the step message on Slack.
        assert_eq!(site.sms_ids().len(), 2, "step {step}: {:?}", site.sms_ids());
        assert_eq!(
            site.mail_ids().len(),
            2,
            "step {step}: {:?}",
            site.mail_ids()
        );
        assert_eq!(
            site.slack_texts().len(),
            3,
            "step {step}: {:?}",
            site.slack_texts()
        );
        let reentered =
            common::stdout(&o).contains(&format!("{step}: re-entering an interrupted step"));
        eprintln!(
            "kill -9 {} {step}: resumed, DNS changed once, notifications once each",
            if reentered {
                "in the middle of"
            } else {
                "just after"
            }
        );
    }
}

/// The benchmark behind `bench/failover.sh` (not a timed assertion): wall
/// time of a whole runbook against the local fakes with every wait satisfied
/// at once, next to the anchor of the same binary's `runbook check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with bench/failover.sh"]
async fn bench_full_runbook_overhead() {
    let n = 5;
    let mut runs = Vec::new();
    let mut anchors = Vec::new();
    let mut promotes = Vec::new();
    for _ in 0..n {
        let site = Site::new(Knobs {
            instant: true,
            pending: 0,
            promote: true,
            ..Knobs::default()
        })
        .await;
        let rb = site.runbook.to_str().unwrap().to_owned();
        let t = Instant::now();
        let o = site.cexdr(&["runbook", "check", &rb]).await;
        anchors.push(t.elapsed());
        common::assert_code(&o, 0);
        let t = Instant::now();
        let o = site.failover(&[]).await;
        runs.push(t.elapsed());
        common::assert_code(&o, 0);
        assert_eq!(site.r53.state.lock().unwrap().accepted_changes.len(), 1);
        let recs = site.records(&site.journals()[0]);
        let p = recs
            .iter()
            .find(|r| r["type"] == "step-done" && r["step"] == "promote")
            .unwrap();
        assert_eq!(p["details"]["promoted"], true);
        promotes.push(Duration::from_millis(p["elapsed_ms"].as_u64().unwrap()));
    }
    promotes.sort();
    runs.sort();
    anchors.sort();
    let (run, anchor) = (runs[n / 2], anchors[n / 2]);
    println!(
        "failover, 8 steps (with promote-mysql) + 6 notifications, all waits satisfied at once: median {:.3} s wall over {n} runs (min {:.3}, max {:.3})",
        run.as_secs_f64(),
        runs[0].as_secs_f64(),
        runs[n - 1].as_secs_f64()
    );
    println!(
        "anchor `cexdr runbook check` (process start + parse): median {:.3} s",
        anchor.as_secs_f64()
    );
    println!(
        "promote-mysql step (journaled elapsed): median {:.3} s (min {:.3}, max {:.3})",
        promotes[n / 2].as_secs_f64(),
        promotes[0].as_secs_f64(),
        promotes[n - 1].as_secs_f64()
    );
    println!(
        "ratio failover / anchor: {:.1}x; budget 2 s: {}",
        run.as_secs_f64() / anchor.as_secs_f64(),
        if run < Duration::from_secs(2) {
            "met"
        } else {
            "MISSED"
        }
    );
}

/// Ctrl-C / SIGTERM lets the current step finish, then stops with exit 130
/// and a journal that `--resume` continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_after_the_current_step() {
    let site = Site::new(Knobs {
        slow: true,
        ..Knobs::default()
    })
    .await;
    let rb = site.runbook.to_str().unwrap().to_owned();
    let child = site
        .command(&["failover", "--runbook", &rb, "--yes"])
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "scale never started"
        );
        if let Some(j) = site.journals().first() {
            if std::fs::read_to_string(j)
                .unwrap()
                .contains("\"type\":\"step-started\",\"step\":\"scale\"")
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let o = child.wait_with_output().await.unwrap();
    common::assert_code(&o, 130);
    let st = site.status().await;
    let steps = st["steps"].as_array().unwrap();
    assert_eq!(steps[2]["name"], "scale");
    assert_eq!(
        steps[2]["status"], "done",
        "the current step finished: {st}"
    );
    assert_eq!(steps[3]["status"], "pending");
    assert_eq!(st["interrupted"], true);
    assert!(site.kube.state.lock().unwrap().scale_calls.len() == 3);
    let o = site.failover(&["--resume"]).await;
    common::assert_code(&o, 0);
    assert_eq!(site.status().await["outcome"], "succeeded");
}

/// A kill while a notification is in flight: channels whose delivery is
/// journaled are not sent again; the one in flight is sent again on resume
/// (at least once) with the same idempotency key, so receivers can drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_with_a_notification_in_flight() {
    let site = Site::new(Knobs {
        receiver_delay: Duration::from_millis(600),
        ..Knobs::default()
    })
    .await;
    let text = std::fs::read_to_string(&site.runbook).unwrap().replace(
        "channels = [\"slack\"]\nmessage",
        "channels = [\"slack\", \"sms\"]\nmessage",
    );
    std::fs::write(&site.runbook, text).unwrap();
    let rb = site.runbook.to_str().unwrap().to_owned();
    let mut child = site
        .command(&["failover", "--runbook", &rb, "--yes"])
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the slack delivery never got journaled"
        );
        if let Some(j) = site.journals().first() {
            let t = std::fs::read_to_string(j).unwrap();
            if t.lines()
                .any(|l| l.contains("\"step\":\"tell-support\"") && l.contains("\"delivery\""))
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let o = site.failover(&["--resume"]).await;
    common::assert_code(&o, 0);
    let step_msgs: Vec<String> = site
        .slack_texts()
        .into_iter()
        .filter(|t| t.contains("backup site"))
        .collect();
    assert_eq!(
        step_msgs.len(),
        1,
        "slack was journaled as delivered: not sent again"
    );
    let sms: Vec<(String, String)> = site
        .sms
        .messages()
        .iter()
        .map(|(h, v)| {
            (
                h.get("idempotency-key").cloned().unwrap_or_default(),
                v["id"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(_, id)| id.ends_with(".tell-support"))
        .collect();
    assert_eq!(
        sms.len(),
        2,
        "the in-flight request was received and then sent again: {sms:?}"
    );
    assert_eq!(sms[0], sms[1], "with the same idempotency key");
    assert_eq!(sms[0].0, sms[0].1);
    assert_eq!(
        site.sms_ids()
            .iter()
            .filter(|i| i.ends_with(".end"))
            .count(),
        1
    );
    assert_eq!(site.status().await["outcome"], "succeeded");
}
