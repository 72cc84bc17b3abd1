//! Proof on a schedule (issue 12): the read-back after every backup, restore
//! drills per kind (files into a scratch folder, mysql into scratch
//! databases, redis into a scratch redis-server), the daemon running a
//! weekly drill on tokio's paused clock, verification levels in `catalog
//! list`, and the HTML audit report rendered by headless Chromium.
use crate::common;
use crate::redis_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cexdr::backup::catalog::{Catalog, Status};
use cexdr::backup::job::{self, Event, EventSink, JobEnv, Sinks};
use cexdr::backup::metrics::Metrics;
use cexdr::backup::policy::Policy;
use cexdr::backup::scheduler::{Control, Scheduler, TokioClock};
use cexdr::store::{self, ByteStream, DynStore, ObjectMeta, Store};
use chrono::{DateTime, Utc};
use common::*;
use serde_json::Value;
use tokio::sync::mpsc;

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

#[async_trait]
impl EventSink for Recorder {
    async fn event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("conf.d")).unwrap();
    std::fs::write(src.join("app.conf"), "listen = 443\n").unwrap();
    std::fs::write(src.join("conf.d/limits.conf"), "max = 10\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("app.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("app.conf", src.join("current.conf")).unwrap();
    src
}

fn files_policy(dir: &Path, extra: &str) -> PathBuf {
    let src = tree(dir);
    write_policy(
        dir,
        &format!(
            "{}\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"0 * * * *\"\n{extra}\n",
            local_store(&dir.join("store")),
            src.display()
        ),
    )
}

fn ps(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Reads through to a real store but flips one byte of every artifact it
/// returns: the upload went through, the stored object is damaged.
struct Corrupting(DynStore);

#[async_trait]
impl Store for Corrupting {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn preflight(&self) -> cexdr::Result<()> {
        self.0.preflight().await
    }
    async fn put(&self, key: &str, body: ByteStream) -> cexdr::Result<u64> {
        self.0.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> cexdr::Result<bool> {
        self.0.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> cexdr::Result<ByteStream> {
        let s = self.0.get(key).await?;
        if !key.ends_with(".gz") {
            return Ok(s);
        }
        use futures::StreamExt;
        let mut first = true;
        Ok(s.map(move |c| {
            c.map(|b| {
                if first && b.len() > 40 {
                    first = false;
                    let mut v = b.to_vec();
                    v[30] ^= 0x55;
                    Bytes::from(v)
                } else {
                    b
                }
            })
        })
        .boxed())
    }
    async fn list(&self, prefix: &str) -> cexdr::Result<Vec<ObjectMeta>> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> cexdr::Result<()> {
        self.0.delete(key).await
    }
    async fn head(&self, key: &str) -> cexdr::Result<Option<ObjectMeta>> {
        self.0.head(key).await
    }
}

fn env_for(policy: &Policy, store: DynStore, sink: Arc<Recorder>, metrics: Metrics) -> JobEnv {
    JobEnv {
        policy: Arc::new(policy.clone()),
        store,
        metrics,
        sinks: Sinks {
            sinks: vec![sink],
            wait: true,
        },
        clock: Arc::new(job::SystemClock),
        lease_ttl: cexdr::backup::lease::DEFAULT_TTL,
        prune: false,
        identities: None,
        progress: cexdr::base::progress::silent(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_back_after_a_backup_catches_a_damaged_store_object() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::load(&files_policy(dir.path(), "")).unwrap();
    let real = store::build(&p.store).await.unwrap();
    let rec = Arc::new(Recorder::default());
    let metrics = Metrics::new();
    metrics.set_policy(&p, Utc::now());

    // A healthy store: the backup is read back and listed as checksum.
    let env = env_for(&p, real.clone(), rec.clone(), metrics.clone());
    let jobs: Vec<_> = p.jobs.iter().collect();
    let (outs, code) = job::run_jobs(&env, &jobs, Default::default()).await;
    assert_eq!(code, 0, "{outs:?}");
    let v = outs[0].read_back.as_ref().expect("read back");
    assert_eq!((v.status, v.method.as_str()), (Status::Ok, "read-back"));

    // A store that returns damaged bytes: exit 4, listed as FAILED, counted
    // and notified; the backup itself stays listed.
    let env = env_for(
        &p,
        Arc::new(Corrupting(real.clone())),
        rec.clone(),
        metrics.clone(),
    );
    let (outs, code) = job::run_jobs(&env, &jobs, Default::default()).await;
    assert_eq!(code, 4, "{outs:?}");
    let v = outs[0].read_back.as_ref().unwrap();
    assert_eq!(v.status, Status::Failed);
    assert!(v.error.as_deref().unwrap().contains("sha256"), "{v:?}");
    let failed: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::VerificationFailed { method, error, .. } => Some((method, error)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "read-back");
    let text = metrics.render();
    assert!(
        text.contains("cexdr_read_back_failures_total{cexdr_job=\"config\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cexdr_catalog_verification_failed_backups{cexdr_job=\"config\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cexdr_backup_failures_total{cexdr_job=\"config\"} 1"),
        "{text}"
    );

    // The CLI shows both levels.
    let list = cexdr(&["--policy", ps(&p.file), "catalog", "list"]);
    assert_code(&list, 0);
    let out = stdout(&list);
    let today = Utc::now().format("%Y-%m-%d").to_string();
    assert!(out.contains(&format!("checksum {today}")), "{out}");
    assert!(
        out.contains("FAILED") && out.contains("(read-back)"),
        "{out}"
    );
    let json = catalog_json(&p.file);
    let levels: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["verification"]["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["checksum", "failed"]);
}

#[test]
fn cexdr_backup_reads_back_and_a_files_drill_proves_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let pol = files_policy(
        dir.path(),
        &format!(
            "drill = {{ schedule = \"0 5 * * 0\", scratch = \"{}\" }}",
            scratch.display()
        ),
    );
    let o = cexdr(&["--policy", ps(&pol), "backup", "config"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("read back: ok"), "{}", stdout(&o));
    let b = &catalog_json(&pol)[0];
    assert_eq!(b["verification"]["level"], "checksum", "{b:#}");
    assert_eq!(b["verification"]["method"], "read-back");
    // The per-file list is in the artifact's details, not repeated.
    let list = b["artifacts"][0]["details"]["file_list"]
        .as_array()
        .unwrap();
    let conf = list
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("src/app.conf"))
        .unwrap();
    assert_eq!(conf["mode"], 0o640);
    assert_eq!(conf["sha256"].as_str().unwrap().len(), 64);
    assert!(list
        .iter()
        .any(|r| r["type"] == "symlink" && r["link"] == "app.conf"));
    assert!(b["details"].get("file_list").is_none());

    let o = cexdr(&["--policy", ps(&pol), "drill", "config"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("restore drill ok"), "{}", stdout(&o));
    // Scratch removed.
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    let b = &catalog_json(&pol)[0];
    let v = &b["verification"];
    assert_eq!(v["level"], "restore-tested", "{b:#}");
    assert_eq!(v["method"], "restore-test");
    assert!(v["duration_s"].as_f64().unwrap() >= 0.0, "{v}");
    let out = stdout(&cexdr(&["--policy", ps(&pol), "catalog", "list"]));
    assert!(
        out.contains(&format!(
            "restore-tested {} (RTO ",
            Utc::now().format("%Y-%m-%d")
        )),
        "{out}"
    );
    // The record is signed like the others and names what was compared.
    let show = stdout(&cexdr(&[
        "--policy",
        ps(&pol),
        "--json",
        "catalog",
        "show",
        b["id"].as_str().unwrap(),
    ]));
    assert!(
        show.contains("compared with the list recorded at backup time"),
        "{show}"
    );

    // `verify --restore-test` runs the same restore test.
    let id = b["id"].as_str().unwrap();
    let o = cexdr(&["--policy", ps(&pol), "verify", id, "--restore-test"]);
    assert_code(&o, 0);
}

#[test]
fn a_files_drill_fails_on_a_restored_tree_that_differs_from_the_list() {
    // The list is checked, not just the tar: a list that says 0600 where
    // the archive has 0640 is a failed drill (the manifest is edited here,
    // unsigned policy, to stand for a restore that loses modes).
    let dir = tempfile::tempdir().unwrap();
    let pol = files_policy(dir.path(), "drill = { schedule = \"@weekly\" }");
    assert_code(&cexdr(&["--policy", ps(&pol), "backup", "config"]), 0);
    let b = catalog_json(&pol)[0].clone();
    let key = dir
        .path()
        .join("store")
        .join(Path::new(b["key"].as_str().unwrap()).parent().unwrap())
        .join("manifest.json");
    let text = std::fs::read_to_string(&key).unwrap();
    let mut m: Value = serde_json::from_str(&text).unwrap();
    for r in m["artifacts"][0]["details"]["file_list"]
        .as_array_mut()
        .unwrap()
    {
        if r["path"].as_str().unwrap().ends_with("app.conf") && r["type"] == "file" {
            r["mode"] = 0o600.into();
        }
    }
    std::fs::write(&key, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let o = cexdr(&["--policy", ps(&pol), "drill", "config"]);
    assert_code(&o, 4);
    assert!(
        stdout(&o).contains("mode 0640 restored, 0600 recorded"),
        "{}",
        stdout(&o)
    );
    assert_eq!(catalog_json(&pol)[0]["verification"]["level"], "failed");
}

/// Runs SQL with the stock client.
fn sql(text: &str) -> String {
    let url = mysql_url();
    let rest = url.trim_start_matches("mysql://");
    let (user, hp) = rest.split_once('@').unwrap_or(("root", rest));
    let (host, port) = hp
        .trim_end_matches('/')
        .split_once(':')
        .unwrap_or((hp, "3306"));
    let mut c = Command::new("mariadb")
        .args([
            "--protocol=tcp",
            &format!("-h{host}"),
            &format!("-P{port}"),
            &format!("-u{user}"),
            "-N",
            "-B",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mariadb client");
    use std::io::Write;
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "sql failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn mysql_drills_use_scratch_databases_and_refuse_the_source_server() {
    let _scratch = common::scratch_databases();
    let db = format!("proof_{:08x}", rand::random::<u32>());
    sql(&format!("CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO `{db}`.t VALUES (1,'a'),(2,'b'),(3,'c');"));
    let dir = tempfile::tempdir().unwrap();
    let write = |drill: &str| {
        write_policy(
            dir.path(),
            &format!(
                "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{}\"\ndatabases = [\"{db}\"]\ndrill = {{ schedule = \"0 5 * * 0\", {drill} }}\n",
                local_store(&dir.path().join("store")),
                mysql_url()
            ),
        )
    };
    // The shared server is the job's own source: refused by default.
    let pol = write(&format!("target = \"{}\"", mysql_url()));
    assert_code(&cexdr(&["--policy", ps(&pol), "backup", "db"]), 0);
    let o = cexdr(&["--policy", ps(&pol), "drill", "db"]);
    assert_code(&o, 4);
    assert!(
        stdout(&o).contains("the job's own source server"),
        "{}",
        stdout(&o)
    );

    // Unreachable target: a clear failure, recorded.
    let pol = write("target = \"mysql://root@127.0.0.1:1\", timeout = \"20s\"");
    let o = cexdr(&["--policy", ps(&pol), "drill", "db"]);
    assert_code(&o, 4);
    assert!(stdout(&o).contains("127.0.0.1:1"), "{}", stdout(&o));

    // Allowed: uniquely named scratch databases, dropped again.
    let pol = write(&format!(
        "target = \"{}\", allow-source-server = true",
        mysql_url()
    ));
    let o = cexdr(&["--policy", ps(&pol), "drill", "db"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("restore drill ok") && out.contains("allow-source-server"),
        "{out}"
    );
    let b = &catalog_json(&pol)[0];
    assert_eq!(b["verification"]["level"], "restore-tested", "{b:#}");
    // The source database is untouched, no scratch one of ours is left.
    assert_eq!(sql(&format!("SELECT COUNT(*) FROM `{db}`.t")).trim(), "3");
    let show = stdout(&cexdr(&[
        "--policy",
        ps(&pol),
        "--json",
        "catalog",
        "show",
        b["id"].as_str().unwrap(),
    ]));
    assert!(show.contains("\"source_server\": true"), "{show}");
    sql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn a_redis_drill_loads_into_a_scratch_server() {
    let s = redis_support::Server::start(&[]);
    let mut c = s.conn();
    for i in 0..50 {
        c.cmds(&["SET", &format!("k{i}"), "v"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let pol = redis_support::redis_policy(
        dir.path(),
        &s.url(),
        "drill = { schedule = \"0 5 * * 0\" }\n",
    );
    assert_code(&cexdr(&["--policy", ps(&pol), "backup", "cache"]), 0);
    let o = cexdr(&["--policy", ps(&pol), "drill", "cache"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("50 keys"), "{}", stdout(&o));
    let b = &catalog_json(&pol)[0];
    assert_eq!(b["verification"]["level"], "restore-tested", "{b:#}");
}

#[test]
fn drill_settings_are_validated_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let pol = files_policy(
        dir.path(),
        "drill = { schedule = \"0 5 * * 0\", target = \"mysql://x@y:1\" }",
    );
    let dir = tempfile::tempdir().unwrap();
    let o = cexdr(&["--policy", ps(&pol), "policy", "check"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("target applies to mysql drills only"),
        "{}",
        stderr(&o)
    );
    let pol = files_policy(
        dir.path(),
        "drill = { schedule = \"0 5 * * 0\", sheduel = 1 }",
    );
    let o = cexdr(&["--policy", ps(&pol), "policy", "check"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("sheduel"), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let pol = files_policy(dir.path(), "");
    let o = cexdr(&["--policy", ps(&pol), "drill", "config"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("has no drill"), "{}", stderr(&o));
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_daemon_runs_the_weekly_drill_and_goes_on_after_a_failed_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    // `b`'s scratch folder cannot be created (a file is in the way).
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let text = format!(
        "{}\n[daemon]\nmetrics-listen = \"\"\nmax-parallel = 2\n\
         [[job]]\nname = \"a\"\nkind = \"files\"\npaths = [\"{src}\"]\nschedule = \"0 * * * *\"\n\
         drill = {{ schedule = \"0 5 * * 0\", scratch = \"{scratch}\" }}\n\
         [[job]]\nname = \"b\"\nkind = \"files\"\npaths = [\"{src}\"]\nschedule = \"0 * * * *\"\n\
         drill = {{ schedule = \"0 5 * * 0\", scratch = \"{bad}\" }}\n",
        local_store(&dir.path().join("store")),
        src = src.display(),
        scratch = dir.path().join("scratch").display(),
        bad = blocker.join("sub").display(),
    );
    let p = Policy::load(&write_policy(dir.path(), &text)).unwrap();
    let store = store::build(&p.store).await.unwrap();
    let rec = Arc::new(Recorder::default());
    let metrics = Metrics::new();
    // Sunday 2026-11-29, 03:30 UTC: backups at 04:00 and 05:00, the drill at 05:00.
    let clock = Arc::new(TokioClock::starting_at(at("2026-11-29T03:30:00Z")));
    let mut s = Scheduler::new(p, store.clone(), clock, metrics.clone());
    s.add_sink(rec.clone());
    let (ctl, rx) = mpsc::channel(1);
    let task = tokio::spawn(s.run(rx));
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    ctl.send(Control::Stop).await.unwrap();
    task.await.unwrap().unwrap();
    tokio::task::yield_now().await;

    let events = rec.events();
    let drilled: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Drilled { job, seconds, .. } => Some((job.clone(), *seconds)),
            _ => None,
        })
        .collect();
    assert_eq!(drilled.len(), 1, "{events:?}");
    assert_eq!(drilled[0].0, "a");
    // b's drill failed, was recorded and notified; its backups went on.
    assert!(
        events.iter().any(|e| matches!(e, Event::VerificationFailed { job, method, .. } if job == "b" && method == "restore-test")),
        "{events:?}"
    );
    let ok_b = events
        .iter()
        .filter(|e| matches!(e, Event::Succeeded { job, .. } if job == "b"))
        .count();
    assert_eq!(ok_b, 2, "{events:?}");
    // The record is in the catalog: a's newest undrilled backup at 05:00
    // (or the 04:00 one if the drill got the lease first) is restore-tested.
    let cat = Catalog::new(store.clone());
    let a = cat.list_full(Some("a")).await.unwrap();
    let tested: Vec<_> = a
        .iter()
        .filter(|e| e.level().word() == "restore-tested")
        .collect();
    assert_eq!(tested.len(), 1);
    let text = metrics.render();
    assert!(
        text.contains("cexdr_verification_last_success_timestamp_seconds{cexdr_job=\"a\",level=\"restore-test\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "cexdr_verification_last_success_timestamp_seconds{cexdr_job=\"a\",level=\"checksum\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("cexdr_drill_last_duration_seconds{cexdr_job=\"a\"}"),
        "{text}"
    );
    assert!(
        text.contains("cexdr_drill_failures_total{cexdr_job=\"b\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cexdr_drills_total{cexdr_job=\"a\"} 1"),
        "{text}"
    );
    // /report has both jobs.
    let html = metrics.report(at("2026-11-29T05:30:00Z")).unwrap();
    assert!(html.contains("data-job=\"a\"") && html.contains("data-job=\"b\""));
}

/// Headless Chromium, as root in a container (flags from the brief).
fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().map(|o| o.status.success()).unwrap_or(false))
        .expect("chromium is not installed: run scripts/dev-services start (it installs Debian's chromium)");
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .output()
        .expect("run chromium")
}

#[test]
fn the_html_report_renders_every_job_and_state_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let text = format!(
        "{}\n[[job]]\nname = \"nginx-config\"\nkind = \"files\"\npaths = [\"{src}\"]\nschedule = \"0 * * * *\"\nkeep = {{ last = 4 }}\n\
         drill = {{ schedule = \"0 5 * * 0\" }}\n\
         [[job]]\nname = \"app-config\"\nkind = \"files\"\npaths = [\"{src}\"]\nschedule = \"0 3 * * *\"\nverify-after-backup = false\n\
         [[job]]\nname = \"never-run\"\nkind = \"files\"\npaths = [\"{src}\"]\nschedule = \"0 3 * * *\"\n",
        local_store(&dir.path().join("store")),
        src = src.display()
    );
    let pol = write_policy(dir.path(), &text);
    let p = ps(&pol);
    for _ in 0..6 {
        assert_code(&cexdr(&["--policy", p, "backup", "nginx-config"]), 0);
    }
    assert_code(&cexdr(&["--policy", p, "drill", "nginx-config"]), 0);
    // Pruned: 6 backups, keep the last 4.
    assert_code(
        &cexdr(&[
            "--policy",
            p,
            "prune",
            "--job",
            "nginx-config",
            "--grace",
            "1s",
        ]),
        0,
    );
    // app-config: one unverified, one failed (damaged on disk, then verified).
    assert_code(&cexdr(&["--policy", p, "backup", "app-config"]), 0);
    assert_code(&cexdr(&["--policy", p, "backup", "app-config"]), 0);
    let list = catalog_json(&pol);
    let app: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["job"] == "app-config")
        .collect();
    let art = dir
        .path()
        .join("store")
        .join(app[1]["key"].as_str().unwrap());
    let mut bytes = std::fs::read(&art).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    std::fs::write(&art, bytes).unwrap();
    assert_code(
        &cexdr(&["--policy", p, "verify", app[1]["id"].as_str().unwrap()]),
        4,
    );

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cexdr-report");
    std::fs::create_dir_all(&target).unwrap();
    let html = target.join("report.html");
    let o = cexdr(&["--policy", p, "catalog", "report", "--html", ps(&html)]);
    assert_code(&o, 0);
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: no script, no external resource.
    for bad in ["<script", "http://", "https://", "<link", "@import", "url("] {
        assert!(!page.contains(bad), "the report contains {bad:?}");
    }

    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", html.display());
    let o = chromium(&["--dump-dom", &url], profile.path());
    assert!(
        o.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    for job in ["nginx-config", "app-config", "never-run"] {
        assert!(
            dom.contains(&format!("data-job=\"{job}\"")),
            "job {job} missing from the DOM"
        );
    }
    for state in [
        "restore-tested",
        "checksum",
        "unverified",
        "failed",
        "pruned",
    ] {
        assert!(
            dom.contains(&format!("<circle data-state=\"{state}\"")),
            "no {state} backup drawn in the timeline"
        );
    }
    assert!(dom.contains("keep the last 4"), "retention rule missing");
    assert!(dom.contains("RTO · last drill restore"));
    assert!(
        dom.contains("data-chain=\"ok\""),
        "signature chain should be intact"
    );
    assert!(dom.contains("id=\"failed-count\">1<"), "one failed backup");

    let shot = target.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium(
        &[
            "--hide-scrollbars",
            "--window-size=1280,1700",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
        profile.path(),
    );
    assert!(
        o.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    eprintln!("report screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_serves_the_report_beside_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::load(&files_policy(dir.path(), "")).unwrap();
    let store = store::build(&p.store).await.unwrap();
    let metrics = Metrics::new();
    metrics.set_policy(&p, Utc::now());
    let env = env_for(
        &p,
        store.clone(),
        Arc::new(Recorder::default()),
        metrics.clone(),
    );
    let o = job::run_job(&env, &p.jobs[0], Utc::now(), Default::default()).await;
    assert_eq!(o.exit_code(), 0);
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _task) =
        cexdr::backup::metrics::serve(metrics, "127.0.0.1:0".parse().unwrap(), stop.clone())
            .await
            .unwrap();
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let report = get("/report").await;
    assert!(report.starts_with("HTTP/1.1 200"), "{report}");
    assert!(report.contains("Content-Type: text/html"), "{report}");
    assert!(
        report.contains("data-job=\"config\"") && report.contains("data-state=\"checksum\""),
        "{report}"
    );
    let m = get("/metrics").await;
    assert!(m.contains("cexdr_verification_last_success_timestamp_seconds{cexdr_job=\"config\",level=\"checksum\"}"), "{m}");
    stop.cancel();
}
