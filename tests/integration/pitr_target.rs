//! Point-in-time restores and the target's binary log: one rule for the
//! base and the replay (`--target-binlog on|off`), seen from a replica of
//! the target.
use crate::common::*;
use crate::mariadb_server::MariaDb;
use crate::pitr::{checksum, small_archive, small_archive_with};

/// `CHECKSUM TABLE` of the restored table: equal on a primary and its
/// replica only when both hold the same rows.
fn table_checksum(s: &MariaDb, table: &str) -> String {
    s.sql(&format!("CHECKSUM TABLE {table}"))
}

fn restore(
    policy: &std::path::Path,
    until: &str,
    to: &MariaDb,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        "--job",
        "ledger",
        "--until",
        until,
        "--to",
    ];
    let url = to.url();
    args.push(&url);
    args.push("--force");
    args.extend_from_slice(extra);
    cexdr(&args)
}

/// With the binlog on (the default) the replica of the target ends equal
/// to it after a point-in-time restore; with it off the plan says the
/// replicas will not get it, and they do not get the base nor the replay.
#[test]
fn point_in_time_restore_into_a_primary_reaches_its_replica_with_the_binlog_on() {
    let db = "pitr_rep";
    let (_dir, policy, _src, cuts) = small_archive(db, "ledger");
    let target = MariaDb::primary();
    let replica = MariaDb::replica_of(&target);
    let (until, want) = (cuts[2].0.to_rfc3339(), &cuts[2].1);

    let o = restore(&policy, &until, &target, &[]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("target binlog on: the base and the replay are written"),
        "{}",
        stdout(&o)
    );
    assert_eq!(&checksum(&target, db), want);
    replica.wait_caught_up(&target);
    let table = format!("{db}.ev");
    assert_eq!(checksum(&replica, db), checksum(&target, db));
    assert_eq!(
        table_checksum(&replica, &table),
        table_checksum(&target, &table)
    );

    // Off: the plan says so (text and JSON) ...
    let earlier = cuts[1].0.to_rfc3339();
    let o = restore(
        &policy,
        &earlier,
        &target,
        &["--target-binlog", "off", "--dry-run"],
    );
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("replicas of the target will NOT get this restore"),
        "{}",
        stdout(&o)
    );
    let plan: serde_json::Value = {
        let o = cexdr(&[
            "--policy",
            policy.to_str().unwrap(),
            "--json",
            "restore",
            "--job",
            "ledger",
            "--until",
            &earlier,
            "--to",
            &target.url(),
            "--target-binlog",
            "off",
            "--dry-run",
        ]);
        assert_code(&o, 0);
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(plan["target_binlog"], "off", "{plan}");
    // ... and the restore reaches the target only: the replica keeps the
    // rows of the earlier restore, base and replay alike.
    let o = restore(&policy, &earlier, &target, &["--target-binlog", "off"]);
    assert_code(&o, 0);
    assert_eq!(&checksum(&target, db), &cuts[1].1);
    target.sql(&format!("CREATE DATABASE {db}_marker"));
    replica.wait_caught_up(&target);
    assert_eq!(&checksum(&replica, db), want, "the replica got none of it");
    assert_ne!(
        table_checksum(&replica, &table),
        table_checksum(&target, &table)
    );
}

/// A job that backs up one database of a shared server: writes to another
/// database between the base and the cut neither stop the restore nor
/// reach the target (counted as skipped); `--database-map` renames the
/// base and the replay; a mapping onto an existing database without
/// `--force` and one of a database the base lacks are refused before
/// writing; a transaction mixing both databases is refused by name, also
/// before writing.
#[test]
fn replay_takes_only_the_jobs_databases_and_renames_them() {
    let db = "pitr_sel";
    let other = "pitr_other";
    let (_dir, policy, src, cuts) = small_archive_with(
        db,
        "ledger",
        |p, k| {
            // Another application on the same server, in every archived stretch.
            p.sql(&format!("INSERT INTO {other}.ev (id, v) VALUES ({k}, 'x')"));
        },
        |p| {
            p.sql(&format!("CREATE DATABASE {other}; CREATE TABLE {other}.ev (id INT PRIMARY KEY, v VARCHAR(40))"));
        },
    );
    let target = MariaDb::start(crate::mariadb_server::Options {
        binlog: false,
        ..Default::default()
    });
    let until = cuts[3].0.to_rfc3339();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "--policy",
            policy.to_str().unwrap(),
            "restore",
            "--job",
            "ledger",
            "--until",
            &until,
            "--to",
            &target.url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let v = args(extra);
        cexdr(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run(&[]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("replay limited to database(s) pitr_sel"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("skipped 4 transaction(s) of other databases"),
        "{}",
        stdout(&o)
    );
    assert_eq!(checksum(&target, db), cuts[3].1);
    assert_eq!(
        target.sql(&format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{other}'"
        )),
        "0"
    );
    let v = args(&["--dry-run"]);
    let mut j: Vec<&str> = vec!["--json"];
    j.extend(v.iter().map(String::as_str));
    let o = cexdr(&j);
    assert_code(&o, 0);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["only_databases"], serde_json::json!([db]), "{plan}");

    // Renamed: next to the first copy.
    let o = run(&["--database-map", "pitr_sel=pitr_sel_restored"]);
    assert_code(&o, 0);
    assert_eq!(checksum(&target, "pitr_sel_restored"), cuts[3].1);
    // Onto an existing database without --force; of a database the base lacks.
    let before = checksum(&target, "pitr_sel_restored");
    let o = run(&["--database-map", "pitr_sel=pitr_sel_restored"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("already exist"), "{}", stderr(&o));
    let o = run(&["--database-map", "nope=x"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("has no database \"nope\""),
        "{}",
        stderr(&o)
    );
    assert_eq!(checksum(&target, "pitr_sel_restored"), before);

    // A transaction that mixes the two databases is refused by name.
    let (_dir2, policy2, _src2, cuts2) = small_archive_with(
        db,
        "ledger",
        |p, k| {
            if k == 2 {
                p.sql(&format!("BEGIN; INSERT INTO {db}.ev (id, v) VALUES (7777, 'm'); INSERT INTO {other}.ev (id, v) VALUES (7777, 'm'); COMMIT"));
            }
        },
        |p| {
            p.sql(&format!("CREATE DATABASE {other}; CREATE TABLE {other}.ev (id INT PRIMARY KEY, v VARCHAR(40))"));
        },
    );
    let o = cexdr(&[
        "--policy",
        policy2.to_str().unwrap(),
        "restore",
        "--job",
        "ledger",
        "--until",
        &cuts2[3].0.to_rfc3339(),
        "--to",
        &target.url(),
        "--force",
    ]);
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("changes database(s) pitr_sel of this restore and pitr_other outside it"),
        "{e}"
    );
    // ... before anything was written: the target keeps the first restore.
    assert_eq!(checksum(&target, db), cuts[3].1);
    drop(src);
}
