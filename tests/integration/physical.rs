//! Physical backups (`method = "physical"`, mariadb-backup) of a private
//! MariaDB: parts, the manifest's consistent point, verify, a restore into
//! a datadir a server starts on with the source's checksums, and the
//! refusals (a damaged part, a non-empty DIR, a missing tool).
use crate::common::*;
use crate::mariadb_server::{MariaDb, Options};
use std::path::Path;

fn policy(dir: &Path, url: &str, physical: &str) -> std::path::PathBuf {
    write_policy(
        dir,
        &format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{url}\"\nmethod = \"physical\"\nphysical = {{ {physical} }}\nschedule = \"0 3 * * *\"\nkeep = {{ last = 3 }}\n",
            local_store(&dir.join("repo"))
        ),
    )
}

fn checksums(s: &MariaDb) -> String {
    s.sql("CHECKSUM TABLE app.accounts, app.ledger, app.notes EXTENDED")
}

#[test]
fn physical_backup_restores_a_datadir_with_the_sources_checksums() {
    let src = MariaDb::primary();
    src.sql(
        "CREATE DATABASE app; USE app;
         CREATE TABLE app.accounts (id INT PRIMARY KEY, balance DECIMAL(20,8), note VARCHAR(200)) ENGINE=InnoDB;
         CREATE TABLE app.ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, acct INT, amount DECIMAL(20,8), KEY(acct)) ENGINE=InnoDB;
         CREATE TABLE app.notes (id INT PRIMARY KEY, body TEXT) ENGINE=Aria;
         INSERT INTO app.accounts SELECT seq, seq * 1.5, REPEAT('x', seq % 200) FROM seq_1_to_20000;
         INSERT INTO app.ledger (acct, amount) SELECT seq % 977, seq / 7 FROM seq_1_to_50000;
         INSERT INTO app.notes SELECT seq, MD5(seq) FROM seq_1_to_3000;",
    );
    let want = checksums(&src);
    let gtid = src.gtid_binlog_pos();
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &src.url(), "part-size = \"1MiB\"");
    let p = pol.to_str().unwrap();

    let o = cexdr(&["--policy", p, "policy", "check"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("method physical"), "{}", stdout(&o));

    let o = cexdr(&["--policy", p, "backup", "db"]);
    assert_code(&o, 0);
    let list = catalog_json(&pol);
    let m = &list.as_array().unwrap()[0];
    let d = &m["details"];
    assert_eq!(d["method"], "physical");
    assert_eq!(d["backup_type"], "full-backuped");
    assert_eq!(d["binlog"]["gtid_set"], gtid.as_str(), "{d}");
    assert!(d["lsn"]["to"].as_u64().unwrap() > 0, "{d}");
    let parts = m["artifacts"].as_array().unwrap();
    assert!(
        parts.len() > 3,
        "1 MiB parts of a >3 MiB stream: {}",
        parts.len()
    );
    assert!(parts
        .iter()
        .enumerate()
        .all(|(i, a)| a["name"] == format!("backup.xbstream.{:05}", i + 1)));
    let id = m["id"].as_str().unwrap().to_owned();

    let o = cexdr(&["--policy", p, "verify", &id]);
    assert_code(&o, 0);

    // Writes after the backup are not in it.
    src.sql("INSERT INTO app.accounts VALUES (999999, 1, 'later')");

    let out = dir.path().join("datadir");
    let o = cexdr(&[
        "--policy",
        p,
        "restore",
        &id,
        "--to-datadir",
        out.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("mariadbd --datadir="), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("(backup-my.cnf): innodb_"),
        "{}",
        stdout(&o)
    );
    assert!(out.join("xtrabackup_checkpoints").exists());
    let restored = MariaDb::on_datadir(
        &out,
        Options {
            binlog: false,
            ..Options::default()
        },
    );
    assert_eq!(checksums(&restored), want);
    assert_eq!(
        restored.sql("SELECT COUNT(*) FROM app.accounts WHERE id = 999999"),
        "0"
    );
    drop(restored);

    // A non-empty DIR is refused; nothing in it changes.
    let o = cexdr(&[
        "--policy",
        p,
        "restore",
        &id,
        "--to-datadir",
        out.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));

    // One altered byte in a part: verify names the part (exit 4); a
    // restore refuses and leaves DIR as it was (absent) with no partial copy.
    let victim = parts[2]["key"].as_str().unwrap().to_owned();
    let file = dir.path().join("repo").join(&victim);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let o = cexdr(&["--policy", p, "verify", &id]);
    assert_code(&o, 4);
    let all = stdout(&o) + &stderr(&o);
    assert!(all.contains("backup.xbstream.00003"), "{all}");
    let out2 = dir.path().join("datadir2");
    let o = cexdr(&[
        "--policy",
        p,
        "restore",
        &id,
        "--to-datadir",
        out2.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!out2.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("cexdr-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_missing_tool_or_a_subset_is_refused_by_name() {
    let src = MariaDb::primary();
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(
        dir.path(),
        &src.url(),
        "program = \"/nonexistent/mariadb-backup\"",
    );
    let p = pol.to_str().unwrap();
    let o = cexdr(&["--policy", p, "backup", "db"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("/nonexistent/mariadb-backup not found"),
        "{}",
        stderr(&o)
    );
    assert_eq!(catalog_json(&pol), serde_json::json!([]));

    let text = std::fs::read_to_string(&pol).unwrap().replace(
        "method = \"physical\"",
        "method = \"physical\"\ndatabases = [\"app\"]",
    );
    std::fs::write(&pol, text).unwrap();
    let o = cexdr(&["--policy", p, "policy", "check"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("databases") && stderr(&o).contains("physical"),
        "{}",
        stderr(&o)
    );
}

/// `kill -9` of cexdr mid-backup: the tool dies with it (it would hold
/// the server's backup locks) and nothing is listed.
#[test]
fn kill_9_mid_backup_stops_the_tool_and_lists_nothing() {
    let src = MariaDb::primary();
    src.sql(
        "CREATE DATABASE app; USE app;
         CREATE TABLE big (id INT PRIMARY KEY, pad CHAR(255)) ENGINE=InnoDB;
         INSERT INTO big SELECT seq, REPEAT('p', 255) FROM seq_1_to_400000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &src.url(), "part-size = \"1MiB\"");
    let p = pol.to_str().unwrap();
    let mut child = cexdr_command(&["--policy", p, "backup", "db"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let repo = dir.path().join("repo");
    let t0 = std::time::Instant::now();
    // Wait until at least one part is stored, then kill.
    loop {
        let parts = walk_if(&repo)
            .iter()
            .filter(|f| f.to_string_lossy().ends_with("backup.xbstream.00001.zst"))
            .count();
        if parts > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before a part was stored"
        );
        assert!(t0.elapsed().as_secs() < 60, "no part after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let datadir = src.datadir().display().to_string();
    let t1 = std::time::Instant::now();
    while tool_running(&datadir) {
        assert!(
            t1.elapsed().as_secs() < 10,
            "mariadb-backup still runs 10 s after cexdr was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(catalog_json(&pol), serde_json::json!([]));
    // The killed run's lease stays until its TTL: prune then removes the
    // folder (lease.rs); what matters here is that nothing is listed.
}

fn walk_if(dir: &Path) -> Vec<std::path::PathBuf> {
    if dir.exists() {
        walk(dir)
    } else {
        Vec::new()
    }
}

/// A mariadb-backup process reading this datadir.
fn tool_running(datadir: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        cmd.contains("mariadb-backup") && cmd.contains(datadir.trim_end_matches('/'))
    })
}

fn restore_datadir(p: &str, id: &str, out: &Path) -> std::process::Output {
    cexdr(&[
        "--policy",
        p,
        "restore",
        id,
        "--to-datadir",
        out.to_str().unwrap(),
    ])
}

fn by_id<'a>(list: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

/// The ID the last `backup` printed (`db: backup ID done: …`).
fn backup_id(o: &std::process::Output) -> String {
    let out = stdout(o);
    out.split_whitespace()
        .skip_while(|w| *w != "backup")
        .nth(1)
        .unwrap_or_else(|| panic!("no backup ID in {out}"))
        .to_owned()
}

#[test]
fn incrementals_chain_restore_exactly_and_a_broken_chain_is_refused_by_name() {
    let src = MariaDb::primary();
    src.sql(
        "CREATE DATABASE app; USE app;
         CREATE TABLE app.accounts (id INT PRIMARY KEY, balance DECIMAL(20,8), note VARCHAR(200)) ENGINE=InnoDB;
         CREATE TABLE app.ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, acct INT, amount DECIMAL(20,8), KEY(acct)) ENGINE=InnoDB;
         CREATE TABLE app.notes (id INT PRIMARY KEY, body TEXT) ENGINE=Aria;
         INSERT INTO app.accounts SELECT seq, seq * 1.5, REPEAT('x', seq % 200) FROM seq_1_to_40000;
         INSERT INTO app.ledger (acct, amount) SELECT seq % 977, seq / 7 FROM seq_1_to_100000;
         INSERT INTO app.notes SELECT seq, MD5(seq) FROM seq_1_to_3000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let pol = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{}\"\nmethod = \"physical\"\nschedule = \"0 3 * * *\"\nkeep = {{ last = 1 }}\n",
            local_store(&dir.path().join("repo")),
            src.url()
        ),
    );
    let p = pol.to_str().unwrap();

    // No physical backup yet: nothing to continue, said by name.
    let o = cexdr(&["--policy", p, "backup", "db", "--incremental"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("take a full backup first"),
        "{}",
        stderr(&o)
    );
    assert_eq!(catalog_json(&pol), serde_json::json!([]));

    let o = cexdr(&["--policy", p, "backup", "db"]);
    assert_code(&o, 0);
    let full = backup_id(&o);

    // 1 % of the accounts change, a few ledger rows arrive, a note goes.
    src.sql(
        "USE app; UPDATE app.accounts SET balance = balance + 1 WHERE id % 100 = 0;
         INSERT INTO app.ledger (acct, amount) SELECT seq, 1 FROM seq_1_to_500;
         DELETE FROM app.notes WHERE id = 7;",
    );
    let o = cexdr(&["--policy", p, "backup", "db", "--incremental"]);
    assert_code(&o, 0);
    let inc1 = backup_id(&o);
    src.sql("UPDATE app.accounts SET note = 'second' WHERE id BETWEEN 100 AND 300;");
    let want = checksums(&src);
    let gtid = src.gtid_binlog_pos();
    let o = cexdr(&["--policy", p, "backup", "db", "--incremental"]);
    assert_code(&o, 0);
    let inc2 = backup_id(&o);

    let list = catalog_json(&pol);
    let (f, i1, i2) = (
        by_id(&list, &full),
        by_id(&list, &inc1),
        by_id(&list, &inc2),
    );
    assert_eq!(i1["details"]["backup_type"], "incremental");
    assert_eq!(i1["details"]["incremental"]["parent"], full.as_str());
    assert_eq!(
        i1["details"]["incremental"]["from_lsn"],
        f["details"]["lsn"]["to"]
    );
    assert_eq!(
        i2["details"]["incremental"]["chain"],
        serde_json::json!([full, inc1])
    );
    assert_eq!(i2["details"]["binlog"]["gtid_set"], gtid.as_str());
    let (fs, is) = (
        f["stored_bytes"].as_u64().unwrap(),
        i1["stored_bytes"].as_u64().unwrap(),
    );
    // Pages the full copied are left out (how much depends on what the
    // server had flushed; bench/physical.sh measures it at scale).
    assert!(
        is < fs,
        "incremental {is} bytes, full {fs}: {}",
        i1["details"]["datadir_files"]
    );

    let o = cexdr(&["--policy", p, "verify", &inc2]);
    assert_code(&o, 0);

    // Retention keeps what the newest incremental needs.
    let o = cexdr(&["--policy", p, "prune", "--dry-run"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains(&format!("needed by {inc2}")),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("keep 3, remove 0"), "{}", stdout(&o));

    // The second incremental restores the full, then both incrementals.
    let out = dir.path().join("datadir");
    let o = restore_datadir(p, &inc2, &out);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("2 incremental(s) applied"),
        "{}",
        stdout(&o)
    );
    let restored = MariaDb::on_datadir(
        &out,
        Options {
            binlog: false,
            ..Options::default()
        },
    );
    assert_eq!(checksums(&restored), want);
    drop(restored);

    // The middle link gone: verify and restore name it; nothing is written.
    let repo = dir.path().join("repo");
    let folder = walk(&repo)
        .into_iter()
        .find(|p| p.ends_with(&inc1))
        .expect("the incremental's folder");
    std::fs::remove_dir_all(repo.join(folder)).unwrap();
    let o = cexdr(&["--policy", p, "verify", &inc2]);
    assert_code(&o, 4);
    let all = stdout(&o) + &stderr(&o);
    assert!(all.contains(&format!("needs backup {inc1}")), "{all}");
    let out2 = dir.path().join("datadir2");
    let o = restore_datadir(p, &inc2, &out2);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains(&inc1), "{}", stderr(&o));
    assert!(!out2.exists());
    // A new incremental continues inc2, whose chain is broken: refused.
    let o = cexdr(&["--policy", p, "backup", "db", "--incremental"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("chain is broken"), "{}", stderr(&o));
}

fn mysql_position(s: &MariaDb) -> String {
    s.sql("SELECT @@gtid_slave_pos")
}

/// A physical base (full, then an incremental) and the binlog archive:
/// `restore --until-gtid G --to-datadir` gives exactly the rows up to G,
/// from the newest physical base before G, and the copy's gtid_slave_pos
/// is G.
#[test]
fn point_in_time_onto_a_physical_base_gives_exactly_the_rows_up_to_the_cut() {
    use crate::pitr::{checksum, wait_archived, write_rows, ArchiverProc};
    let dir = tempfile::tempdir().unwrap();
    let p = MariaDb::primary();
    p.sql("CREATE DATABASE app; CREATE TABLE app.ev (id INT PRIMARY KEY, v VARCHAR(40))");
    write_rows(&p, "app", 0, 50);
    let pol = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{}\"\nmethod = \"physical\"\nbinlog = {{ flush-interval = \"1s\", server-id = {} }}\n",
            local_store(&dir.path().join("store")),
            p.url(),
            910_000 + p.port() as u32
        ),
    );
    let ps = pol.to_str().unwrap();
    let o = cexdr(&["--policy", ps, "backup", "db"]);
    assert_code(&o, 0);
    let full = backup_id(&o);
    let mut arch = ArchiverProc::start(&pol, "db", dir.path().join("archiver.log"));
    write_rows(&p, "app", 100, 20);
    let (g1, c1) = (p.gtid_binlog_pos(), checksum(&p, "app"));
    write_rows(&p, "app", 200, 20);
    let o = cexdr(&["--policy", ps, "backup", "db", "--incremental"]);
    assert_code(&o, 0);
    let inc = backup_id(&o);
    write_rows(&p, "app", 300, 20);
    let (g2, c2) = (p.gtid_binlog_pos(), checksum(&p, "app"));
    write_rows(&p, "app", 400, 5);
    wait_archived(&pol, "db", &p.gtid_binlog_pos(), &arch);
    assert_eq!(arch.stop(), 0, "{}", arch.log());

    for (g, want, base, name) in [(&g2, &c2, &inc, "after"), (&g1, &c1, &full, "before")] {
        let out = dir.path().join(format!("datadir-{name}"));
        let o = cexdr(&[
            "--policy",
            ps,
            "restore",
            "--job",
            "db",
            "--until-gtid",
            g,
            "--to-datadir",
            out.to_str().unwrap(),
        ]);
        assert_code(&o, 0);
        let text = stdout(&o);
        assert!(
            text.contains(&format!("restored physical backup {base}")),
            "{text}"
        );
        assert!(text.contains(&format!("up to GTID {g}")), "{text}");
        let s = MariaDb::on_datadir(
            &out,
            Options {
                binlog: false,
                ..Options::default()
            },
        );
        assert_eq!(
            &checksum(&s, "app"),
            want,
            "cut {g} ({name} the incremental)"
        );
        assert_eq!(&mysql_position(&s), g);
    }

    // A logical job's refusals hold: a cut before every base, named.
    let out = dir.path().join("datadir-early");
    let o = cexdr(&[
        "--policy",
        ps,
        "restore",
        "--job",
        "db",
        "--until",
        "2001-01-01 00:00:00",
        "--to-datadir",
        out.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!out.exists());
}

/// A drill of a physical job restores the newest backup (an incremental
/// here) into a scratch datadir, starts a scratch mariadbd on it, checks
/// every table and records the level and RTO; keys naming a target server
/// are refused by name.
#[test]
fn a_physical_drill_checks_every_table_on_a_scratch_server_and_records_its_rto() {
    let src = MariaDb::primary();
    src.sql(
        "CREATE DATABASE app; USE app;
         CREATE TABLE app.accounts (id INT PRIMARY KEY, balance DECIMAL(20,8)) ENGINE=InnoDB;
         CREATE TABLE app.`odd-name` (id INT PRIMARY KEY) ENGINE=Aria;
         CREATE VIEW app.rich AS SELECT id FROM app.accounts WHERE balance > 100;
         CREATE SEQUENCE app.ids;
         INSERT INTO app.accounts SELECT seq, seq * 1.5 FROM seq_1_to_5000;
         INSERT INTO app.`odd-name` SELECT seq FROM seq_1_to_10;",
    );
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let job = |drill: &str| {
        format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{}\"\nmethod = \"physical\"\ndrill = {{ schedule = \"@weekly\"{drill} }}\n",
            local_store(&dir.path().join("repo")),
            src.url()
        )
    };
    let bad = write_policy(dir.path(), &job(", target = \"mysql://root@127.0.0.1:1\""));
    let o = cexdr(&["--policy", bad.to_str().unwrap(), "policy", "check"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("target does not apply to drills of method = \"physical\""),
        "{}",
        stderr(&o)
    );
    let pol = write_policy(
        dir.path(),
        &job(&format!(", scratch = \"{}\"", scratch.display())),
    );
    let p = pol.to_str().unwrap();
    assert_code(&cexdr(&["--policy", p, "backup", "db"]), 0);
    src.sql("UPDATE app.accounts SET balance = 0 WHERE id < 50");
    let o = cexdr(&["--policy", p, "backup", "db", "--incremental"]);
    assert_code(&o, 0);
    let inc = backup_id(&o);

    let o = cexdr(&["--policy", p, "drill", "db"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("restore drill ok"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left"
    );
    let list = catalog_json(&pol);
    let b = by_id(&list, &inc);
    let v = &b["verification"];
    assert_eq!(v["level"], "restore-tested", "{b:#}");
    assert!(v["duration_s"].as_f64().unwrap() > 0.0, "{v}");
    let show = stdout(&cexdr(&["--policy", p, "--json", "catalog", "show", &inc]));
    let shown: serde_json::Value = serde_json::from_str(&show).unwrap();
    let rec = shown["verifications"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["method"] == "restore-test"))
        .unwrap_or_else(|| panic!("no restore-test record: {show}"));
    let tables = rec["details"]["tables"].as_array().unwrap();
    let accounts = tables
        .iter()
        .find(|t| t[0] == "app.accounts")
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(accounts[1], 5000);
    let want = src.sql("CHECKSUM TABLE app.accounts");
    assert!(
        want.ends_with(accounts[2].as_str().unwrap()),
        "{want} vs {accounts}"
    );
    assert!(tables.iter().any(|t| t[0] == "app.odd-name"), "{rec}");
    assert!(
        show.contains("CHECK TABLE EXTENDED on") && show.contains("all OK"),
        "{show}"
    );

    // verify --restore-test does the same on demand; with a server URL it
    // is refused by name.
    let o = cexdr(&["--policy", p, "verify", &inc, "--restore-test"]);
    assert_code(&o, 0);
    let o = cexdr(&[
        "--policy",
        p,
        "verify",
        &inc,
        "--restore-test",
        "mysql://root@127.0.0.1:1",
    ]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("without a server URL"),
        "{}",
        stderr(&o)
    );
}

/// The daemon takes incrementals on `incremental = { schedule }` between
/// the fulls of `schedule`; keys that do not fit are refused by name.
#[test]
fn the_daemon_takes_incrementals_on_their_own_schedule() {
    let src = MariaDb::primary();
    src.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO app.t VALUES (1)");
    let dir = tempfile::tempdir().unwrap();
    let head = format!(
        "{}\n[daemon]\nmetrics-listen = \"\"\nshutdown-grace = \"5s\"\ncatch-up = false\n\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{}\"\n",
        local_store(&dir.path().join("repo")),
        src.url()
    );
    for (extra, why) in [
        ("schedule = \"0 3 * * *\"\nincremental = { schedule = \"* * * * *\" }\n", "applies to method = \"physical\""),
        ("method = \"physical\"\nincremental = { schedule = \"* * * * *\" }\n", "give the job a schedule"),
        ("method = \"physical\"\nschedule = \"0 3 * * *\"\nincremental = { schedule = \"61 * * * *\" }\n", "incremental"),
    ] {
        let bad = write_policy(dir.path(), &format!("{head}{extra}"));
        let o = cexdr(&["--policy", bad.to_str().unwrap(), "policy", "check"]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains(why), "{extra}: {}", stderr(&o));
    }
    let pol = write_policy(
        dir.path(),
        &format!("{head}method = \"physical\"\nschedule = \"0 3 1 1 *\"\nincremental = {{ schedule = \"* * * * *\" }}\n"),
    );
    let p = pol.to_str().unwrap();
    let o = cexdr(&["--policy", p, "policy", "check"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("incrementals: on \"* * * * *\""),
        "{}",
        stdout(&o)
    );
    assert_code(&cexdr(&["--policy", p, "backup", "db"]), 0);
    let full = catalog_json(&pol)[0]["id"].as_str().unwrap().to_owned();
    src.sql("INSERT INTO app.t VALUES (2)");

    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_cexdr"))
        .args(["--policy", p, "daemon"])
        .env_remove("CEXDR_POLICY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let inc = loop {
        let list = catalog_json(&pol);
        if let Some(m) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["details"]["backup_type"] == "incremental")
        {
            break m.clone();
        }
        if t0.elapsed() > std::time::Duration::from_secs(90) {
            let _ = daemon.kill();
            panic!("no incremental within 90 s: {list}");
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    assert_eq!(inc["details"]["incremental"]["parent"], full.as_str());
}

/// The pids of mariadb-backup processes reading this datadir.
fn tool_pids(datadir: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (cmd.contains("mariadb-backup") && cmd.contains(datadir.trim_end_matches('/')))
                .then_some(pid)
        })
        .collect()
}

/// A tool of the wrong version, an unreadable datadir, a user without the
/// backup privileges, and the tool killed -9 mid-stream: each exit 1 naming
/// the cause, nothing listed, no part left in the store.
#[test]
fn tool_faults_fail_by_name_and_leave_nothing() {
    let src = MariaDb::primary();
    src.sql(
        "CREATE DATABASE app; USE app;
         CREATE TABLE big (id INT PRIMARY KEY, pad CHAR(255)) ENGINE=InnoDB;
         INSERT INTO big SELECT seq, REPEAT('p', 255) FROM seq_1_to_300000;
         CREATE USER weak@'%'; GRANT SELECT ON app.* TO weak@'%';",
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let nothing_left = |pol: &Path, what: &str| {
        assert_eq!(catalog_json(pol), serde_json::json!([]), "{what}");
        let parts: Vec<_> = walk_if(&repo)
            .into_iter()
            .filter(|f| f.to_string_lossy().contains("backup.xbstream"))
            .collect();
        assert!(parts.is_empty(), "{what}: parts left {parts:?}");
    };

    let fake = dir.path().join("old-mariadb-backup");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'mariadb-backup based on MariaDB server 10.6.21-MariaDB Linux (x86_64)'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cases = [
        (
            src.url(),
            format!("program = \"{}\"", fake.display()),
            "must be the server's major version",
        ),
        (
            src.url(),
            "datadir = \"/nonexistent/datadir\"".to_string(),
            "is not readable here",
        ),
        (
            src.url().replacen("root@", "weak@", 1),
            String::new(),
            "mariadb-backup failed",
        ),
    ];
    for (url, physical, why) in cases {
        let pol = policy(dir.path(), &url, &physical);
        let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
        assert_code(&o, 1);
        assert!(stderr(&o).contains(why), "{physical} {url}: {}", stderr(&o));
        nothing_left(&pol, why);
    }

    // The tool killed -9 once a part is stored: the backup fails naming
    // it, and its parts are removed.
    let pol = policy(dir.path(), &src.url(), "part-size = \"1MiB\"");
    let child = cexdr_command(&["--policy", pol.to_str().unwrap(), "backup", "db"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let datadir = src.datadir().display().to_string();
    let t0 = std::time::Instant::now();
    loop {
        let stored = walk_if(&repo)
            .iter()
            .any(|f| f.to_string_lossy().ends_with("backup.xbstream.00001.zst"));
        let pids = tool_pids(&datadir);
        if stored && !pids.is_empty() {
            for pid in pids {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            break;
        }
        assert!(t0.elapsed().as_secs() < 60, "no part after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mariadb-backup failed (signal: 9"),
        "{}",
        stderr(&o)
    );
    nothing_left(&pol, "tool killed");
}

/// A full disk under DIR during a restore: a clear message naming it; DIR
/// is left as it was and no partial copy stays.
#[test]
fn a_full_disk_during_restore_is_named_and_leaves_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test mounts a small tmpfs: run the suite as root (scripts/test does)");
    }
    let src = MariaDb::primary();
    src.sql(
        "CREATE DATABASE app; USE app;
         CREATE TABLE big (id INT PRIMARY KEY, pad CHAR(255)) ENGINE=InnoDB;
         INSERT INTO big SELECT seq, REPEAT('p', 255) FROM seq_1_to_100000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &src.url(), "");
    let p = pol.to_str().unwrap();
    let o = cexdr(&["--policy", p, "backup", "db"]);
    assert_code(&o, 0);
    let id = backup_id(&o);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let out = small.join("datadir");
    let o = restore_datadir(p, &id, &out);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("No space left on device")
            || err.contains("ENOSPC")
            || err.contains("errno 28"),
        "{err}"
    );
    assert!(err.contains("left as it was"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(&small).unwrap().count(),
        0,
        "partial copy left"
    );
}
