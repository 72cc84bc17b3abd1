//! Point-in-time recovery against private MariaDB servers (binlog on).
use crate::mariadb_server::MariaDb;

/// The fixture itself: a primary and a GTID replica, a crash and restart of
/// each on the same datadir, replication resuming without loss.
#[test]
fn fixture_primary_replica_kill9_restart() {
    let mut p = MariaDb::primary();
    assert_eq!(p.sql("SELECT @@log_bin"), "1");
    assert_eq!(p.sql("SELECT @@binlog_format"), "ROW");
    let mut r = MariaDb::replica_of(&p);
    assert_ne!(p.server_id(), r.server_id());
    p.sql("CREATE DATABASE fx; CREATE TABLE fx.t (id INT PRIMARY KEY); INSERT INTO fx.t VALUES (1),(2)");
    r.wait_caught_up(&p);
    assert_eq!(r.sql("SELECT COUNT(*) FROM fx.t"), "2");
    let port = p.port();
    p.kill9();
    assert!(p.try_sql("SELECT 1").is_err());
    p.restart();
    assert_eq!(p.port(), port);
    p.sql("INSERT INTO fx.t VALUES (3)");
    r.kill9();
    r.restart();
    r.sql("START SLAVE");
    r.wait_caught_up(&p);
    assert_eq!(r.sql("SELECT COUNT(*) FROM fx.t"), "3");
    assert_eq!(r.sql("SELECT @@read_only"), "1");
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::mariadb_server::Options;

/// A `cexdr binlog archive` child; SIGKILLed on drop.
pub(crate) struct ArchiverProc {
    child: Option<Child>,
    log: PathBuf,
}

impl ArchiverProc {
    pub(crate) fn start(policy: &Path, job: &str, log: PathBuf) -> ArchiverProc {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cexdr"))
            .args(["--policy", policy.to_str().unwrap(), "-v", "--metrics-file"])
            .arg(log.with_extension("prom"))
            .args(["binlog", "archive", job, "--lease-ttl", "3s"])
            .env_remove("CEXDR_POLICY")
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("start the archiver");
        ArchiverProc {
            child: Some(child),
            log,
        }
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGTERM: the open segment is closed at a boundary, the lease released.
    pub(crate) fn stop(&mut self) -> i32 {
        let mut c = self.child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap().code().unwrap_or(-1)
    }
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ArchiverProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) fn policy_for(dir: &Path, server: &MariaDb, db: &str, job: &str) -> PathBuf {
    write_policy(
        dir,
        &format!(
            "{}\n[[job]]\nname = \"{job}\"\nkind = \"mysql\"\nurl = \"{}\"\ndatabases = [\"{db}\"]\nbinlog = {{ flush-interval = \"1s\", server-id = {} }}\n",
            local_store(&dir.join("store")),
            server.url(),
            900_000 + server.port() as u32
        ),
    )
}

/// Order-independent checksum of the table: what the writer records.
pub(crate) fn checksum(s: &MariaDb, db: &str) -> String {
    s.sql(&format!(
        "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT(id, ':', v))), 0) FROM {db}.ev"
    ))
}

/// `n` single-row autocommit transactions in one client call.
pub(crate) fn write_rows(s: &MariaDb, db: &str, from: usize, n: usize) {
    let mut q = String::new();
    for i in from..from + n {
        q.push_str(&format!(
            "INSERT INTO {db}.ev (id, v) VALUES ({i}, 'row-{i}');"
        ));
    }
    s.sql(&q);
}

/// Waits out the current second so that nothing commits in the next one;
/// returns that quiet second (the writer's cut point) after it has passed.
pub(crate) fn quiet_second() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    let next = chrono::DateTimeExt::ceil(now);
    std::thread::sleep((next - now).to_std().unwrap() + Duration::from_millis(1100));
    next
}

pub(crate) mod chrono {
    pub use ::chrono::*;
    pub trait DateTimeExt {
        fn ceil(self) -> Self;
    }
    impl DateTimeExt for DateTime<Utc> {
        /// The next whole second strictly after `self`.
        fn ceil(self) -> Self {
            DateTime::from_timestamp(self.timestamp() + 1, 0).unwrap()
        }
    }
}

pub(crate) fn pitr_json(policy: &Path, job: &str) -> serde_json::Value {
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "catalog",
        "pitr",
        "--job",
        job,
        "--json",
    ]);
    assert_code(&o, 0);
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0].clone()
}

/// Waits until the archive holds GTID `want` of domain 0.
pub(crate) fn wait_archived(policy: &Path, job: &str, want: &str, a: &ArchiverProc) {
    let t0 = Instant::now();
    loop {
        let r = pitr_json(policy, job);
        let done = r["windows"]
            .as_array()
            .and_then(|w| w.last())
            .map(|w| w["to_gtid"].as_str().unwrap_or("").to_string());
        if done.as_deref() == Some(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "archive did not reach {want}: {r}\narchiver log:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub(crate) fn restore_until(
    policy: &Path,
    job: &str,
    until: &str,
    to: &MariaDb,
) -> std::process::Output {
    cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        "--job",
        job,
        "--until",
        until,
        "--to",
        &to.url(),
        "--force",
    ])
}

/// A writer runs while the archiver streams; the archiver is killed -9 and
/// the server is killed -9 mid-stream; restores to each cut point hold
/// exactly the rows committed by then (checksums the writer recorded).
#[test]
fn restore_to_points_in_time_across_archiver_and_server_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = MariaDb::start(Options {
        extra: vec!["--max-binlog-size=65536".into()],
        ..Options::default()
    });
    let db = "pitr_a";
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    write_rows(&p, db, 0, 20);
    let policy = policy_for(dir.path(), &p, db, "ledger");
    let mut arch = ArchiverProc::start(&policy, "ledger", dir.path().join("archiver.log"));
    let o = cexdr(&["--policy", policy.to_str().unwrap(), "backup", "ledger"]);
    assert_code(&o, 0);
    let mut cuts = Vec::new();
    // Phase 1: plain writes.
    write_rows(&p, db, 100, 150);
    cuts.push((quiet_second(), checksum(&p, db)));
    // Phase 2: the archiver is killed -9 in the middle of the writes.
    std::thread::scope(|s| {
        let h = s.spawn(|| write_rows(&p, db, 1000, 300));
        std::thread::sleep(Duration::from_millis(300));
        arch.kill9();
        h.join().unwrap();
    });
    std::thread::sleep(Duration::from_millis(3200)); // its lease expires
    let mut arch = ArchiverProc::start(&policy, "ledger", dir.path().join("archiver.log"));
    cuts.push((quiet_second(), checksum(&p, db)));
    // Phase 3: the server is killed -9 and restarted mid-stream.
    write_rows(&p, db, 2000, 100);
    p.kill9();
    std::thread::sleep(Duration::from_millis(500));
    p.restart();
    write_rows(&p, db, 3000, 100);
    cuts.push((quiet_second(), checksum(&p, db)));
    write_rows(&p, db, 4000, 10);
    let end = p.gtid_binlog_pos();
    wait_archived(&policy, "ledger", &end, &arch);
    // The textfile is rewritten every 5 s and the archiver counts as caught
    // up at the next heartbeat (1 s): wait for a rewrite after both.
    let wants = [
        "cexdr_binlog_segments_total{cexdr_job=\"ledger\"} ",
        "cexdr_binlog_lag_seconds{cexdr_job=\"ledger\"} 0\n",
        "cexdr_binlog_connected{cexdr_job=\"ledger\"} 1",
        "cexdr_binlog_gap_records{cexdr_job=\"ledger\"} 0",
    ];
    let t0 = Instant::now();
    let mut prom = String::new();
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        prom = std::fs::read_to_string(dir.path().join("archiver.prom")).unwrap_or_default();
        if t0.elapsed() > Duration::from_millis(5500) && wants.iter().all(|w| prom.contains(w)) {
            break;
        }
    }
    for want in wants {
        assert!(prom.contains(want), "{want:?} in\n{prom}");
    }
    assert_eq!(arch.stop(), 0, "{}", arch.log());

    let r = pitr_json(&policy, "ledger");
    assert_eq!(
        r["windows"].as_array().unwrap().len(),
        1,
        "one continuous window: {r}"
    );
    assert!(r["gaps"].as_array().unwrap().is_empty(), "no gap: {r}");
    assert!(
        arch.log().contains("mode=\"position\""),
        "resumed by position: {}",
        arch.log()
    );
    assert!(
        arch.log().contains("reconnecting"),
        "the server crash was noticed: {}",
        arch.log()
    );

    let target = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    for (t, sum) in &cuts {
        for until in [
            t.to_rfc3339(),
            (*t + ::chrono::Duration::milliseconds(500))
                .to_rfc3339_opts(::chrono::SecondsFormat::Millis, true),
        ] {
            let o = restore_until(&policy, "ledger", &until, &target);
            assert_code(&o, 0);
            assert_eq!(
                &checksum(&target, db),
                sum,
                "--until {until}\n{}",
                stdout(&o)
            );
        }
    }
    // The whole archive, by GTID.
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        "--job",
        "ledger",
        "--until-gtid",
        &end,
        "--to",
        &target.url(),
        "--force",
    ]);
    assert_code(&o, 0);
    assert_eq!(checksum(&target, db), checksum(&p, db));
}

/// Archives a few segments, takes a base, and returns (dir, policy, server).
pub(crate) fn small_archive(
    db: &str,
    job: &str,
) -> (
    tempfile::TempDir,
    PathBuf,
    MariaDb,
    Vec<(chrono::DateTime<chrono::Utc>, String)>,
) {
    small_archive_with(db, job, |_, _| {}, |_| {})
}

/// `small_archive`, with `setup` run before the base backup and `batch`
/// after each of the four batches of writes (before its cut).
pub(crate) fn small_archive_with(
    db: &str,
    job: &str,
    batch: impl Fn(&MariaDb, usize),
    setup: impl Fn(&MariaDb),
) -> (
    tempfile::TempDir,
    PathBuf,
    MariaDb,
    Vec<(chrono::DateTime<chrono::Utc>, String)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = MariaDb::primary();
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    setup(&p);
    let policy = policy_for(dir.path(), &p, db, job);
    let o = cexdr(&["--policy", policy.to_str().unwrap(), "backup", job]);
    assert_code(&o, 0);
    let mut arch = ArchiverProc::start(&policy, job, dir.path().join("archiver.log"));
    let mut cuts = Vec::new();
    for k in 0..4 {
        write_rows(&p, db, k * 100, 20);
        batch(&p, k);
        // A segment closes every second: a quiet second ends each batch's segment.
        cuts.push((quiet_second(), checksum(&p, db)));
    }
    // The archive must reach past the last cut to prove nothing else happened.
    write_rows(&p, db, 9000, 1);
    wait_archived(&policy, job, &p.gtid_binlog_pos(), &arch);
    assert_eq!(arch.stop(), 0, "{}", arch.log());
    (dir, policy, p, cuts)
}

pub(crate) fn segment_files(dir: &Path, job: &str) -> Vec<PathBuf> {
    let root = dir.join("store").join("binlog").join(job);
    let mut out: Vec<PathBuf> = walk(&root)
        .into_iter()
        .map(|p| root.join(p))
        .filter(|p| p.to_string_lossy().contains(".binlog"))
        .collect();
    out.sort();
    out
}

/// A deleted segment is a named gap; a restore across it is refused
/// before the target is touched; targets before it still work.
#[test]
fn deleted_segment_is_a_gap_and_restores_across_it_are_refused() {
    let (dir, policy, _p, cuts) = small_archive("pitr_gap", "gapjob");
    let segs = segment_files(dir.path(), "gapjob");
    assert!(segs.len() >= 4, "{segs:?}");
    let r = pitr_json(&policy, "gapjob");
    assert!(r["gaps"].as_array().unwrap().is_empty(), "{r}");
    // Delete the segment holding the third batch (GTIDs 43..62) and its manifest.
    let seq_of = |g: &str| g.rsplit('-').next().unwrap().parse::<u64>().unwrap();
    let (victim, manifest) = segs
        .iter()
        .find_map(|s| {
            let m = s.with_file_name(format!(
                "{}.json",
                &s.file_name().unwrap().to_string_lossy()[..12]
            ));
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
            let first = v["gtid_first"]["0"].as_str().map(seq_of)?;
            (43..=62).contains(&first).then(|| (s.clone(), m))
        })
        .expect("a segment of the third batch");
    std::fs::remove_file(&victim).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    let r = pitr_json(&policy, "gapjob");
    let gaps = r["gaps"].as_array().unwrap();
    assert!(gaps.iter().any(|g| g["kind"] == "missing-segment"), "{r}");
    let text = stdout(&cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "catalog",
        "pitr",
        "--job",
        "gapjob",
    ]));
    assert!(
        text.contains("GAP missing-segment") && text.contains("is missing from the store"),
        "{text}"
    );

    let v = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "binlog",
        "verify",
        "gapjob",
    ]);
    assert_code(&v, 4);
    assert!(stdout(&v).contains("1 break(s)"), "{}", stdout(&v));
    // `cexdr verify` checks the archive too and names the gap.
    let missing_seq: u64 = manifest.file_name().unwrap().to_string_lossy()[..12]
        .parse()
        .unwrap();
    let v = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "verify",
        "--job",
        "gapjob",
    ]);
    assert_code(&v, 4);
    let out = stdout(&v);
    assert!(
        out.contains("gapjob binlog: FAILED")
            && out.contains("GAP missing-segment")
            && out.contains(&format!("segment {missing_seq} is missing from the store")),
        "{out}"
    );
    let target = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    // Before the gap: fine.
    let o = restore_until(&policy, "gapjob", &cuts[0].0.to_rfc3339(), &target);
    assert_code(&o, 0);
    assert_eq!(checksum(&target, "pitr_gap"), cuts[0].1);
    // Right after the last commit before the gap: what the missing segment
    // held (and when) is unknown, so that is refused as well.
    let o = restore_until(&policy, "gapjob", &cuts[1].0.to_rfc3339(), &target);
    assert_code(&o, 1);
    // Across it: refused, and the target is left as it was.
    target.sql("DROP DATABASE pitr_gap");
    let o = restore_until(&policy, "gapjob", &cuts[3].0.to_rfc3339(), &target);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("gap"), "{}", stderr(&o));
    assert_eq!(
        target.sql("SHOW DATABASES LIKE 'pitr_gap'"),
        "",
        "target untouched"
    );
    // After the newest archived commit: refused too.
    let o = restore_until(&policy, "gapjob", "2099-01-01T00:00:00Z", &target);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("after the newest archived commit"),
        "{}",
        stderr(&o)
    );
}

/// A damaged segment is found by its SHA-256 before the target is touched.
#[test]
fn corrupt_segment_is_refused_before_the_target_is_touched() {
    let (dir, policy, _p, cuts) = small_archive("pitr_bad", "badjob");
    let v = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "binlog",
        "verify",
        "badjob",
    ]);
    assert_code(&v, 0);
    // A healthy archive passes `cexdr verify`, beside the base backup.
    let v = cexdr(&["--policy", policy.to_str().unwrap(), "verify", "--all"]);
    assert_code(&v, 0);
    assert!(stdout(&v).contains("badjob binlog: ok"), "{}", stdout(&v));
    assert_eq!(stdout(&v).matches(": ok").count(), 2, "{}", stdout(&v));
    let segs = segment_files(dir.path(), "badjob");
    let victim = &segs[1];
    let mut b = std::fs::read(victim).unwrap();
    let n = b.len();
    b[n / 2] ^= 0xff;
    std::fs::write(victim, b).unwrap();
    // `cexdr verify` fails naming the damaged segment's key.
    let key = victim
        .strip_prefix(dir.path().join("store"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let v = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "verify",
        "--job",
        "badjob",
    ]);
    assert_code(&v, 4);
    assert!(
        stdout(&v).contains("badjob binlog: FAILED") && stdout(&v).contains(&key),
        "{key}: {}",
        stdout(&v)
    );
    let v = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "--json",
        "verify",
        "--job",
        "badjob",
    ]);
    assert_code(&v, 4);
    let recs: serde_json::Value = serde_json::from_str(&stdout(&v)).unwrap();
    let rec = recs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == "binlog-archive")
        .expect("an archive record");
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(rec["error"].as_str().unwrap().contains(&key), "{rec}");
    assert!(
        rec["details"]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == key.as_str() && c["ok"] == false),
        "{rec}"
    );
    let v = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "binlog",
        "verify",
        "badjob",
    ]);
    assert_code(&v, 4);
    assert!(
        stdout(&v).contains("segment 2") && stdout(&v).contains("damaged"),
        "{}",
        stdout(&v)
    );
    let target = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    let o = restore_until(&policy, "badjob", &cuts[3].0.to_rfc3339(), &target);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    assert_eq!(
        target.sql("SHOW DATABASES LIKE 'pitr_bad'"),
        "",
        "target untouched"
    );
    // The dry run prints the plan and changes nothing.
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        "--job",
        "badjob",
        "--until",
        &cuts[2].0.to_rfc3339(),
        "--to",
        &target.url(),
        "--dry-run",
    ]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("base backup") && stdout(&o).contains("segment(s)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(target.sql("SHOW DATABASES LIKE 'pitr_bad'"), "");
}

/// A failover mid-archive: the replica is promoted, the job's URL now
/// points at it, and the archiver follows by GTID on a new timeline; the
/// window stays continuous and a restore across the switch is exact.
#[test]
fn failover_to_a_replica_keeps_the_window_continuous() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = MariaDb::primary();
    let db = "pitr_fo";
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    let r = MariaDb::replica_of(&p);
    let policy = policy_for(dir.path(), &p, db, "fojob");
    assert_code(
        &cexdr(&["--policy", policy.to_str().unwrap(), "backup", "fojob"]),
        0,
    );
    let mut arch = ArchiverProc::start(&policy, "fojob", dir.path().join("archiver.log"));
    write_rows(&p, db, 0, 50);
    let before = (quiet_second(), checksum(&p, db));
    write_rows(&p, db, 100, 50);
    // Planned switchover: the replica has everything, then takes writes.
    r.wait_caught_up(&p);
    wait_archived(&policy, "fojob", &p.gtid_binlog_pos(), &arch);
    assert_eq!(arch.stop(), 0, "{}", arch.log());
    p.kill9();
    r.sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0");
    // The failover moved the job's address (DNS/VIP): here, the policy.
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace(&p.url(), &r.url())).unwrap();
    let mut arch = ArchiverProc::start(&policy, "fojob", dir.path().join("archiver2.log"));
    write_rows(&r, db, 200, 50);
    let after = (quiet_second(), checksum(&r, db));
    write_rows(&r, db, 300, 5);
    wait_archived(&policy, "fojob", &r.gtid_binlog_pos(), &arch);
    assert_eq!(arch.stop(), 0, "{}", arch.log());
    assert!(arch.log().contains("mode=\"gtid\""), "{}", arch.log());

    let rep = pitr_json(&policy, "fojob");
    assert!(rep["gaps"].as_array().unwrap().is_empty(), "{rep}");
    let w = rep["windows"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{rep}");
    assert_eq!(w[0]["timelines"], serde_json::json!([1, 2]), "{rep}");
    // The old primary's segments and the new ones live under different timelines.
    let tl: std::collections::BTreeSet<String> = segment_files(dir.path(), "fojob")
        .iter()
        .map(|s| {
            s.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(tl.len(), 2, "{tl:?}");

    let target = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    for (t, sum) in [&before, &after] {
        let o = restore_until(&policy, "fojob", &t.to_rfc3339(), &target);
        assert_code(&o, 0);
        assert_eq!(&checksum(&target, db), sum, "--until {t}\n{}", stdout(&o));
    }
}

/// The server purged binlog the archive had not read: exit 1 naming the
/// file, a gap record that `catalog pitr` shows, and the next run goes on
/// from the oldest binlog the server still has.
#[test]
fn purged_binlog_is_exit_1_and_a_named_gap() {
    let dir = tempfile::tempdir().unwrap();
    let p = MariaDb::primary();
    let db = "pitr_purge";
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    let policy = policy_for(dir.path(), &p, db, "pjob");
    assert_code(
        &cexdr(&["--policy", policy.to_str().unwrap(), "backup", "pjob"]),
        0,
    );
    let mut arch = ArchiverProc::start(&policy, "pjob", dir.path().join("a1.log"));
    write_rows(&p, db, 0, 10);
    wait_archived(&policy, "pjob", &p.gtid_binlog_pos(), &arch);
    assert_eq!(arch.stop(), 0, "{}", arch.log());
    // While no archiver runs: more writes, rotation, purge.
    write_rows(&p, db, 100, 10);
    p.sql("FLUSH BINARY LOGS");
    write_rows(&p, db, 200, 10);
    p.sql("FLUSH BINARY LOGS");
    let newest = p
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    p.sql(&format!("PURGE BINARY LOGS TO '{newest}'"));
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "binlog",
        "archive",
        "pjob",
    ]);
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("binlog.000001")
            && e.contains("is gone from the server")
            && e.contains("recorded a gap"),
        "{e}"
    );
    let rep = pitr_json(&policy, "pjob");
    assert!(
        rep["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["kind"] == "purged"),
        "{rep}"
    );
    // The next run continues from what the server has, on a new timeline.
    let mut arch = ArchiverProc::start(&policy, "pjob", dir.path().join("a2.log"));
    write_rows(&p, db, 300, 5);
    let t0 = Instant::now();
    loop {
        let rep = pitr_json(&policy, "pjob");
        let segs = rep["segments"].as_u64().unwrap();
        if rep["newest_commit"].is_string()
            && segs >= 2
            && arch.log().contains("mode=\"first-binlog\" timeline=2")
            && rep["gaps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["kind"] == "purged" || g["kind"] == "gtid-hole")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{rep}\n{}",
            arch.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(arch.stop(), 0, "{}", arch.log());
}

/// Prune keeps the segments the oldest kept base needs and removes the
/// older ones; restores after that base still work, before it are refused.
#[test]
fn prune_removes_only_segments_before_the_oldest_kept_base() {
    let dir = tempfile::tempdir().unwrap();
    let p = MariaDb::primary();
    let db = "pitr_prune";
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    let policy = policy_for(dir.path(), &p, db, "prj");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace("binlog = {", "keep = { last = 1 }\nbinlog = {"),
    )
    .unwrap();
    let pol = policy.to_str().unwrap();
    assert_code(&cexdr(&["--policy", pol, "backup", "prj"]), 0);
    let mut arch = ArchiverProc::start(&policy, "prj", dir.path().join("a.log"));
    write_rows(&p, db, 0, 20);
    let early = quiet_second();
    write_rows(&p, db, 100, 20);
    wait_archived(&policy, "prj", &p.gtid_binlog_pos(), &arch);
    std::thread::sleep(Duration::from_millis(1100));
    assert_code(&cexdr(&["--policy", pol, "backup", "prj"]), 0);
    write_rows(&p, db, 200, 20);
    let late = (quiet_second(), checksum(&p, db));
    write_rows(&p, db, 300, 1);
    wait_archived(&policy, "prj", &p.gtid_binlog_pos(), &arch);
    assert_eq!(arch.stop(), 0, "{}", arch.log());
    let before = segment_files(dir.path(), "prj").len();

    let o = cexdr(&["--policy", pol, "prune", "--dry-run"]);
    assert_code(&o, 0);
    assert_eq!(
        segment_files(dir.path(), "prj").len(),
        before,
        "a dry run removes nothing"
    );
    let o = cexdr(&["--policy", pol, "prune"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("binlog archive: removed"),
        "{}",
        stdout(&o)
    );
    let after = segment_files(dir.path(), "prj").len();
    assert!(after < before, "{before} -> {after}\n{}", stdout(&o));
    let rep = pitr_json(&policy, "prj");
    assert_eq!(rep["windows"].as_array().unwrap().len(), 1, "{rep}");
    assert!(rep["gaps"].as_array().unwrap().is_empty(), "{rep}");

    let target = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    let o = restore_until(&policy, "prj", &late.0.to_rfc3339(), &target);
    assert_code(&o, 0);
    assert_eq!(checksum(&target, db), late.1);
    let o = restore_until(&policy, "prj", &early.to_rfc3339(), &target);
    assert_code(&o, 1);
}

/// `policy check` warns, by job, when a PITR job's server has the binlog
/// off or not in ROW format (and says nothing for a good one).
#[test]
fn policy_check_warns_about_binlog_off_or_not_row() {
    let dir = tempfile::tempdir().unwrap();
    let good = MariaDb::primary();
    let off = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    let stmt = MariaDb::start(Options {
        binlog_format: "STATEMENT".into(),
        ..Options::default()
    });
    for (s, want) in [
        (&good, None),
        (&off, Some("binary logging is off")),
        (&stmt, Some("binlog_format is STATEMENT")),
    ] {
        let policy = policy_for(dir.path(), s, "x", "pc");
        let o = cexdr(&["--policy", policy.to_str().unwrap(), "policy", "check"]);
        assert_code(&o, 0);
        match want {
            None => assert!(!stderr(&o).contains("warning"), "{}", stderr(&o)),
            Some(w) => assert!(
                stderr(&o).contains(w) && stderr(&o).contains("job pc"),
                "{}",
                stderr(&o)
            ),
        }
    }
}

/// `verify --restore-test URL --until T`: a point-in-time drill restores the
/// base and replays to T on a scratch server, records itself, and drops its
/// databases; it refuses a server that already has them (the source) and a
/// time the archive does not cover, before writing anything.
#[test]
fn verify_until_drills_a_point_in_time_and_leaves_the_scratch_server_clean() {
    let (dir, policy, p, cuts) = small_archive("pitr_drill", "drilljob");
    let scratch = MariaDb::primary();
    let pol = policy.to_str().unwrap();
    let until = cuts[2].0.to_rfc3339();
    let o = drill_until(pol, &scratch, &until);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("drilljob") && stdout(&o).contains(": ok (point in time"),
        "{}",
        stdout(&o)
    );
    assert!(
        !scratch.sql("SHOW DATABASES").contains("pitr_drill"),
        "the drill's database was not dropped"
    );
    // The record is kept beside the base, with what the replay did.
    let recs = drill_records(dir.path());
    let v = recs.first().expect("a drill record").clone();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(
        v["details"]["transactions"], 60,
        "three batches of 20 before the cut: {v}"
    );
    // The source server has the database: refused, nothing written.
    let before = checksum(&p, "pitr_drill");
    let o = drill_until(pol, &p, &until);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("already has database `pitr_drill`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(checksum(&p, "pitr_drill"), before);
    // After the newest archived commit: refused before the scratch is touched.
    let late = (::chrono::Utc::now() + ::chrono::Duration::hours(1)).to_rfc3339();
    let o = drill_until(pol, &scratch, &late);
    assert_code(&o, 1);
    assert!(!scratch.sql("SHOW DATABASES").contains("pitr_drill"));
    // The job's drill can be a point-in-time drill: base + the whole archive.
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str(&format!(
        "drill = {{ schedule = \"0 5 * * 0\", target = \"{}\", point-in-time = \"newest\" }}\n",
        scratch.url()
    ));
    std::fs::write(&policy, text).unwrap();
    let o = cexdr(&["--policy", pol, "drill", "drilljob"]);
    assert_code(&o, 0);
    assert!(!scratch.sql("SHOW DATABASES").contains("pitr_drill"));
    let drills = drill_records(dir.path())
        .iter()
        .any(|v| v["details"]["transactions"] == 81);
    assert!(
        drills,
        "no drill record with all 81 archived transactions (4 batches of 20 and 1)"
    );
    // A drill value it does not know is refused by name.
    let text = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("point-in-time = \"newest\"", "point-in-time = \"oldest\"");
    std::fs::write(&policy, text).unwrap();
    let o = cexdr(&["--policy", pol, "drill", "drilljob"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("point-in-time = \"oldest\""),
        "{}",
        stderr(&o)
    );
}

/// `cexdr verify --job drilljob --restore-test URL --until T`.
fn drill_until(policy: &str, to: &MariaDb, until: &str) -> std::process::Output {
    cexdr(&[
        "--policy",
        policy,
        "verify",
        "--job",
        "drilljob",
        "--restore-test",
        &to.url(),
        "--until",
        until,
    ])
}

/// The point-in-time drill records kept in the store, in key order.
fn drill_records(dir: &Path) -> Vec<serde_json::Value> {
    let store = dir.join("store");
    walk(&store)
        .into_iter()
        .filter(|k| k.to_string_lossy().contains("/verify/"))
        .map(|k| std::fs::read_to_string(store.join(k)).unwrap())
        .filter(|t| t.contains("pitr-restore-test"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .collect()
}
