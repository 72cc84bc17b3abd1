//! Backup notifications through real receivers: a local HTTP server for the
//! Slack and generic webhooks, aiosmtpd for email. A failing channel never
//! fails the backup.
use crate::common;
use crate::fakes;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

fn policy(dir: &Path, src: &str, hook: &str, smtp_port: u16, on: &str) -> std::path::PathBuf {
    write_policy(
        dir,
        &format!(
            r#"{store}
[[job]]
name = "config"
kind = "files"
paths = ["{src}"]

[[channel]]
name = "ops-slack"
kind = "slack"
webhook-url-env = "CEXDR_TEST_SLACK_URL"

[[channel]]
name = "pager"
kind = "webhook"
url = "{hook}"

[[channel]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "plain"
from = "cexdr@example.com"
to = ["sre@example.com"]

[[channel]]
name = "dead"
kind = "webhook"
url = "http://127.0.0.1:{dead}/hook"

[notify]
channels = ["ops-slack", "pager", "mail", "dead"]
{on}
"#,
            store = local_store(&dir.join("repo")),
            dead = fakes::closed_port(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_and_successes_reach_every_channel_once() {
    let dir = tempfile::tempdir().unwrap();
    let slack = fakes::receiver(200, Duration::ZERO).await;
    let hook = fakes::receiver(200, Duration::ZERO).await;
    let smtp = fakes::smtp(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.conf"), "a").unwrap();

    // A failing backup (the folder is missing): default events.
    let p = policy(
        dir.path(),
        "/nonexistent-cexdr-src",
        &hook.url(),
        smtp.port,
        "",
    );
    let env = [("CEXDR_TEST_SLACK_URL", slack.url())];
    let p2 = p.clone();
    let e2 = env.clone();
    let o = tokio::task::spawn_blocking(move || {
        cexdr_env(
            &["--policy", p2.to_str().unwrap(), "backup", "config"],
            &[(e2[0].0, e2[0].1.as_str())],
        )
    })
    .await
    .unwrap();
    assert_code(&o, 1);
    // The unreachable channel is logged, not fatal, and named.
    assert!(stderr(&o).contains("notification failed"), "{}", stderr(&o));
    let s = slack.messages();
    assert_eq!(s.len(), 1, "{s:?}");
    let text = s[0].1["text"].as_str().unwrap();
    assert!(
        text.contains("backup of config FAILED") && text.contains("nonexistent-cexdr-src"),
        "{text}"
    );
    let h = hook.messages();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].1["severity"], "critical");
    assert_eq!(h[0].1["fields"]["job"], "config");
    assert!(h[0].0.contains_key("idempotency-key"));
    let m = smtp.messages();
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0]["subject"]
        .as_str()
        .unwrap()
        .contains("backup of config FAILED"));

    // A successful backup with on = ["success"]: exit 0 although a channel is dead.
    let p = policy(
        dir.path(),
        src.to_str().unwrap(),
        &hook.url(),
        smtp.port,
        "on = [\"success\", \"failure\"]",
    );
    let p2 = p.clone();
    let o = tokio::task::spawn_blocking(move || {
        cexdr_env(
            &["--policy", p2.to_str().unwrap(), "backup", "config"],
            &[(env[0].0, env[0].1.as_str())],
        )
    })
    .await
    .unwrap();
    assert_code(&o, 0);
    assert_eq!(slack.messages().len(), 2);
    let h = hook.messages();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].1["severity"], "info");
    assert!(h[1].1["subject"]
        .as_str()
        .unwrap()
        .contains("backup of config done"));
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_verification_is_notified() {
    let dir = tempfile::tempdir().unwrap();
    let hook = fakes::receiver(200, Duration::ZERO).await;
    let slack = fakes::receiver(200, Duration::ZERO).await;
    let smtp = fakes::smtp(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.conf"), "a".repeat(10_000)).unwrap();
    let p = policy(
        dir.path(),
        src.to_str().unwrap(),
        &hook.url(),
        smtp.port,
        "on = [\"verification-failure\"]",
    );
    let url = slack.url();
    let (p2, u2) = (p.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        assert_code(
            &cexdr_env(
                &["--policy", p2.to_str().unwrap(), "backup", "config"],
                &[("CEXDR_TEST_SLACK_URL", &u2)],
            ),
            0,
        )
    })
    .await
    .unwrap();
    assert!(hook.messages().is_empty(), "success was not asked for");
    let b = catalog_json(&p)[0].clone();
    let f = dir.path().join("repo").join(b["key"].as_str().unwrap());
    let mut data = fs::read(&f).unwrap();
    data[20] ^= 1;
    fs::write(&f, data).unwrap();
    let p2 = p.clone();
    let o = tokio::task::spawn_blocking(move || {
        cexdr_env(
            &["--policy", p2.to_str().unwrap(), "verify", "--all"],
            &[("CEXDR_TEST_SLACK_URL", &url)],
        )
    })
    .await
    .unwrap();
    assert_code(&o, 4);
    let h = hook.messages();
    assert_eq!(h.len(), 1);
    assert!(
        h[0].1["subject"]
            .as_str()
            .unwrap()
            .contains("verification of config backup"),
        "{h:?}"
    );
    assert_eq!(h[0].1["fields"]["id"], b["id"]);
}

#[test]
fn notify_naming_an_unknown_channel_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        &format!("{}\n[[job]]\nname = \"c\"\nkind = \"files\"\npaths = [\"/etc\"]\n\n[notify]\nchannels = [\"nope\"]\n", local_store(&dir.path().join("r"))),
    );
    let o = cexdr(&["--policy", p.to_str().unwrap(), "policy", "check"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("policy.toml:11") && stderr(&o).contains("\"nope\""),
        "{}",
        stderr(&o)
    );
}
