//! Fencing, promotion and failback against private MariaDB servers (a
//! primary with binlog + a GTID replica from `mariadb_server`), through the
//! binary with small runbooks: the fence stops a root writer and proves it,
//! `promote-mysql` loses nothing the replica received (also after a kill -9
//! of cexdr in the middle, and from every state a crash can leave), the
//! data-loss guard, `rejoin-mysql` and its refusal on errant transactions.
use crate::common;
use crate::mariadb_server::MariaDb;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::common::runbook;

fn command(args: &[&str]) -> tokio::process::Command {
    let mut c = crate::common::cexdr_async(args);
    c.env("FO_REPL_PW", crate::mariadb_server::REPL_PASSWORD);
    c
}

async fn failover(rb: &Path, extra: &[&str]) -> Output {
    command(&crate::common::failover_args(rb, extra))
        .output()
        .await
        .unwrap()
}

async fn status(rb: &Path) -> Value {
    let o = command(&[
        "failover",
        "status",
        "--runbook",
        rb.to_str().unwrap(),
        "--json",
    ])
    .output()
    .await
    .unwrap();
    common::assert_code(&o, 0);
    serde_json::from_slice(&o.stdout).unwrap()
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

fn done<'a>(recs: &'a [Value], step: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["type"] == "step-done" && r["step"] == step)
        .unwrap_or_else(|| panic!("no step-done for {step}: {recs:?}"))
}

fn out(o: &Output) -> String {
    format!("{}{}", common::stdout(o), common::stderr(o))
}

/// The application: database `shop`, and `app@127.0.0.1` with ALL PRIVILEGES
/// (like the seed's apps that connect as root: READ_ONLY ADMIN included).
fn app_schema(p: &MariaDb) {
    p.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, n BIGINT NOT NULL); \
         CREATE USER app@'127.0.0.1'; GRANT ALL PRIVILEGES ON *.* TO app@'127.0.0.1' WITH GRANT OPTION;",
    );
}

/// The fence account of docs/failover.md: only what the fence needs.
fn fence_account(p: &MariaDb) -> String {
    p.sql(
        "CREATE USER cexdr_fence@'127.0.0.1'; \
         GRANT READ_ONLY ADMIN, CONNECTION ADMIN, PROCESS, SHUTDOWN, BINLOG ADMIN ON *.* TO cexdr_fence@'127.0.0.1' WITH GRANT OPTION; \
         GRANT SELECT ON mysql.* TO cexdr_fence@'127.0.0.1';",
    );
    format!("mysql://cexdr_fence@127.0.0.1:{}/", p.port())
}

fn app_url(p: &MariaDb) -> String {
    format!("mysql://app@127.0.0.1:{}/shop", p.port())
}

/// A writer that commits one row per transaction and reconnects on errors,
/// as an application does; counts what it committed.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(url: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), committed.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let Ok(mut c) = mysql_async::Conn::from_url(url.as_str()).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                while !s.load(Ordering::Relaxed) {
                    i += 1;
                    match c.exec_drop("INSERT INTO orders (n) VALUES (?)", (i,)).await {
                        Ok(()) => {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Writer {
            stop,
            committed,
            task,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.committed.load(Ordering::Relaxed)
    }
}

async fn wait_for_rows(w: &Writer, n: u64) {
    let t0 = Instant::now();
    while w.committed() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the writer is stuck"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn count(db: &MariaDb) -> u64 {
    db.sql("SELECT COUNT(*) FROM shop.orders").parse().unwrap()
}

fn seq(gtid: &str) -> u64 {
    gtid.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fence_read_only_stops_a_root_writer_and_the_probe_proves_it() {
    let p = MariaDb::primary();
    app_schema(&p);
    let fence = fence_account(&p);
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(
        dir.path(),
        "fence",
        &format!(
            "[[step]]\nname = \"fence\"\nkind = \"fence-mysql\"\nmode = \"read-only\"\nmysql = [{{ url = \"{fence}\" }}]\nprobe = [{{ url = \"{}\" }}]\n",
            app_url(&p)
        ),
    );
    let w = Writer::start(app_url(&p));
    wait_for_rows(&w, 50).await;
    let pos_before = p.gtid_binlog_pos();
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    // The writer (ALL PRIVILEGES) and root@localhost are stopped after cexdr exited.
    let after = w.committed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.committed(), after, "the writer still commits");
    let err = p
        .try_sql("INSERT INTO shop.orders (n) VALUES (-1)")
        .expect_err(&format!("{:?}", journal(dir.path(), "fence")));
    assert!(err.contains("read-only") || err.contains("1290"), "{err}");
    let committed = w.stop().await;
    let recs = journal(dir.path(), "fence");
    let d = &done(&recs, "fence")["details"];
    let s = &d["servers"][0];
    assert_eq!(s["fenced"], true, "{d}");
    let revoked: Vec<String> = s["revoked-read-only-admin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}@{}",
                a["user"].as_str().unwrap(),
                a["host"].as_str().unwrap()
            )
        })
        .collect();
    assert!(revoked.contains(&"app@127.0.0.1".to_owned()), "{revoked:?}");
    assert!(
        revoked.contains(&"root@localhost".to_owned()),
        "{revoked:?}"
    );
    assert!(
        revoked.contains(&"root@127.0.0.1".to_owned()),
        "{revoked:?}"
    );
    assert!(
        !revoked.contains(&"cexdr_fence@127.0.0.1".to_owned()),
        "the fence account keeps its own: {revoked:?}"
    );
    assert!(
        s["restore-with"][0]
            .as_str()
            .unwrap()
            .starts_with("GRANT READ_ONLY ADMIN ON *.* TO"),
        "{s}"
    );
    assert!(
        !s["killed-sessions"].as_array().unwrap().is_empty(),
        "the writer's session was killed: {s}"
    );
    // The intent was journaled before the revokes, and the proof is recorded.
    let intent = recs
        .iter()
        .position(|r| {
            r["type"] == "step-progress" && r["data"].get("revoke-read-only-admin").is_some()
        })
        .unwrap();
    assert!(intent < recs.iter().position(|r| r["type"] == "step-done").unwrap());
    let proof = d["proof"][0].as_str().unwrap();
    assert!(
        proof.contains("app@127.0.0.1") && proof.contains("1290"),
        "{proof}"
    );
    // The revokes are not in the binlog (they would be errant on failback):
    // the position only moved by what the writer committed.
    let pos_after = p.gtid_binlog_pos();
    assert!(
        seq(&pos_after) - seq(&pos_before) <= committed,
        "{pos_before} → {pos_after}, {committed} commits"
    );
    let events = p.sql("SHOW BINLOG EVENTS IN 'binlog.000001'");
    assert!(!events.contains("REVOKE"), "a REVOKE was binlogged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fence_shutdown_stops_the_server_and_a_leaky_fence_fails_the_step() {
    let p = MariaDb::primary();
    app_schema(&p);
    let dir = tempfile::tempdir().unwrap();
    // read-only without the bypass removal cannot be configured; a fence that
    // leaks is shown with a probe on another, unfenced server.
    let other = MariaDb::primary();
    app_schema(&other);
    let rb = runbook(
        dir.path(),
        "leak",
        &format!(
            "[[step]]\nname = \"fence\"\nkind = \"fence-mysql\"\nmysql = [{{ url = \"{}\" }}]\nprobe = [{{ url = \"{}\" }}]\n",
            p.url(),
            app_url(&other)
        ),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    assert!(
        common::stderr(&o).contains("the fence does not hold")
            && common::stderr(&o).contains("INSERT INTO cexdr_fence_probe succeeded"),
        "{}",
        out(&o)
    );

    let rb = runbook(
        dir.path(),
        "stonith",
        &format!(
            "[[step]]\nname = \"fence\"\nkind = \"fence-mysql\"\nmode = \"shutdown\"\nmysql = [{{ url = \"{}\" }}]\nprobe = [{{ url = \"{}\" }}]\n",
            p.url(),
            app_url(&p)
        ),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p.port())).is_err(),
        "the old primary is down"
    );
    let recs = journal(dir.path(), "stonith");
    let d = &done(&recs, "fence")["details"];
    assert_eq!(d["mode"], "shutdown");
    assert_eq!(d["servers"][0]["fenced"], true);
    assert!(
        d["proof"][0].as_str().unwrap().contains("cannot connect"),
        "{d}"
    );
}

/// The issue's scenario: a writer on the primary, kill -9 of the primary,
/// then check-primary → fence → promote-mysql → verify; every transaction
/// the replica received is on the promoted server. Then failback: the old
/// primary restarts and rejoins as a replica of the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_primary_promote_replica_then_rejoin_the_old_primary() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    let w = Writer::start(app_url(&p));
    wait_for_rows(&w, 300).await;
    p.kill9();
    let committed = w.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let steps = format!(
        r#"
[[step]]
name = "primary-down"
kind = "check-primary"
probes = 2
interval = "50ms"
probe-timeout = "1s"
mysql = [{{ url = "{p}" }}]

[[step]]
name = "fence"
kind = "fence-mysql"
connect-timeout = "500ms"
mysql = [{{ url = "{p}" }}]
probe = [{{ url = "{app}" }}]

[[step]]
name = "promote"
kind = "promote-mysql"
timeout = "60s"
replica = {{ url = "{r}" }}
old-primary = {{ url = "{p}" }}
connect-timeout = "500ms"

[[step]]
name = "db-serves"
kind = "verify"
service-restored = true
successes = 1
interval = "50ms"
mysql = [{{ url = "{r}/shop", query = "SELECT 1 FROM orders LIMIT 1" }}]
"#,
        p = p.url(),
        app = app_url(&p),
        r = r.url()
    );
    let rb = runbook(dir.path(), "promote", &steps);
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    let recs = journal(dir.path(), "promote");
    let d = &done(&recs, "promote")["details"];
    assert_eq!(d["promoted"], true, "{d}");
    assert_eq!(
        d["received"], d["applied"],
        "all it received was applied: {d}"
    );
    assert!(
        d["data-loss"]["transactions"].is_null(),
        "old primary down: unknown"
    );
    // The promoted server is writable and has every transaction it received.
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
    assert_eq!(r.sql("SHOW SLAVE STATUS"), "");
    let rows = count(&r);
    let applied = seq(d["applied"].as_str().unwrap());
    assert!(rows >= 1 && rows <= committed, "{rows} of {committed}");
    let st = status(&rb).await;
    assert_eq!(st["outcome"], "succeeded");
    assert_eq!(st["rto_ends_at"], "db-serves");
    assert!(st["rto_ms"].as_i64().unwrap() >= 0);
    assert_eq!(st["rpo"]["evidence"]["replica-applied"], d["applied"]);
    assert!(st["rpo"]["transactions"].is_null());
    let text = common::stdout(
        &command(&["failover", "status", "--runbook", rb.to_str().unwrap()])
            .output()
            .await
            .unwrap(),
    );
    assert!(
        text.contains("RTO (start → db-serves done)") && text.contains("RPO: unknown"),
        "{text}"
    );

    // New writes on the new primary, then the old primary comes back.
    r.sql("INSERT INTO shop.orders (n) VALUES (-7)");
    p.restart();
    let old_rows = count(&p);
    let old_seq = seq(&p.gtid_binlog_pos());
    let back = runbook(
        dir.path(),
        "back",
        &format!(
            "[[step]]\nname = \"rejoin\"\nkind = \"rejoin-mysql\"\ntimeout = \"30s\"\nold-primary = {{ url = \"{}\" }}\nnew-primary = {{ url = \"{}\" }}\nreplication-user = \"repl\"\nreplication-password-env = \"FO_REPL_PW\"\n",
            p.url(),
            r.url()
        ),
    );
    let o = failover(&back, &["--dry-run"]).await;
    common::assert_code(&o, 0);
    if old_seq > applied {
        // The kill landed with commits the replica never received: errant.
        assert!(common::stdout(&o).contains("refuse: errant"), "{}", out(&o));
        let o = failover(&back, &[]).await;
        common::assert_code(&o, 11);
        assert!(common::stderr(&o).contains("errant"), "{}", out(&o));
        eprintln!(
            "kill -9 left {} errant transaction(s) on the old primary: refused",
            old_seq - applied
        );
        return;
    }
    assert_eq!(
        old_rows, rows,
        "nothing lost: the old primary has what the replica received"
    );
    let o = failover(&back, &[]).await;
    common::assert_code(&o, 0);
    assert_eq!(
        count(&p),
        rows + 1,
        "the old primary replicated the new write"
    );
    let io: String = p.sql("SELECT COUNT(*) FROM shop.orders WHERE n = -7");
    assert_eq!(io, "1");
    assert_eq!(p.sql("SELECT @@global.read_only"), "1");
    // Resume-safe: a second run (forced past the cool-down) only waits.
    let o = failover(&back, &["--force"]).await;
    common::assert_code(&o, 0);
}

/// The unsafe sequence of the notes (STOP SLAVE; RESET SLAVE ALL before the
/// relay log is applied) must be impossible: a replica whose SQL thread is
/// stopped with received-but-unapplied transactions (as a crash after our
/// STOP SLAVE leaves it) gets them all applied before the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_applies_the_relay_log_from_every_state_a_crash_leaves() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.sql("STOP SLAVE SQL_THREAD");
    for i in 0..200 {
        p.sql(&format!("INSERT INTO shop.orders (n) VALUES ({i})"));
    }
    let total = count(&p);
    let t0 = Instant::now();
    loop {
        let st = r.sql("SHOW SLAVE STATUS\\G");
        // -N -B \G prints the values only, one per line.
        if st.lines().any(|l| l.trim() == p.gtid_binlog_pos()) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill9();
    // As a crash right after our STOP SLAVE would leave it: both threads stopped.
    r.sql("STOP SLAVE");
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(
        dir.path(),
        "relay",
        &format!(
            "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\ntimeout = \"60s\"\nretries = 2\nbackoff = \"10ms\"\nreplica = {{ url = \"{}\" }}\n",
            r.url()
        ),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    assert_eq!(count(&r), total, "every received transaction applied");
    let recs = journal(dir.path(), "relay");
    assert!(
        recs.iter()
            .any(|r| r["data"].get("relay-recovery").is_some()),
        "applied by relay-log position: {recs:?}"
    );

    // A crash after RESET SLAVE ALL, before read_only = OFF: the journal's
    // `applied` record lets a resume finish; without it the step refuses.
    let path = std::fs::read_dir(dir.path().join("state/relay/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let kept: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.contains("\"promoted\":true")
                && !l.contains("\"type\":\"step-done\"")
                && !l.contains("\"type\":\"run-finished\"")
        })
        .map(str::to_owned)
        .collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    r.sql("SET GLOBAL read_only = ON");
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("re-entering an interrupted step"),
        "{}",
        out(&o)
    );
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
    // A new run against a server that is not (or no longer) a replica: refused.
    let o = failover(&rb, &["--force"]).await;
    common::assert_code(&o, 11);
    assert!(common::stderr(&o).contains("not a replica"), "{}", out(&o));
    let recs = journal(dir.path(), "relay");
    assert_eq!(
        recs.iter().filter(|r| r["type"] == "step-failed").count(),
        1,
        "a permanent error is not retried"
    );
}

/// kill -9 of cexdr while the promotion waits for the SQL thread (a delayed
/// replica), then --resume: it waits again and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_cexdr_during_the_apply_wait_then_resume() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 5; START SLAVE");
    for i in 0..50 {
        p.sql(&format!("INSERT INTO shop.orders (n) VALUES ({i})"));
    }
    let total = count(&p);
    std::thread::sleep(Duration::from_millis(300));
    p.kill9();
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(
        dir.path(),
        "delayed",
        &format!(
            "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\ntimeout = \"60s\"\nreplica = {{ url = \"{}\" }}\n",
            r.url()
        ),
    );
    let mut child = command(&["failover", "--runbook", rb.to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = dir.path().join("state/delayed/runs");
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(30), "no received record");
        let text = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .unwrap_or_default();
        if text.contains("\"received\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    let st = child.wait().await.unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    assert!(count(&r) < total, "killed before everything was applied");
    assert_eq!(r.sql("SELECT @@global.read_only"), "1", "not promoted yet");
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o)
            .contains("was interrupted (killed, or the host went down) in step promote"),
        "{}",
        out(&o)
    );
    assert_eq!(count(&r), total);
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
}

/// max-data-loss: an old primary that answers shows what the replica lacks;
/// over budget is refused until --accept-data-loss (journaled), and the RPO
/// in `failover status` says how many transactions were given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_loss_guard_refuses_then_accept_data_loss_promotes_and_reports_rpo() {
    let p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.sql("STOP SLAVE IO_THREAD");
    for i in 0..5 {
        p.sql(&format!("INSERT INTO shop.orders (n) VALUES ({i})"));
    }
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(
        dir.path(),
        "guard",
        &format!(
            "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\nretries = 2\nbackoff = \"10ms\"\nreplica = {{ url = \"{}\" }}\nold-primary = {{ url = \"{}\" }}\nmax-data-loss = \"2 transactions\"\n",
            r.url(),
            p.url()
        ),
    );
    let o = failover(&rb, &["--dry-run"]).await;
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("refuse unless --accept-data-loss"),
        "{}",
        out(&o)
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    assert!(
        common::stderr(&o).contains("lacks 5 transaction(s)"),
        "{}",
        out(&o)
    );
    assert_eq!(r.sql("SELECT @@global.read_only"), "1", "not promoted");
    let recs = journal(dir.path(), "guard");
    assert_eq!(
        recs.iter().filter(|r| r["type"] == "step-failed").count(),
        1,
        "a refusal by budget is permanent: not retried"
    );
    let o = failover(&rb, &["--resume", "--accept-data-loss"]).await;
    common::assert_code(&o, 0);
    let recs = journal(dir.path(), "guard");
    assert!(recs
        .iter()
        .any(|r| r["type"] == "forced"
            && r["reason"].as_str().unwrap().contains("--accept-data-loss")));
    let st = status(&rb).await;
    assert_eq!(st["rpo"]["transactions"], 5, "{st}");
    assert!(st["rpo"]["seconds"].is_null(), "{st}");
    assert!(
        st["rpo"]["seconds-unknown"]
            .as_str()
            .unwrap()
            .contains("no binlog archive in the step"),
        "{st}"
    );
    assert_eq!(
        st["rpo"]["evidence"]["old-primary-position"],
        p.gtid_binlog_pos()
    );
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
}

/// Failback refuses an old primary that has transactions the new one never
/// got, and lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejoin_refuses_errant_transactions_with_the_list() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.sql("STOP SLAVE IO_THREAD");
    for i in 0..3 {
        p.sql(&format!("INSERT INTO shop.orders (n) VALUES ({i})"));
    }
    let old_pos = p.gtid_binlog_pos();
    p.kill9();
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(
        dir.path(),
        "go",
        &format!(
            "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\nreplica = {{ url = \"{}\" }}\n",
            r.url()
        ),
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    r.sql("INSERT INTO shop.orders (n) VALUES (100)");
    p.restart();
    let back = runbook(
        dir.path(),
        "back",
        &format!(
            "[[step]]\nname = \"rejoin\"\nkind = \"rejoin-mysql\"\nold-primary = {{ url = \"{}\" }}\nnew-primary = {{ url = \"{}\" }}\nreplication-user = \"repl\"\nreplication-password-env = \"FO_REPL_PW\"\n",
            p.url(),
            r.url()
        ),
    );
    let o = failover(&back, &[]).await;
    common::assert_code(&o, 11);
    let err = common::stderr(&o);
    let last = seq(&old_pos);
    let sid = p.server_id();
    assert!(
        err.contains("errant transactions")
            && err.contains(&format!("0-{sid}-{}..0-{sid}-{last} (3)", last - 2)),
        "{err}"
    );
    assert_eq!(p.sql("SHOW SLAVE STATUS"), "", "not re-pointed");
    assert_eq!(p.sql("SELECT @@global.read_only"), "1");
}

#[tokio::test]
async fn shipped_runbooks_use_the_native_promotion_and_failback_steps() {
    for (f, kind) in [
        ("cex-primary-to-backup.toml", "[promote-mysql]"),
        ("cex-backup-to-primary.toml", "[rejoin-mysql]"),
    ] {
        let path = format!("{}/runbooks/{f}", env!("CARGO_MANIFEST_DIR"));
        let o = command(&["runbook", "check", &path])
            .output()
            .await
            .unwrap();
        common::assert_code(&o, 0);
        assert!(common::stdout(&o).contains(kind), "{f}: {}", out(&o));
    }
    // The commented archive key validates once uncommented.
    let path = format!(
        "{}/runbooks/cex-primary-to-backup.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("\n# archive = {"),
        "the shipped runbook shows the archive key"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("with-archive.toml");
    std::fs::write(&p, text.replace("\n# archive = {", "\narchive = {")).unwrap();
    let o = command(&["runbook", "check", p.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("top up from the binlog archive of job exchange-db"),
        "{}",
        out(&o)
    );
}

// ------------------------------------------------------------ archive top-up

/// A policy whose job `job` archives `server`'s binlog into `dir/store`.
fn archive_policy(dir: &Path, server: &MariaDb, job: &str) -> PathBuf {
    common::write_policy(
        dir,
        &format!(
            "{}\n[[job]]\nname = \"{job}\"\nkind = \"mysql\"\nurl = \"{}\"\ndatabases = [\"shop\"]\nbinlog = {{ flush-interval = \"1s\", server-id = {} }}\n",
            common::local_store(&dir.join("store")),
            server.url(),
            900_000 + server.port() as u32
        ),
    )
}

/// A `cexdr binlog archive` child; SIGKILLed on drop.
struct Archiver {
    child: std::process::Child,
    log: PathBuf,
}

impl Archiver {
    fn start(policy: &Path, job: &str) -> Archiver {
        let log = policy.with_file_name(format!("{job}-archiver.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cexdr"))
            .args(["--policy", policy.to_str().unwrap(), "-v"])
            .args(["binlog", "archive", job, "--lease-ttl", "3s"])
            .env_remove("CEXDR_POLICY")
            .stdout(std::process::Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Archiver { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// SIGTERM: the open segment is stored and the lease released.
    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newest segment manifest's end position (read from the local store).
fn newest_archived(dir: &Path, job: &str) -> Option<String> {
    let root = dir.join("store/binlog").join(job);
    let mut best: Option<(String, String)> = None;
    for tl in std::fs::read_dir(&root).ok()? {
        let tl = tl.unwrap().path();
        if !tl.is_dir() || tl.ends_with("gaps") {
            continue;
        }
        for f in std::fs::read_dir(&tl).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            let m: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            if best.as_ref().map(|b| name > b.0).unwrap_or(true) {
                best = Some((name, m["gtid_end"].as_str().unwrap().to_string()));
            }
        }
    }
    best.map(|b| b.1)
}

async fn wait_archived(dir: &Path, job: &str, want: u64, a: &Archiver) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(g) = newest_archived(dir, job) {
            if !g.is_empty() && seq(&g) >= want {
                return g;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the archive did not reach seq {want}:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a kill -9 the archiver stores its open segment (at a transaction
/// boundary): wait until the newest manifest stops changing.
async fn archive_settled(dir: &Path, job: &str) -> String {
    let mut last = newest_archived(dir, job);
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = newest_archived(dir, job);
        if now == last {
            return now.expect("something archived");
        }
        last = now;
    }
}

/// `n` single-row transactions in one client call.
fn insert_rows(s: &MariaDb, from: u64, n: u64) {
    let q: String = (from..from + n)
        .map(|i| format!("INSERT INTO shop.orders (n) VALUES ({i});"))
        .collect();
    s.sql(&q);
}

/// The issue's scenario: a writer on the primary, the archiver archiving it,
/// the replica's IO thread stopped partway, kill -9 of the primary; the
/// runbook's promotion tops the replica up from the archive: every
/// transaction the replica received plus the archive's rest is on the
/// promoted server (under the old GTIDs, in its binlog), and `failover
/// status` shows the RPO (transactions and seconds) with its evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_top_up_brings_the_rest_and_status_shows_the_rpo() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.wait_caught_up(&p);
    let dir = tempfile::tempdir().unwrap();
    let policy = archive_policy(dir.path(), &p, "ledger");
    let arch = Archiver::start(&policy, "ledger");
    let base = seq(&p.gtid_binlog_pos());
    let w = Writer::start(app_url(&p));
    wait_for_rows(&w, 200).await;
    r.sql("STOP SLAVE IO_THREAD");
    let n = w.committed();
    wait_for_rows(&w, n + 300).await;
    wait_archived(dir.path(), "ledger", seq(&p.gtid_binlog_pos()), &arch).await;
    p.kill9();
    let committed = w.stop().await;
    let head = archive_settled(dir.path(), "ledger").await;
    drop(arch);
    let steps = format!(
        r#"
[[step]]
name = "primary-down"
kind = "check-primary"
probes = 2
interval = "50ms"
probe-timeout = "1s"
mysql = [{{ url = "{p}" }}]

[[step]]
name = "fence"
kind = "fence-mysql"
connect-timeout = "500ms"
mysql = [{{ url = "{p}" }}]
probe = [{{ url = "{app}" }}]

[[step]]
name = "promote"
kind = "promote-mysql"
timeout = "120s"
replica = {{ url = "{r}" }}
old-primary = {{ url = "{p}" }}
connect-timeout = "500ms"
max-data-loss = "5s"
archive = {{ policy = "{policy}", job = "ledger" }}

[[step]]
name = "db-serves"
kind = "verify"
service-restored = true
successes = 1
interval = "50ms"
mysql = [{{ url = "{r}/shop", query = "SELECT 1 FROM orders LIMIT 1" }}]
"#,
        p = p.url(),
        app = app_url(&p),
        r = r.url(),
        policy = policy.display()
    );
    let rb = runbook(dir.path(), "topup", &steps);
    let o = command(&["runbook", "check", rb.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("top up from the binlog archive of job ledger"),
        "{}",
        out(&o)
    );
    let o = failover(&rb, &["--dry-run"]).await;
    common::assert_code(&o, 0);
    assert!(common::stdout(&o).contains("would-apply"), "{}", out(&o));
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 0);
    let recs = journal(dir.path(), "topup");
    let d = &done(&recs, "promote")["details"];
    let received = seq(d["received"].as_str().unwrap());
    let top = &d["archive-top-up"];
    assert!(
        seq(&head) > received,
        "the archive holds more than the replica received"
    );
    assert_eq!(top["transactions"], seq(&head) - received, "{d}");
    assert_eq!(top["last-gtid"], head.as_str(), "{d}");
    assert_eq!(
        seq(top["first-gtid"].as_str().unwrap()),
        received + 1,
        "{d}"
    );
    assert!(top["last-commit"].is_string(), "{d}");
    // Everything received plus the archive's rest, once, under the old GTIDs.
    assert_eq!(r.gtid_binlog_pos(), head, "in the promoted server's binlog");
    let rows = count(&r);
    assert_eq!(rows, seq(&head) - base, "one row per archived transaction");
    assert!(rows <= committed, "{rows} of {committed} acknowledged");
    assert_eq!(
        r.sql("SELECT COUNT(DISTINCT id), MAX(id) FROM shop.orders"),
        format!("{rows}\t{rows}"),
        "no hole and no duplicate"
    );
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
    // RPO: nothing lacking against the archive head (the old primary is dead).
    let st = status(&rb).await;
    let rpo = &st["rpo"];
    assert_eq!(rpo["transactions"], 0, "{st}");
    assert_eq!(rpo["seconds"], 0, "{st}");
    assert_eq!(rpo["evidence"]["old-primary-position"], head.as_str());
    let src = rpo["evidence"]["source"].as_str().unwrap();
    assert!(
        src.contains("binlog archive of job ledger") && src.contains("did not answer"),
        "{src}"
    );
    assert_eq!(
        rpo["evidence"]["archive-top-up"]["transactions"],
        top["transactions"]
    );
    let text = common::stdout(
        &command(&["failover", "status", "--runbook", rb.to_str().unwrap()])
            .output()
            .await
            .unwrap(),
    );
    assert!(
        text.contains("RPO: 0 transaction(s) lacking, 0 s of commits")
            && text.contains("topped up from the archive"),
        "{text}"
    );
    // The old primary's own binlog agrees with the writer's record: what it
    // committed beyond the archive is the true loss, and the rest is equal.
    p.restart();
    let old_rows = count(&p);
    assert!(old_rows >= rows && old_rows <= committed, "{old_rows}");
    let sum = |s: &MariaDb| {
        s.sql(&format!(
            "SELECT COUNT(*), SUM(CRC32(CONCAT(id, ':', n))) FROM shop.orders WHERE id <= {rows}"
        ))
    };
    assert_eq!(sum(&p), sum(&r));
    eprintln!(
        "top-up: replica received {received}, archive head {head}, {} applied; old primary had {} more",
        top["transactions"],
        old_rows - rows
    );
}

/// A kill -9 of cexdr while the top-up applies: the orphaned client finishes
/// (or is cut at a transaction boundary), the resume waits for its lock,
/// reads the position again and applies only the rest: nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_cexdr_during_the_top_up_then_resume_applies_nothing_twice() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.wait_caught_up(&p);
    let dir = tempfile::tempdir().unwrap();
    let policy = archive_policy(dir.path(), &p, "crashjob");
    let arch = Archiver::start(&policy, "crashjob");
    insert_rows(&p, 0, 20);
    r.wait_caught_up(&p);
    r.sql("STOP SLAVE IO_THREAD");
    let received = seq(&p.gtid_binlog_pos());
    for k in 0..4 {
        insert_rows(&p, 1000 * (k + 1), 1000);
    }
    let total = count(&p);
    wait_archived(dir.path(), "crashjob", seq(&p.gtid_binlog_pos()), &arch).await;
    p.kill9();
    let head = archive_settled(dir.path(), "crashjob").await;
    drop(arch);
    let rb = runbook(
        dir.path(),
        "crash",
        &format!(
            "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\ntimeout = \"120s\"\nreplica = {{ url = \"{}\" }}\narchive = {{ policy = \"{}\", job = \"crashjob\" }}\n",
            r.url(),
            policy.display()
        ),
    );
    let mut child = command(&["failover", "--runbook", rb.to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = dir.path().join("state/crash/runs");
    let t0 = Instant::now();
    let text = loop {
        assert!(t0.elapsed() < Duration::from_secs(60), "no top-up record");
        let text = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .unwrap_or_default();
        // Killed once the client has committed part of the top-up.
        if text.contains("\"top-up\"") && count(&r) > 20 {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    child.start_kill().unwrap();
    let st = child.wait().await.unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    assert!(!text.contains("top-up-done"), "killed during the top-up");
    let at_kill = count(&r);
    assert!(
        at_kill > 20 && at_kill < total,
        "killed in the middle of the top-up ({at_kill} of {total})"
    );
    assert_eq!(r.sql("SELECT @@global.read_only"), "1", "not promoted yet");
    let o = failover(&rb, &["--resume"]).await;
    common::assert_code(&o, 0);
    assert_eq!(count(&r), total, "{}", out(&o));
    assert_eq!(
        r.sql("SELECT COUNT(DISTINCT n) FROM shop.orders"),
        total.to_string(),
        "nothing applied twice"
    );
    assert_eq!(r.gtid_binlog_pos(), head);
    let recs = journal(dir.path(), "crash");
    let d = &done(&recs, "promote")["details"];
    assert_eq!(
        d["archive-top-up"]["transactions"],
        seq(&head) - received,
        "{d}"
    );
    assert!(
        d["archive-top-up"]["this-attempt"].as_u64().unwrap() < seq(&head) - received,
        "the resume applied only the rest: {d}"
    );
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
    eprintln!(
        "top-up crash: {at_kill} of {total} rows at the kill, this attempt applied {}",
        d["archive-top-up"]["this-attempt"]
    );
}

/// An archive whose newest timeline is another server's (not the replica's
/// source) is refused by name, before anything is applied or reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_of_another_timeline_is_refused_by_name() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.wait_caught_up(&p);
    let q = MariaDb::primary();
    app_schema(&q);
    let dir = tempfile::tempdir().unwrap();
    let policy = archive_policy(dir.path(), &q, "otherjob");
    let arch = Archiver::start(&policy, "otherjob");
    insert_rows(&q, 0, 5);
    wait_archived(dir.path(), "otherjob", seq(&q.gtid_binlog_pos()), &arch).await;
    drop(arch);
    r.sql("STOP SLAVE IO_THREAD");
    insert_rows(&p, 0, 3);
    p.kill9();
    let rb = runbook(
        dir.path(),
        "foreign",
        &format!(
            "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\nreplica = {{ url = \"{}\" }}\narchive = {{ policy = \"{}\", job = \"otherjob\" }}\n",
            r.url(),
            policy.display()
        ),
    );
    let o = failover(&rb, &["--dry-run"]).await;
    common::assert_code(&o, 0);
    assert!(
        common::stdout(&o).contains("not the replica's source"),
        "{}",
        out(&o)
    );
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    let err = common::stderr(&o);
    assert!(
        err.contains(&format!("timeline 0001-s{}", q.server_id()))
            && err.contains(&format!("replicates from server {}", p.server_id()))
            && err.contains("not the replica's source"),
        "{err}"
    );
    assert_eq!(r.sql("SELECT @@global.read_only"), "1", "not promoted");
    assert_ne!(r.sql("SHOW SLAVE STATUS"), "", "not reset");
    assert_eq!(count(&r), 0, "nothing of the other server applied");
}

/// The benchmark behind `bench/failover.sh`'s top-up lines (not a timed
/// assertion): `promote-mysql` with `archive`, journaled step time, for
/// replicas that lack nothing the archive has (every wait satisfied: the
/// top-up's own overhead) and for replicas that lack 1,000 single-row
/// transactions that the top-up applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with bench/failover.sh"]
async fn bench_promote_with_archive_top_up() {
    let n = 3;
    let mut p = MariaDb::primary();
    app_schema(&p);
    let caught: Vec<MariaDb> = (0..n).map(|_| MariaDb::replica_of(&p)).collect();
    let behind: Vec<MariaDb> = (0..n).map(|_| MariaDb::replica_of(&p)).collect();
    let dir = tempfile::tempdir().unwrap();
    let policy = archive_policy(dir.path(), &p, "benchjob");
    let arch = Archiver::start(&policy, "benchjob");
    insert_rows(&p, 0, 10);
    for r in caught.iter().chain(&behind) {
        r.wait_caught_up(&p);
    }
    for r in &behind {
        r.sql("STOP SLAVE IO_THREAD");
    }
    insert_rows(&p, 100, 1000);
    for r in &caught {
        r.wait_caught_up(&p);
    }
    wait_archived(dir.path(), "benchjob", seq(&p.gtid_binlog_pos()), &arch).await;
    p.kill9();
    archive_settled(dir.path(), "benchjob").await;
    drop(arch);
    for (what, set) in [
        ("nothing to apply", &caught),
        ("1000 transactions to apply", &behind),
    ] {
        let mut steps = Vec::new();
        let mut applies = Vec::new();
        for (i, r) in set.iter().enumerate() {
            let name = format!("b{}{i}", what.len());
            let rb = runbook(
                dir.path(),
                &name,
                &format!(
                    "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\nreplica = {{ url = \"{}\" }}\narchive = {{ policy = \"{}\", job = \"benchjob\" }}\n",
                    r.url(),
                    policy.display()
                ),
            );
            let o = failover(&rb, &[]).await;
            common::assert_code(&o, 0);
            let recs = journal(dir.path(), &name);
            let d = done(&recs, "promote");
            steps.push(d["elapsed_ms"].as_u64().unwrap());
            applies.push(
                d["details"]["archive-top-up"]["apply-ms"]
                    .as_u64()
                    .unwrap_or(0),
            );
            assert_eq!(count(r), 1010);
        }
        steps.sort();
        applies.sort();
        println!(
            "promote-mysql with archive, {what}: step median {} ms (min {}, max {}), top-up apply median {} ms, over {n} runs",
            steps[n / 2],
            steps[0],
            steps[n - 1],
            applies[n / 2]
        );
    }
}

/// An archive whose newest stretch starts after the replica's position (the
/// binlog between was purged before it was archived) cannot top it up
/// without a hole: nothing is applied, the guard counts what stays lacking
/// against the archive's head, and `--accept-data-loss` promotes with the
/// RPO (transactions and seconds) from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_with_a_hole_applies_nothing_and_the_guard_counts_the_loss() {
    let mut p = MariaDb::primary();
    app_schema(&p);
    let r = MariaDb::replica_of(&p);
    r.wait_caught_up(&p);
    let dir = tempfile::tempdir().unwrap();
    let policy = archive_policy(dir.path(), &p, "holejob");
    let arch = Archiver::start(&policy, "holejob");
    insert_rows(&p, 0, 5);
    r.wait_caught_up(&p);
    wait_archived(dir.path(), "holejob", seq(&p.gtid_binlog_pos()), &arch).await;
    arch.stop();
    r.sql("STOP SLAVE IO_THREAD");
    let received = seq(&p.gtid_binlog_pos());
    // While no archiver runs: writes, rotation, purge.
    insert_rows(&p, 100, 5);
    p.sql("FLUSH BINARY LOGS");
    insert_rows(&p, 200, 5);
    p.sql("FLUSH BINARY LOGS");
    let newest = p
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    p.sql(&format!("PURGE BINARY LOGS TO '{newest}'"));
    let o = common::cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "binlog",
        "archive",
        "holejob",
    ]);
    common::assert_code(&o, 1);
    let arch = Archiver::start(&policy, "holejob");
    insert_rows(&p, 300, 3);
    let head = wait_archived(dir.path(), "holejob", seq(&p.gtid_binlog_pos()), &arch).await;
    p.kill9();
    drop(arch);
    let lost = seq(&head) - received;
    let rb = runbook(
        dir.path(),
        "hole",
        &format!(
            "[[step]]\nname = \"promote\"\nkind = \"promote-mysql\"\nreplica = {{ url = \"{}\" }}\nmax-data-loss = \"0 transactions\"\narchive = {{ policy = \"{}\", job = \"holejob\" }}\n",
            r.url(),
            policy.display()
        ),
    );
    let o = failover(&rb, &["--dry-run"]).await;
    common::assert_code(&o, 0);
    assert!(common::stdout(&o).contains("without a hole"), "{}", out(&o));
    let o = failover(&rb, &[]).await;
    common::assert_code(&o, 11);
    assert!(
        common::stderr(&o).contains(&format!("lacks {lost} transaction(s)")),
        "{}",
        out(&o)
    );
    assert_eq!(count(&r), 5, "nothing applied");
    let o = failover(&rb, &["--resume", "--accept-data-loss"]).await;
    common::assert_code(&o, 0);
    let recs = journal(dir.path(), "hole");
    let d = &done(&recs, "promote")["details"];
    assert!(
        d["archive-top-up"]["not-applied"]
            .as_str()
            .unwrap()
            .contains("without a hole"),
        "{d}"
    );
    let st = status(&rb).await;
    assert_eq!(st["rpo"]["transactions"], lost, "{st}");
    assert!(
        st["rpo"]["seconds"].is_u64(),
        "both ends are archived: {st}"
    );
    assert!(
        st["rpo"]["evidence"]["old-newest-commit"].is_string()
            && st["rpo"]["evidence"]["promoted-newest-commit"].is_string(),
        "{st}"
    );
    assert_eq!(count(&r), 5);
    assert_eq!(r.sql("SELECT @@global.read_only"), "0");
}
