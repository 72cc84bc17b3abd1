//! Failover steps one at a time, through the binary with one-step runbooks:
//! Route 53 against moto and against a scripted server (PENDING → INSYNC,
//! throttling, PriorRequestNotComplete), Kubernetes errors, fencing a scratch
//! MariaDB, notifications (Slack/webhook/SMTP), journal and lock errors.
use crate::common;
use crate::fakes;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::Value;

use fakes::*;

use common::{failover, runbook};

async fn run(args: &[&str]) -> Output {
    common::cexdr_async(args).output().await.unwrap()
}

fn journal(dir: &Path, name: &str) -> Vec<Value> {
    let runs = dir.join("state").join(name).join("runs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    std::fs::read_to_string(v.last().unwrap())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn dns_step(zone: &str, endpoint: &str, ttl_wait: bool) -> String {
    format!(
        "[[step]]\nname = \"dns\"\nkind = \"dns-switch\"\ntimeout = \"20s\"\nhosted-zone-id = \"{zone}\"\nrecord = \"api.example.com.\"\ntype = \"CNAME\"\nvalues = [\"api-backup-lb.example.com.\"]\nttl = 60\nendpoint = \"{endpoint}\"\npoll-interval = \"50ms\"\nwait-ttl = {ttl_wait}\n"
    )
}

// ---------------------------------------------------------------- Route 53

#[tokio::test(flavor = "multi_thread")]
async fn dns_waits_pending_and_retries_throttling_on_a_scripted_server() {
    let dir = tempfile::tempdir().unwrap();
    let r53 = route53(3).await;
    {
        let mut s = r53.state.lock().unwrap();
        s.records.insert(
            ("api.example.com.".into(), "CNAME".into()),
            (1, vec!["api-primary-lb.example.com.".into()]),
        );
        s.script.insert("list", ["Throttling", "Throttling"].into());
        s.script
            .insert("change", ["PriorRequestNotComplete"].into());
        s.script.insert("get", ["Throttling"].into());
    }
    let rb = runbook(
        dir.path(),
        "dns",
        &dns_step("Z0FAKE", &r53.server.url, true),
    );
    let t = std::time::Instant::now();
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    let s = r53.state.lock().unwrap();
    assert_eq!(s.calls["list"], 3, "2 throttled + 1");
    assert_eq!(
        s.calls["change"], 2,
        "1 PriorRequestNotComplete + 1 accepted"
    );
    assert_eq!(s.accepted_changes, vec!["C0001".to_owned()]);
    assert_eq!(s.calls["get"], 5, "1 throttled + 3 PENDING + 1 INSYNC");
    let recs = journal(dir.path(), "dns");
    let done = recs.iter().find(|r| r["type"] == "step-done").unwrap();
    assert_eq!(done["details"]["polls"], 4);
    // The old record's TTL (1s) is waited out after INSYNC.
    assert!(
        done["details"]["waited-ttl-ms"].as_u64().unwrap() > 500,
        "{done}"
    );
    assert!(t.elapsed() >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_gives_up_on_a_change_that_never_syncs_and_resume_polls_the_journaled_id() {
    let dir = tempfile::tempdir().unwrap();
    let r53 = route53(1000).await;
    let rb = runbook(
        dir.path(),
        "dns",
        &dns_step("Z0FAKE", &r53.server.url, false)
            .replace("timeout = \"20s\"", "timeout = \"1s\""),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    assert!(
        common::stderr(&o).contains("step dns: change C0001 is still"),
        "{}",
        common::stderr(&o)
    );
    // Resume: polls C0001 again, never sends a second change.
    r53.state.lock().unwrap().pending_polls = 0;
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 0);
    let s = r53.state.lock().unwrap();
    assert_eq!(s.accepted_changes.len(), 1);
    assert_eq!(s.calls["change"], 1);
    let recs = journal(dir.path(), "dns");
    let done = recs.iter().find(|r| r["type"] == "step-done").unwrap();
    assert_eq!(done["details"]["resumed"], true);
    assert_eq!(done["details"]["change-id"], "C0001");
}

async fn moto() -> aws_sdk_route53::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(common::s3_endpoint())
        .credentials_provider(aws_sdk_route53::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_route53::Client::new(&conf)
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_against_moto_upserts_once_and_skips_when_already_the_target() {
    use aws_sdk_route53::types::*;
    let c = moto().await;
    let domain = format!("fo{:08x}.example.com", rand::random::<u32>());
    let zone = c
        .create_hosted_zone()
        .name(&domain)
        .caller_reference(&domain)
        .send()
        .await
        .unwrap();
    let zone_id = zone
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned();
    let record = format!("api.{domain}.");
    c.change_resource_record_sets()
        .hosted_zone_id(&zone_id)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Create)
                        .resource_record_set(
                            ResourceRecordSet::builder()
                                .name(&record)
                                .r#type(RrType::Cname)
                                .ttl(0)
                                .resource_records(
                                    ResourceRecord::builder()
                                        .value("api-primary-lb.example.com.")
                                        .build()
                                        .unwrap(),
                                )
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let step =
        dns_step(&zone_id, &common::s3_endpoint(), true).replace("api.example.com.", &record);
    let rb = runbook(dir.path(), "moto", &step);
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    let got = c
        .list_resource_record_sets()
        .hosted_zone_id(&zone_id)
        .send()
        .await
        .unwrap();
    let rr = got
        .resource_record_sets()
        .iter()
        .find(|r| r.name() == record && *r.r#type() == RrType::Cname)
        .unwrap();
    assert_eq!(
        rr.resource_records()[0].value(),
        "api-backup-lb.example.com."
    );
    assert_eq!(rr.ttl(), Some(60));
    let recs = journal(dir.path(), "moto");
    let done = recs.iter().find(|r| r["type"] == "step-done").unwrap();
    assert_eq!(done["details"]["changed"], true);
    assert_eq!(done["details"]["polls"], 1, "moto answers INSYNC at once");

    // Again (forced past the cool-down): the record already has the target.
    let o = failover(&rb, &["--force"]).await;
    common::assert_code(&o, 0);
    let recs = journal(dir.path(), "moto");
    let done = recs.iter().find(|r| r["type"] == "step-done").unwrap();
    assert_eq!(done["details"]["changed"], false);

    // A hosted zone that does not exist: the step and Route 53's cause.
    let rb = runbook(
        dir.path(),
        "nozone",
        &dns_step("ZNOSUCHZONE", &common::s3_endpoint(), true),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    let err = common::stderr(&o);
    assert!(
        err.contains("step dns") && err.contains("NoSuchHostedZone"),
        "{err}"
    );
    let recs = journal(dir.path(), "nozone");
    assert!(recs
        .iter()
        .any(|r| r["type"] == "step-failed" && r["step"] == "dns"));
    assert_eq!(recs.last().unwrap()["failed_step"], "dns");
    // Permanent: with retries allowed, a missing zone is tried once.
    let rb = runbook(
        dir.path(),
        "nozone-retries",
        &dns_step("ZNOSUCHZONE", &common::s3_endpoint(), true).replace(
            "name = \"dns\"",
            "name = \"dns\"\nretries = 2\nbackoff = \"10ms\"",
        ),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    let recs = journal(dir.path(), "nozone-retries");
    assert_eq!(
        recs.iter().filter(|r| r["type"] == "step-started").count(),
        1,
        "{recs:?}"
    );
}

// ---------------------------------------------------------------- Kubernetes

fn scale_step(kubeconfig: &Path, selector: &str) -> String {
    format!(
        "[[step]]\nname = \"scale\"\nkind = \"scale-up\"\ntimeout = \"5s\"\nkubeconfig = \"{}\"\nnamespace = \"cex-app\"\nselector = \"{selector}\"\nreplicas = 2\npoll-interval = \"20ms\"\n",
        kubeconfig.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_errors_name_the_step_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let k = kube(
        dir.path(),
        vec![workload("deployments", "api", &[("app", "api")], 0)],
    )
    .await;
    let rb = runbook(
        dir.path(),
        "nomatch",
        &scale_step(&k.kubeconfig, "app=nothing"),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    let err = common::stderr(&o);
    assert!(err.contains("step scale") && err.contains("selector \"app=nothing\" matches no Deployment or StatefulSet in namespace cex-app"), "{err}");
    assert!(k.state.lock().unwrap().scale_calls.is_empty());

    // An API server that is not there.
    let kc = dir.path().join("dead-kubeconfig");
    write_kubeconfig(&kc, &format!("http://127.0.0.1:{}", closed_port()));
    let rb = runbook(dir.path(), "dead", &scale_step(&kc, "app=api"));
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    let err = common::stderr(&o);
    assert!(
        err.contains("step scale")
            && err.contains("listing deployments in cex-app")
            && err.to_lowercase().contains("connect"),
        "{err}"
    );
    let recs = journal(dir.path(), "dead");
    assert!(
        recs.iter().any(|r| r["type"] == "step-failed"),
        "the journal knows the step failed"
    );
    assert!(
        !recs.iter().any(|r| r["type"] == "step-progress"),
        "nothing was applied"
    );

    // The selector matches: scaled and waited for.
    let rb = runbook(dir.path(), "ok", &scale_step(&k.kubeconfig, "app=api"));
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    assert_eq!(
        k.state.lock().unwrap().scale_calls,
        vec![("api".to_owned(), 2)]
    );
    let w = k.state.lock().unwrap().workloads[0].clone();
    assert_eq!(
        (w.replicas, w.ready, w.observed, w.generation),
        (2, 2, 2, 2)
    );
}

// ---------------------------------------------------------------- fencing

#[tokio::test(flavor = "multi_thread")]
async fn fence_sets_read_only_on_a_scratch_mariadb_and_records_an_unreachable_one() {
    let db = scratch_mariadb();
    let dir = tempfile::tempdir().unwrap();
    let dead = closed_port();
    let rb = runbook(
        dir.path(),
        "fence",
        &format!(
            "[[step]]\nname = \"fence\"\nkind = \"fence-mysql\"\nconnect-timeout = \"2s\"\nmysql = [{{ url = \"mysql://root@127.0.0.1:{dead}/\" }}, {{ url = \"{}\" }}]\n",
            db.url()
        ),
    );
    let o = failover(&rb, &["--dry-run"]).await;
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("\"read_only\":false"),
        "{}",
        common::stdout(&o)
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    let recs = journal(dir.path(), "fence");
    let done = recs.iter().find(|r| r["type"] == "step-done").unwrap();
    let servers = done["details"]["servers"].as_array().unwrap();
    assert_eq!(servers[0]["reachable"], false);
    assert_eq!(servers[1]["fenced"], true);
    assert_eq!(
        servers[1]["super_read_only"], false,
        "MariaDB has no super_read_only"
    );
    let pool = mysql_async::Pool::new(db.url().as_str());
    let mut c = pool.get_conn().await.unwrap();
    let ro: Option<i64> = c.query_first("SELECT @@global.read_only").await.unwrap();
    assert_eq!(ro, Some(1));
    drop(c);
    pool.disconnect().await.unwrap();
}

// ---------------------------------------------------------------- notifications

#[tokio::test(flavor = "multi_thread")]
async fn notify_channels_deliver_and_failures_are_returned_not_raised() {
    use cexdr::notify::*;
    let dir = tempfile::tempdir().unwrap();
    let slack = receiver(200, Duration::ZERO).await;
    let hook = receiver(200, Duration::ZERO).await;
    let broken = receiver(500, Duration::ZERO).await;
    let smtp = smtp(dir.path());
    std::env::set_var("FO_PARTS_SLACK", slack.url());
    std::env::set_var("FO_PARTS_TOKEN", "Bearer t0k3n");
    let msg = Message {
        id: "run1.start".into(),
        subject: "[cexdr] test".into(),
        text: "hello".into(),
        severity: Severity::Warning,
        fields: [("run".to_owned(), "run1".to_owned())].into(),
    };
    let chans: Vec<ChannelSpec> = vec![
        toml::from_str("kind = \"slack\"\nname = \"s\"\nwebhook-url-env = \"FO_PARTS_SLACK\"").unwrap(),
        toml::from_str(&format!("kind = \"webhook\"\nname = \"w\"\nurl = \"{}\"\nsecret-headers = {{ Authorization = \"FO_PARTS_TOKEN\" }}", hook.url())).unwrap(),
        toml::from_str(&format!("kind = \"email\"\nname = \"e\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\nfrom = \"cexdr@example.com\"\nto = [\"a@example.com\", \"b@example.com\"]", smtp.port)).unwrap(),
    ];
    for c in &chans {
        c.validate().unwrap();
        send(c, &msg).await.unwrap();
    }
    assert_eq!(
        slack.messages()[0].1["text"],
        "*[cexdr] test*\nhello\n• run: run1"
    );
    let (h, v) = &hook.messages()[0];
    assert_eq!(h["idempotency-key"], "run1.start");
    assert_eq!(h["authorization"], "Bearer t0k3n");
    assert_eq!(v["severity"], "warning");
    let m = &smtp.messages()[0];
    assert_eq!(m["message_id"], "<run1.start@cexdr>");
    assert_eq!(
        m["to"],
        serde_json::json!(["a@example.com", "b@example.com"])
    );
    assert!(m["body"].as_str().unwrap().contains("run: run1"));

    // Failures come back as a Delivery; the Slack URL (a secret) is never in the error.
    let bad: ChannelSpec = toml::from_str(&format!(
        "kind = \"webhook\"\nname = \"bad\"\nurl = \"{}\"",
        broken.url()
    ))
    .unwrap();
    let d = deliver(&bad, &msg).await;
    assert!(
        !d.ok && d.error.as_deref().unwrap().contains("HTTP 500"),
        "{d:?}"
    );
    std::env::set_var(
        "FO_PARTS_SLACK_DEAD",
        format!("http://127.0.0.1:{}/T000/B000/secret-token", closed_port()),
    );
    let dead: ChannelSpec = toml::from_str(
        "kind = \"slack\"\nname = \"s2\"\nwebhook-url-env = \"FO_PARTS_SLACK_DEAD\"",
    )
    .unwrap();
    let d = deliver(&dead, &msg).await;
    assert!(!d.ok);
    assert!(
        !d.error.as_deref().unwrap().contains("secret-token"),
        "{d:?}"
    );
    let no_smtp: ChannelSpec = toml::from_str(&format!("kind = \"email\"\nname = \"e2\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nfrom = \"cexdr@example.com\"\nto = [\"a@example.com\"]", smtp.port)).unwrap();
    let d = deliver(&no_smtp, &msg).await;
    assert!(
        !d.ok,
        "aiosmtpd offers no STARTTLS here: the channel must refuse to send in clear"
    );
    // Unknown keys are refused per kind.
    assert!(
        toml::from_str::<ChannelSpec>("kind = \"slack\"\nname = \"s\"\nurl = \"x\"")
            .unwrap_err()
            .to_string()
            .contains("unknown field `url`")
    );
}

// ---------------------------------------------------------------- journal, lock

fn exec_steps() -> &'static str {
    "[[step]]\nname = \"one\"\nkind = \"exec\"\nargv = [\"true\"]\n\n[[step]]\nname = \"two\"\nkind = \"exec\"\nargv = [\"false\"]\n"
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_or_foreign_journals_and_a_held_lock_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(dir.path(), "jr", exec_steps());
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    assert!(
        common::stderr(&o).contains("step two"),
        "{}",
        common::stderr(&o)
    );
    let runs = dir.path().join("state/jr/runs");
    let path = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read_to_string(&path).unwrap();

    // A torn last line (crash inside a write) is cut, and resume goes on.
    std::fs::write(&path, format!("{good}{{\"seq\":99,\"type\":\"step-st")).unwrap();
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 11);
    assert!(
        common::stderr(&o).contains("step two"),
        "{}",
        common::stderr(&o)
    );
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));

    // A corrupt line in the middle: file and line named, nothing run.
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    lines[1] = "{not json".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 1);
    let err = common::stderr(&o);
    assert!(
        err.contains(&format!("{}:2", path.display())) && err.contains("corrupt record"),
        "{err}"
    );
    std::fs::write(&path, &good).unwrap();

    // A journal of another runbook placed in this runbook's folder.
    let other = runbook(dir.path(), "other", exec_steps());
    let o = failover(&other, &[]).await;
    common::assert_code(&o, 11);
    let other_runs = dir.path().join("state/other/runs");
    let other_path = std::fs::read_dir(&other_runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let id = other_path.file_stem().unwrap().to_str().unwrap().to_owned();
    std::fs::copy(&other_path, runs.join(other_path.file_name().unwrap())).unwrap();
    let o = failover(&rb, &["--resume", &id]).await;
    common::assert_code(&o, 1);
    assert!(
        common::stderr(&o).contains("it is a run of runbook \"other\", not \"jr\""),
        "{}",
        common::stderr(&o)
    );
    std::fs::remove_file(runs.join(other_path.file_name().unwrap())).unwrap();

    // The runbook's steps changed since the run started.
    let changed = std::fs::read_to_string(&rb)
        .unwrap()
        .replace("name = \"two\"", "name = \"deux\"");
    std::fs::write(&rb, changed).unwrap();
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 1);
    assert!(
        common::stderr(&o).contains("the runbook's steps changed"),
        "{}",
        common::stderr(&o)
    );

    // An unfinished run blocks a new one (resume it, or --force).
    let rb2 = runbook(
        dir.path(),
        "hang",
        "[[step]]\nname = \"hang\"\nkind = \"exec\"\nargv = [\"sleep\", \"5\"]\n",
    );
    let mut child = common::cexdr_async(&common::failover_args(&rb2, &[]))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock_held = dir.path().join("state/hang/runs");
    let lock_held = &lock_held;
    common::poll_async(200, Duration::from_millis(20), move || async move {
        lock_held.exists().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let o = failover(&rb2, &[]).await;
    common::assert_code(&o, 3);
    assert!(
        common::stderr(&o).contains("failover runbook hang is locked by pid"),
        "{}",
        common::stderr(&o)
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let o = failover(&rb2, &[]).await;
    common::assert_code(&o, 1);
    assert!(
        common::stderr(&o).contains("is unfinished") && common::stderr(&o).contains("--resume"),
        "{}",
        common::stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_runbooks_name_file_line_step_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[step]]\nname = \"x\"\nkind = \"teleport\"\n", ":8", "unknown variant `teleport`"),
        ("[[step]]\nname = \"x\"\nkind = \"exec\"\nargv = [\"true\"]\nshell = true\n", ":10", "step \"x\": key `shell`: unknown field `shell`"),
        ("[[step]]\nname = \"d\"\nkind = \"dns-switch\"\nrecord = \"a.example.com.\"\ntype = \"A\"\nvalues = [\"10.0.0.1\"]\nttl = 60\n", ":6", "missing field `hosted-zone-id`"),
        ("[[step]]\nname = \"s\"\nkind = \"scale-up\"\nnamespace = \"cex-app\"\nselector = \"\"\nreplicas = 3\n", ":10", "step \"s\": key `selector`: a label selector is required"),
        ("[[step]]\nname = \"v\"\nkind = \"verify\"\nmysql = [{ url = \"mysql://u:pw@db/\" }]\n", ":9", "not in the URL"),
        ("[[step]]\nname = \"c\"\nkind = \"check-primary\"\non-failure = \"continue\"\nhttp = [{ url = \"http://x/\" }]\n", ":9", "check-primary must abort"),
        ("[[step]]\nname = \"n\"\nkind = \"notify\"\nchannels = [\"nope\"]\nmessage = \"m\"\n", ":9", "no [[channel]] is named \"nope\""),
    ];
    for (i, (steps, line, msg)) in cases.iter().enumerate() {
        let rb = runbook(dir.path(), &format!("bad{i}"), steps);
        let o = run(&["runbook", "check", rb.to_str().unwrap()]).await;
        common::assert_code(&o, 2);
        let err = common::stderr(&o);
        assert!(
            err.contains(&format!("{}{line}", rb.display())),
            "case {i}: want line {line}: {err}"
        );
        assert!(err.contains(msg), "case {i}: want {msg:?}: {err}");
    }
    // Nothing was created: validation happens before any I/O.
    assert!(!dir.path().join("state").exists());
    let o = run(&[
        "runbook",
        "check",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/runbooks/cex-primary-to-backup.toml"
        ),
    ])
    .await;
    common::assert_code(&o, 0);
    assert!(common::stdout(&o).contains("scale deployments and statefulsets in namespace cex-app"));
}

/// A crash between the UPSERT and the journal write of its change id: the
/// journal has `previous` but no change id. The resumed step finds the record
/// at the target value and does not send the change again.
#[tokio::test(flavor = "multi_thread")]
async fn dns_crash_between_upsert_and_journaling_the_change_id_is_not_resent() {
    let dir = tempfile::tempdir().unwrap();
    let r53 = route53(1000).await;
    let rb = runbook(
        dir.path(),
        "dns",
        &dns_step("Z0FAKE", &r53.server.url, false)
            .replace("timeout = \"20s\"", "timeout = \"1s\""),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    assert_eq!(r53.state.lock().unwrap().accepted_changes.len(), 1);
    // Rewrite the journal as the crash would have left it.
    let runs = dir.path().join("state/dns/runs");
    let path = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let kept: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.contains("change-id")
                && !l.contains("\"type\":\"step-failed\"")
                && !l.contains("\"type\":\"run-finished\"")
                && !l.contains("\"type\":\"notified\"")
        })
        .map(str::to_owned)
        .collect();
    assert!(kept.iter().any(|l| l.contains("\"previous\"")));
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    r53.state.lock().unwrap().pending_polls = 0;
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 0);
    assert_eq!(
        r53.state.lock().unwrap().calls["change"],
        1,
        "not sent again"
    );
    let recs = journal(dir.path(), "dns");
    let done = recs.iter().find(|r| r["type"] == "step-done").unwrap();
    assert_eq!(done["details"]["changed"], true);
    assert_eq!(done["details"]["change-id"], Value::Null);
}

/// scale-up never reduces replicas during a failover unless the runbook says
/// `allow-scale-down = true`; a selector matching nothing is permanent (not
/// retried); the Kubernetes API address and context are in the error.
#[tokio::test(flavor = "multi_thread")]
async fn scale_up_never_scales_down_and_permanent_errors_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let k = kube(
        dir.path(),
        vec![
            workload("deployments", "big", &[("tier", "x")], 5),
            workload("deployments", "small", &[("tier", "x")], 1),
        ],
    )
    .await;
    let rb = runbook(dir.path(), "down", &scale_step(&k.kubeconfig, "tier=x"));
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    assert_eq!(
        k.state.lock().unwrap().scale_calls,
        vec![("small".to_owned(), 2)],
        "the workload at 5 is not scaled down to 2"
    );
    let recs = journal(dir.path(), "down");
    let done = recs.iter().find(|r| r["type"] == "step-done").unwrap();
    assert!(done["details"]["kept"][0]
        .as_str()
        .unwrap()
        .contains("big runs 5 > 2"));
    let text = std::fs::read_to_string(&rb).unwrap().replace(
        "poll-interval = \"20ms\"",
        "poll-interval = \"20ms\"\nallow-scale-down = true",
    );
    let rb2 = dir.path().join("down2.toml");
    std::fs::write(&rb2, text.replace("name = \"down\"", "name = \"down2\"")).unwrap();
    let o = failover(&rb2, &[]).await;
    common::assert_code(&o, 0);
    assert!(k
        .state
        .lock()
        .unwrap()
        .scale_calls
        .contains(&("big".to_owned(), 2)));

    // Permanent: the selector matches nothing; 3 retries allowed, 1 attempt made.
    let rb = runbook(
        dir.path(),
        "perm",
        &scale_step(&k.kubeconfig, "app=nothing").replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\nretries = 3\nbackoff = \"10ms\"",
        ),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    let recs = journal(dir.path(), "perm");
    assert_eq!(
        recs.iter().filter(|r| r["type"] == "step-started").count(),
        1,
        "{recs:?}"
    );
    // Transient: an API server that is not there is retried, and named.
    let kc = dir.path().join("dead-kubeconfig");
    let port = closed_port();
    write_kubeconfig(&kc, &format!("http://127.0.0.1:{port}"));
    let rb = runbook(
        dir.path(),
        "gone",
        &scale_step(&kc, "app=api").replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\nretries = 1\nbackoff = \"10ms\"",
        ),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    assert!(
        common::stderr(&o).contains(&format!(
            "Kubernetes API http://127.0.0.1:{port}/ (context current)"
        )),
        "{}",
        common::stderr(&o)
    );
    let recs = journal(dir.path(), "gone");
    assert_eq!(
        recs.iter().filter(|r| r["type"] == "step-started").count(),
        2
    );
}

/// `expect-json` matches JSON, not bytes, and a mismatch shows the body.
#[tokio::test(flavor = "multi_thread")]
async fn verify_expect_json_matches_values_and_errors_show_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let h = health(200).await;
    let step = |want: &str| {
        format!(
            "[[step]]\nname = \"v\"\nkind = \"verify\"\ntimeout = \"1s\"\nsuccesses = 1\ninterval = \"20ms\"\nhttp = [{{ url = \"{}/healthz\", expect-json = {want} }}]\n",
            h.server.url
        )
    };
    let rb = runbook(dir.path(), "okjson", &step("{ status = \"ok\" }"));
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    let rb = runbook(dir.path(), "badjson", &step("{ status = \"green\" }"));
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    let err = common::stderr(&o);
    assert!(
        err.contains("does not match expect-json {\"status\":\"green\"}")
            && err.contains("body: {\"status\":\"ok\"}"),
        "{err}"
    );
}
