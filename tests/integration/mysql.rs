//! MySQL/MariaDB backups against the real server (CEXDR_TEST_MYSQL_URL):
//! exact round trips through `cexdr restore` and the stock client, the
//! snapshot under a concurrent writer, and the faults of issue #3.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// host and port of the test server, for the mariadb client.
fn client_args() -> Vec<String> {
    let url = mysql_url();
    let rest = url.trim_start_matches("mysql://");
    let (user, hp) = rest.split_once('@').unwrap_or(("root", rest));
    let hp = hp.trim_end_matches('/');
    let (host, port) = hp.split_once(':').unwrap_or((hp, "3306"));
    vec![
        "--protocol=tcp".into(),
        format!("-h{host}"),
        format!("-P{port}"),
        format!("-u{user}"),
        "--default-character-set=utf8mb4".into(),
    ]
}

/// Runs SQL with the stock client; panics with its stderr on failure.
fn sql(text: &str) -> String {
    sql_raw(text.as_bytes())
}

/// The same for a script that is not UTF-8 (latin1 bytes after `SET NAMES latin1`).
fn sql_raw(text: &[u8]) -> String {
    let mut c = Command::new("mariadb")
        .args(client_args())
        .args(["-N", "-B"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mariadb client");
    use std::io::Write;
    c.stdin.take().unwrap().write_all(text).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "sql failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(text)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

fn policy(dir: &Path, extra: &str) -> PathBuf {
    policy_at(dir, &mysql_url(), extra)
}

/// A local store under `dir` and one mysql job `db` reading `url`.
fn policy_at(dir: &Path, url: &str, extra: &str) -> PathBuf {
    write_policy(
        dir,
        &format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{url}\"\n{extra}\n",
            local_store(&dir.join("store"))
        ),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn only_backup(policy: &Path) -> serde_json::Value {
    let list = catalog_json(policy);
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{list:#}");
    arr[0].clone()
}

fn no_backup(policy: &Path) {
    let list = catalog_json(policy);
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");
}

/// One backup of `db` into a local store under a new temporary directory:
/// (the directory, its policy, the backup's manifest).
fn backed_up(db: &str) -> (tempfile::TempDir, PathBuf, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &format!("databases = [\"{db}\"]"));
    assert_code(&cexdr(&["--policy", p(&pol), "backup", "db"]), 0);
    let b = only_backup(&pol);
    (dir, pol, b)
}

/// `cexdr restore ID --to <server> --database-map DB=COPY [EXTRA…]`.
fn restore_as(pol: &Path, id: &str, db: &str, copy: &str, extra: &[&str]) -> std::process::Output {
    restore_to(pol, id, &mysql_url(), &format!("{db}={copy}"), extra, "1")
}

/// `cexdr restore ID --to URL --database-map MAP [EXTRA…]` with
/// `CEXDR_MYSQL_RESTORE_BULK=BULK` ("0": sections dealt round the lanes).
fn restore_to(
    pol: &Path,
    id: &str,
    url: &str,
    map: &str,
    extra: &[&str],
    bulk: &str,
) -> std::process::Output {
    let mut args = vec![
        "--policy",
        p(pol),
        "restore",
        id,
        "--to",
        url,
        "--database-map",
        map,
    ];
    args.extend_from_slice(extra);
    cexdr_env(&args, &[("CEXDR_MYSQL_RESTORE_BULK", bulk)])
}

/// `CHECKSUM TABLE` of every base table of `db`, by table name.
fn checksums(db: &str) -> Vec<(String, String)> {
    let tables = sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
    ));
    let mut out = Vec::new();
    for t in tables.lines() {
        let q = format!("`{db}`.`{}`", t.replace('`', "``"));
        let line = sql(&format!("CHECKSUM TABLE {q}"));
        let sum = line.trim_end().rsplit('\t').next().unwrap().to_owned();
        out.push((t.to_owned(), sum));
    }
    out
}

/// `SHOW CREATE TABLE` of every base table of `db`.
fn creates(db: &str) -> String {
    let tables = sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
    ));
    tables
        .lines()
        .map(|t| {
            sql(&format!(
                "SHOW CREATE TABLE `{db}`.`{}`",
                t.replace('`', "``")
            ))
        })
        .collect()
}

fn objects(db: &str) -> String {
    sql(&format!(
        "SELECT 'view', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{db}'
         UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}'
         UNION ALL SELECT 'trigger', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}'
         UNION ALL SELECT 'event', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}'
         ORDER BY 1, 2"
    ))
}

fn edge_schema(db: &str) -> String {
    format!(
        r#"
DROP DATABASE IF EXISTS `{db}`;
CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE `{db}`;
CREATE TABLE everything (
  id INT AUTO_INCREMENT PRIMARY KEY,
  s VARCHAR(100) NULL,
  t TEXT,
  c CHAR(3),
  bin VARBINARY(64),
  fixed BINARY(4),
  bl BLOB,
  d DECIMAL(65,30),
  f FLOAT,
  f2 FLOAT(7,3),
  dbl DOUBLE,
  b BIT(10),
  j JSON,
  e ENUM('a','b','c d'),
  st SET('x','y','z'),
  g GEOMETRY,
  pt POINT,
  dt DATETIME(6),
  da DATE,
  ts TIMESTAMP NULL DEFAULT NULL,
  tm TIME(3),
  y YEAR,
  u BIGINT UNSIGNED,
  gen_v INT AS (id * 2) VIRTUAL,
  gen_s VARCHAR(120) AS (CONCAT('s:', s)) PERSISTENT,
  hidden INT INVISIBLE DEFAULT 7,
  latin VARCHAR(20) CHARACTER SET latin1
) ENGINE=InnoDB AUTO_INCREMENT=1000 COMMENT='all the types; it''s here';
SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO';
INSERT INTO everything (id, s, t, c, bin, fixed, bl, d, f, f2, dbl, b, j, e, st, g, pt, dt, da, ts, tm, y, u, hidden, latin) VALUES
 (1, NULL, '', 'abc', 0x00FF10, 0x00000000, '', -12345678901234567890.123456789012345678901234567890, 1/3, 1.5, 0.1, b'1010101010', '{{"a": [1, 2.5, "x"], "b": null}}', 'c d', 'x,z', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), POINT(1.5, -2.25), '2024-02-29 23:59:59.999999', '0000-00-00', '1970-01-01 00:00:01', '-838:59:59.000', 1901, 18446744073709551615, 1, 'caf\xe9'),
 (2, '', NULL, '', '', NULL, NULL, 0, -3.4028e38, -0.001, 2.2250738585072014e-308, b'0', '[]', 'a', '', NULL, NULL, '0000-00-00 00:00:00', '2024-01-01', '2038-01-19 03:14:07', '00:00:00', 0, 0, NULL, NULL),
 (3, 'quote '' back \\ nl \n cr \r tab \t nul \0 ctrl-z \Z "dq" ;; -- not a comment /* nor this */ `bt`', REPEAT('long ✓ 入金 🚀 ', 200), 'é✓🚀', 0x5C27220A0D001A, 0x27272727, REPEAT(0x00FF, 3000), 0.000000000000000000000000000001, 1e-38, 9999.999, -1.7976931348623157e308, b'1111111111', '{{"k": "v\\"q", "u": "\u00e9"}}', 'b', 'x,y,z', ST_GeomFromText('LINESTRING(0 0, 1 1, 2 4)'), POINT(0, 0), '1000-01-01 00:00:00', '9999-12-31', NULL, '838:59:59.999', 2155, 1, -1, 'x');
CREATE TABLE `we``ird ; -- name` (`select` INT PRIMARY KEY, `ünï` VARCHAR(10), `a b` INT) ENGINE=InnoDB;
INSERT INTO `we``ird ; -- name` VALUES (1, 'ü', 2), (2, NULL, NULL);
CREATE TABLE `order` (id INT PRIMARY KEY, note VARCHAR(10)) PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN MAXVALUE);
INSERT INTO `order` VALUES (1, 'low'), (500, 'high');
CREATE TABLE nopk (a INT, b VARCHAR(5)) ENGINE=InnoDB;
INSERT INTO nopk VALUES (1, 'x'), (1, 'x'), (NULL, NULL);
CREATE TABLE empty_one (id INT PRIMARY KEY, k INT, KEY k (k)) ENGINE=InnoDB;
CREATE TABLE keyed (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(50) NOT NULL, u INT, note TEXT,
  UNIQUE KEY email (email), KEY by_u (u DESC, id) COMMENT 'k, ey', KEY pfx (note(10)) IGNORED, FULLTEXT KEY ft (note)) ENGINE=InnoDB AUTO_INCREMENT=50;
INSERT INTO keyed (id, email, u, note) VALUES (1, 'a@x', 3, 'one'), (2, 'b@x', NULL, NULL), (7, 'c@x', 3, 'three');
CREATE TABLE auto_second (id INT NOT NULL, n INT AUTO_INCREMENT, PRIMARY KEY (id), KEY n (n), KEY other (id, n)) ENGINE=InnoDB;
INSERT INTO auto_second (id) VALUES (10), (20);
CREATE TABLE myisam_one (id INT PRIMARY KEY, v VARCHAR(5)) ENGINE=MyISAM;
INSERT INTO myisam_one VALUES (1, 'm');
CREATE TABLE recalc_on (id INT PRIMARY KEY, k INT, KEY k (k)) ENGINE=InnoDB STATS_AUTO_RECALC=1;
INSERT INTO recalc_on VALUES (1, 1), (2, 2);
CREATE TABLE recalc_off (id INT PRIMARY KEY, v INT) ENGINE=InnoDB STATS_AUTO_RECALC=0 STATS_PERSISTENT=1;
INSERT INTO recalc_off VALUES (1, 1);
CREATE VIEW v_top AS SELECT * FROM v_mid WHERE id > 0;
"#
    )
    .replace(
        "CREATE VIEW v_top AS SELECT * FROM v_mid WHERE id > 0;",
        // View names sort in the reverse of their dependency order.
        "CREATE VIEW c_base AS SELECT id, s FROM everything;\n\
         CREATE VIEW b_mid AS SELECT id, s FROM c_base;\n\
         CREATE VIEW a_top AS SELECT * FROM b_mid WHERE id > 0;\n\
         CREATE VIEW `v we``ird` AS SELECT `select` FROM `we``ird ; -- name`;\n\
         DELIMITER ;;\n\
         CREATE FUNCTION add_one(x INT) RETURNS INT DETERMINISTIC BEGIN DECLARE y INT; SET y = x + 1; RETURN y; END;;\n\
         CREATE PROCEDURE count_rows(OUT n INT) BEGIN SELECT COUNT(*) INTO n FROM everything; SELECT 'a;b' AS s; END;;\n\
         CREATE TRIGGER nopk_guard BEFORE INSERT ON nopk FOR EACH ROW BEGIN IF NEW.b = 'bad' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no; bad'; END IF; END;;\n\
         CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO BEGIN DELETE FROM nopk WHERE a IS NULL; END;;\n\
         DELIMITER ;\n",
    )
}

/// The stock tools: `gunzip` or `zstd -dc` (by the artifact's suffix)
/// into `mariadb`.
fn stock_client(artifact: &Path) {
    let name = artifact.to_string_lossy();
    let decompress = if name.ends_with(".zst") {
        "zstd -dc"
    } else {
        assert!(name.ends_with(".gz"), "{name}");
        "gunzip"
    };
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{decompress} < '{}' | mariadb {}",
            artifact.display(),
            client_args().join(" ")
        ))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{decompress} | mariadb: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn artifact_path(store: &Path, backup: &serde_json::Value) -> PathBuf {
    store.join(backup["artifacts"][0]["key"].as_str().unwrap())
}

#[test]
fn edge_case_schema_round_trips_through_cexdr_restore_and_the_stock_client() {
    let _scratch = common::scratch_databases();
    let db = unique("cexdr_edge");
    sql(&edge_schema(&db));
    let before = checksums(&db);
    let objs = objects(&db);
    assert!(objs.contains("a_top") && objs.contains("tidy") && objs.contains("nopk_guard"));
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &format!("databases = [\"{db}\"]\nthreads = 3"));
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 0);
    let b = only_backup(&pol);
    // The default for mysql jobs; the stock client below reads it with zstd -dc.
    assert_eq!(b["compression"], "zstd");
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["details"]["tables"][&db]["everything"]["rows"], 3);
    assert_eq!(b["details"]["tables"][&db]["nopk"]["rows"], 3);
    assert_eq!(b["details"]["server"]["flavour"], "MariaDB");
    assert!(b["details"]["binlog"]["gtid_set"].is_string());

    // 1. cexdr restore, renamed.
    let copy = format!("{db}_r");
    let o = restore_as(&pol, &id, &db, &copy, &["--threads", "3"]);
    assert_code(&o, 0);
    // Every row went in through the LOAD DATA fast path.
    assert!(
        stdout(&o)
            .contains(" 19 rows bulk-loaded, secondary keys of 4 tables built after their rows"),
        "{}",
        stdout(&o)
    );
    assert_eq!(checksums(&copy), before, "cexdr restore changed data");
    assert_eq!(objects(&copy), objs);
    // Secondary keys added after the rows and the statistics
    // recalculation put back (DEFAULT, =1, and =0 left alone): the
    // definitions are the same.
    assert_eq!(creates(&copy), creates(&db));
    assert!(creates(&db).contains("STATS_AUTO_RECALC=1"));
    // The statistics paused during the load were computed after it.
    assert_eq!(
        sql(&format!(
            "SELECT table_name, n_rows FROM mysql.innodb_table_stats WHERE database_name = '{copy}' AND table_name IN ('keyed', 'nopk', 'recalc_on') ORDER BY 1"
        )),
        "keyed\t3\nnopk\t3\nrecalc_on\t2\n"
    );
    assert!(creates(&db).contains("KEY `by_u` (`u` DESC,`id`) COMMENT 'k, ey'"));
    assert_eq!(
        sql(&format!(
            "SELECT hidden FROM `{copy}`.everything ORDER BY id"
        )),
        "1\nNULL\n-1\n"
    );
    assert_eq!(sql(&format!("SELECT COUNT(*) FROM `{copy}`.a_top")), "3\n");
    assert_eq!(sql(&format!("SELECT `{copy}`.add_one(41)")), "42\n");
    assert_eq!(
        sql(&format!("SELECT AUTO_INCREMENT, TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA='{copy}' AND TABLE_NAME='everything'")),
        "1000\tall the types; it's here\n"
    );
    assert_eq!(sql(&format!("SELECT COUNT(*) FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA='{copy}' AND TABLE_NAME='order'")), "2\n");

    // 2. Into an existing database without --force: refused, untouched.
    let o = restore_as(&pol, &id, &db, &copy, &[]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("already exist") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    let o = restore_as(&pol, &id, &db, &copy, &["--force"]);
    assert_code(&o, 0);
    assert_eq!(checksums(&copy), before);

    // 3. The stock client, into the original name.
    sql(&format!("DROP DATABASE `{db}`"));
    stock_client(&artifact_path(&dir.path().join("store"), &b));
    assert_eq!(checksums(&db), before, "zstd -dc | mariadb changed data");
    assert_eq!(objects(&db), objs);

    // 4. Restore test and stream verify record their results.
    let o = cexdr(&[
        "--policy",
        p(&pol),
        "verify",
        &id,
        "--restore-test",
        &mysql_url(),
    ]);
    assert_code(&o, 0);
    let o = cexdr(&["--policy", p(&pol), "verify", &id]);
    assert_code(&o, 0);
    let show = cexdr(&["--policy", p(&pol), "--json", "catalog", "show", &id]);
    let text = stdout(&show);
    assert!(
        text.contains("restore-test") && text.contains("row digests"),
        "{text}"
    );
    assert!(
        sql("SHOW DATABASES LIKE 'cexdr\\_rt\\_%'").is_empty(),
        "scratch database left behind"
    );

    sql(&format!("DROP DATABASE `{db}`; DROP DATABASE `{copy}`"));
}

/// Big tables are split into primary-key ranges by the dump. With 3 lanes
/// and tables of several sections each (one with a secondary and a unique
/// key, added back once the last lane is past it), both schedules give
/// every row and definition of the source, and a duplicate that a unique
/// key must refuse is still refused: bulk loading (the default: each table
/// whole on the lane that reaches it first, unique_checks off) and the
/// sections dealt round the lanes (`CEXDR_MYSQL_RESTORE_BULK=0`).
#[test]
fn tables_split_over_several_restore_connections_come_back_exact() {
    let db = unique("cexdr_lanes");
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; USE `{db}`;
         CREATE TABLE big (id BIGINT PRIMARY KEY, acct INT NOT NULL, ref CHAR(12) NOT NULL,
           pad VARCHAR(300) NOT NULL, KEY by_acct (acct, id), UNIQUE KEY by_ref (ref));
         CREATE TABLE other (id INT PRIMARY KEY, v DOUBLE, note TEXT);
         CREATE TABLE tiny (id INT PRIMARY KEY, k INT, KEY k (k));
         INSERT INTO big SELECT seq, seq % 977, CONCAT('r', seq), REPEAT(CHAR(65 + seq % 26), 200 + seq % 90) FROM seq_1_to_40000;
         INSERT INTO other SELECT seq, seq / 7, IF(seq % 5 = 0, NULL, REPEAT('n\\t\\\\', seq % 40)) FROM seq_1_to_40000;
         INSERT INTO tiny VALUES (1, 10), (2, 20);
         ANALYZE TABLE big, other, tiny;"
    ));
    let before = checksums(&db);
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &format!("databases = [\"{db}\"]\nthreads = 2"));
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 0);
    let b = only_backup(&pol);
    let id = b["id"].as_str().unwrap();
    for bulk in ["1", "0"] {
        let copy = format!("{db}_r{bulk}");
        let map = format!("{db}={copy}");
        let o = restore_to(&pol, id, &mysql_url(), &map, &["--threads", "3"], bulk);
        assert_code(&o, 0);
        let out = stdout(&o);
        assert!(
            out.contains(
                " 80002 rows bulk-loaded, secondary keys of 2 tables built after their rows"
            ),
            "{out}"
        );
        // More sections than lanes.
        let sections: u64 = out
            .split(" data sections on 3 connections")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no section count in {out}"));
        assert!(sections >= 5, "{out}");
        assert_eq!(
            checksums(&copy),
            before,
            "cexdr restore (bulk={bulk}) changed data"
        );
        assert_eq!(creates(&copy), creates(&db));
        // Statistics computed after the load (sampled: an estimate).
        let n: u64 = sql(&format!(
            "SELECT n_rows FROM mysql.innodb_table_stats WHERE database_name = '{copy}' AND table_name = 'big'"
        ))
        .trim()
        .parse()
        .unwrap();
        assert!(n > 20_000, "n_rows {n} after the restore (bulk={bulk})");
        let dup = std::process::Command::new("mariadb")
            .args(client_args())
            .arg("-e")
            .arg(format!(
                "INSERT INTO `{copy}`.big VALUES (50001, 1, 'r7', 'x')"
            ))
            .output()
            .unwrap();
        assert!(!dup.status.success(), "the unique key was not rebuilt");
        assert!(
            String::from_utf8_lossy(&dup.stderr).contains("Duplicate entry 'r7'"),
            "{}",
            String::from_utf8_lossy(&dup.stderr)
        );
        sql(&format!("DROP DATABASE `{copy}`"));
    }
    sql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn restore_test_fails_when_a_table_differs() {
    let _scratch = common::scratch_databases();
    // The digest is compared, not only counts: a damaged restore fails.
    let db = unique("cexdr_rt");
    sql(&format!("DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO `{db}`.t VALUES (1,'a'),(2,'b');"));
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &format!("databases = [\"{db}\"]"));
    assert_code(&cexdr(&["--policy", p(&pol), "backup", "db"]), 0);
    let b = only_backup(&pol);
    // Rewrite the recorded digest in the manifest to simulate a mismatch.
    let store = dir.path().join("store");
    let key = b["artifacts"][0]["key"].as_str().unwrap();
    let manifest = store
        .join(Path::new(key).parent().unwrap())
        .join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let digest = b["details"]["tables"][&db]["t"]["digest"].as_str().unwrap();
    std::fs::write(&manifest, text.replace(digest, "0123456789abcdef")).unwrap();
    let o = cexdr(&[
        "--policy",
        p(&pol),
        "verify",
        b["id"].as_str().unwrap(),
        "--restore-test",
        &mysql_url(),
    ]);
    assert_code(&o, 4);
    assert!(stdout(&o).contains("row digest"), "{}", stdout(&o));
    sql(&format!("DROP DATABASE `{db}`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_concurrent_transfers_is_consistent() {
    use mysql_async::prelude::Queryable;
    let db = unique("cexdr_funds");
    const ROWS: i64 = 60_000;
    const START: i64 = 1_000;
    // Two tables, several PK ranges each: different workers read them.
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; USE `{db}`;
         CREATE TABLE a (id BIGINT PRIMARY KEY, bal BIGINT NOT NULL, pad CHAR(200) NOT NULL);
         CREATE TABLE b (id BIGINT PRIMARY KEY, bal BIGINT NOT NULL, pad CHAR(200) NOT NULL);
         INSERT INTO a SELECT seq, {START}, REPEAT('a', 200) FROM seq_1_to_{ROWS};
         INSERT INTO b SELECT seq, {START}, REPEAT('b', 200) FROM seq_1_to_{ROWS};
         ANALYZE TABLE a, b;"
    ));
    let invariant = 2 * ROWS * START;
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let url = format!("{}/{db}", mysql_url());
    let writer = {
        let (stop, moved) = (stop.clone(), moved.clone());
        tokio::spawn(async move {
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            let mut i: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let (x, y, amt) = ((i * 7919) % ROWS + 1, (i * 104_729) % ROWS + 1, i % 50 + 1);
                let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
                c.query_drop(format!(
                    "START TRANSACTION; UPDATE {from} SET bal = bal - {amt} WHERE id = {x}; UPDATE {to} SET bal = bal + {amt} WHERE id = {y}; COMMIT"
                ))
                .await
                .unwrap();
                moved.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &format!("databases = [\"{db}\"]\nthreads = 4"));
    let before = moved.load(Ordering::SeqCst);
    let pol2 = pol.clone();
    let o = tokio::task::spawn_blocking(move || cexdr(&["--policy", p(&pol2), "backup", "db"]))
        .await
        .unwrap();
    let during = moved.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert_code(&o, 0);
    assert!(
        during > 0,
        "the writer made no transfer while the backup ran"
    );
    let b = only_backup(&pol);
    assert_eq!(b["details"]["tables"][&db]["a"]["rows"], ROWS);
    let copy = format!("{db}_r");
    let o = restore_as(&pol, b["id"].as_str().unwrap(), &db, &copy, &[]);
    assert_code(&o, 0);
    let sum = sql(&format!(
        "SELECT (SELECT SUM(bal) FROM `{copy}`.a) + (SELECT SUM(bal) FROM `{copy}`.b)"
    ));
    assert_eq!(
        sum.trim(),
        invariant.to_string(),
        "restored balances do not add up ({during} transfers during the backup)"
    );
    let live = sql(&format!(
        "SELECT (SELECT SUM(bal) FROM `{db}`.a) + (SELECT SUM(bal) FROM `{db}`.b)"
    ));
    assert_eq!(live.trim(), invariant.to_string());
    sql(&format!("DROP DATABASE `{db}`; DROP DATABASE `{copy}`"));
}

#[test]
fn wrong_password_unreachable_server_and_missing_database_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Wrong password.
    let pol = policy(dir.path(), "password-env = \"CEXDR_T_WRONG\"");
    let o = cexdr_env(
        &["--policy", p(&pol), "backup", "db"],
        &[("CEXDR_T_WRONG", "not-the-password")],
    );
    assert_code(&o, 1);
    assert!(stderr(&o).contains("access denied"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("not-the-password"));
    no_backup(&pol);
    // Unreachable.
    let pol = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"mysql://root@127.0.0.1:1\"\n",
            local_store(&dir.path().join("store"))
        ),
    );
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    no_backup(&pol);
    // Missing database.
    let pol = policy(dir.path(), "databases = [\"cexdr_no_such_db\"]");
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("cexdr_no_such_db") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
    no_backup(&pol);
}

#[test]
fn a_missing_privilege_is_named() {
    let db = unique("cexdr_priv");
    let user = unique("cexdr_low");
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY);
         CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'; GRANT SELECT ON `{db}`.* TO '{user}'@'%';"
    ));
    let dir = tempfile::tempdir().unwrap();
    let url = mysql_url().replacen("root@", &format!("{user}@"), 1);
    let pol = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{url}\"\npassword-env = \"CEXDR_T_PW\"\ndatabases = [\"{db}\"]\n",
            local_store(&dir.path().join("store"))
        ),
    );
    let o = cexdr_env(
        &["--policy", p(&pol), "backup", "db"],
        &[("CEXDR_T_PW", &format!("pw-{user}"))],
    );
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("missing privilege") && err.contains("RELOAD"),
        "{err}"
    );
    no_backup(&pol);
    sql(&format!("DROP USER '{user}'@'%'; DROP DATABASE `{db}`"));
}

/// A database whose first table takes a moment to dump.
fn slow_db(db: &str) {
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; USE `{db}`;
         CREATE TABLE a_big (id BIGINT PRIMARY KEY, v VARCHAR(200));
         INSERT INTO a_big SELECT seq, REPEAT(MD5(seq), 6) FROM seq_1_to_400000;
         CREATE TABLE z_small (id INT PRIMARY KEY); INSERT INTO z_small VALUES (1);"
    ));
}

/// Waits until a cexdr connection is reading `table`; returns its id.
fn wait_for_reader(db: &str, table: &str) -> Option<String> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let id = sql(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND INFO LIKE '%SQL_NO_CACHE%FROM `{db}`.`{table}`%' LIMIT 1"
        ));
        if !id.trim().is_empty() {
            return Some(id.trim().to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_killed_connection_fails_the_backup_without_a_manifest() {
    let db = unique("cexdr_kill");
    slow_db(&db);
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &format!("databases = [\"{db}\"]\nthreads = 1"));
    let child = common::cexdr_command(&["--policy", p(&pol), "backup", "db"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_for_reader(&db, "a_big").expect("the dump never read a_big");
    sql(&format!("KILL CONNECTION {id}"));
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("a_big") && (err.contains("killed") || err.contains("lost")),
        "{err}"
    );
    no_backup(&pol);
    assert!(
        common::walk(&dir.path().join("store"))
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".gz")),
        "artifact left behind"
    );
    sql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn a_table_dropped_during_the_dump_fails_the_backup() {
    let db = unique("cexdr_drop");
    slow_db(&db);
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), &format!("databases = [\"{db}\"]\nthreads = 1"));
    let child = common::cexdr_command(&["--policy", p(&pol), "backup", "db"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_reader(&db, "a_big").expect("the dump never read a_big");
    sql(&format!(
        "SET SESSION lock_wait_timeout = 60; DROP TABLE `{db}`.z_small"
    ));
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("z_small") && err.contains("dropped"), "{err}");
    no_backup(&pol);
    sql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn a_full_store_fails_the_backup_and_leaves_nothing() {
    let db = unique("cexdr_full");
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; USE `{db}`; CREATE TABLE t (id INT PRIMARY KEY, v BLOB);
         INSERT INTO t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_4000;"
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let m = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", p(&store)])
        .status()
        .unwrap();
    assert!(m.success(), "mounting a small tmpfs (tests run as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(store.clone());
    let pol = policy(
        dir.path(),
        &format!("databases = [\"{db}\"]\ncompression = \"none\""),
    );
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.to_lowercase().contains("no space"), "{err}");
    no_backup(&pol);
    let left: Vec<_> = common::walk(&store)
        .into_iter()
        .filter(|f| store.join(f).is_file())
        .collect();
    assert!(left.is_empty(), "left in the store: {left:?}");
    sql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn tls_to_a_server_without_tls_is_refused_and_enabled_false_connects_in_clear() {
    // The shared test server has no TLS (have_ssl DISABLED): a tls table
    // must not fall back to plaintext.
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "[job.tls]\nenabled = true");
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("the server does not offer TLS"),
        "{}",
        stderr(&o)
    );
    no_backup(&pol);
    let db = unique("cexdr_tlsoff");
    sql(&format!("DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY)"));
    let pol = policy(
        dir.path(),
        &format!("databases = [\"{db}\"]\n[job.tls]\nenabled = false"),
    );
    assert_code(&cexdr(&["--policy", p(&pol), "backup", "db"]), 0);
    sql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn a_damaged_artifact_is_refused_and_the_partial_restore_removed() {
    let db = unique("cexdr_dmg");
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; USE `{db}`;
         CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_20000;
         CREATE VIEW v AS SELECT id FROM t;"
    ));
    let (dir, pol, b) = backed_up(&db);
    let id = b["id"].as_str().unwrap();
    let store = dir.path().join("store");
    let key = b["artifacts"][0]["key"].as_str().unwrap();
    let copy = format!("{db}_r");
    // 1. The manifest's checksum no longer matches the object: everything
    //    decompresses, but the restore must not finish.
    let manifest = store
        .join(Path::new(key).parent().unwrap())
        .join("manifest.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let sha = b["artifacts"][0]["sha256"].as_str().unwrap();
    std::fs::write(&manifest, original.replace(sha, &"0".repeat(64))).unwrap();
    let o = restore_as(&pol, id, &db, &copy, &[]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("damaged") && stderr(&o).contains("dropped"),
        "{}",
        stderr(&o)
    );
    assert!(
        sql(&format!("SHOW DATABASES LIKE '{copy}'")).is_empty(),
        "partial restore left behind"
    );
    // 2. A flipped byte inside the object.
    std::fs::write(&manifest, &original).unwrap();
    let art = store.join(key);
    let mut bytes = std::fs::read(&art).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&art, bytes).unwrap();
    let o = restore_as(&pol, id, &db, &copy, &[]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("damaged")
            || stderr(&o).contains("corrupt")
            || stderr(&o).contains("invalid"),
        "{}",
        stderr(&o)
    );
    assert!(
        sql(&format!("SHOW DATABASES LIKE '{copy}'")).is_empty(),
        "partial restore left behind"
    );
    sql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn lock_consistency_and_a_unix_socket_url() {
    let db = unique("cexdr_lock");
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; CREATE TABLE `{db}`.m (id INT PRIMARY KEY, v VARCHAR(5)) ENGINE=MyISAM; INSERT INTO `{db}`.m VALUES (1,'a'),(2,'b');"
    ));
    let socket = sql("SELECT @@socket");
    let dir = tempfile::tempdir().unwrap();
    let pol = policy_at(
        dir.path(),
        &format!("mysql://root@localhost/?socket={}", socket.trim()),
        &format!("databases = [\"{db}\"]\nconsistency = \"lock\""),
    );
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 0);
    let b = only_backup(&pol);
    assert_eq!(b["details"]["consistency"]["mode"], "lock");
    assert!(b["details"]["consistency"]["method"]
        .as_str()
        .unwrap()
        .starts_with("FLUSH TABLES WITH READ LOCK"));
    assert!(b["details"]["server"]["url"]
        .as_str()
        .unwrap()
        .contains("socket"));
    assert_eq!(b["details"]["tables"][&db]["m"]["rows"], 2);
    // Under the lock a MyISAM table is consistent: no warning.
    assert_eq!(b["warnings"], serde_json::json!([]), "{b:#}");
    // The read lock was released when the backup ended.
    sql(&format!("SET SESSION lock_wait_timeout = 5; INSERT INTO `{db}`.m VALUES (3,'c'); DROP DATABASE `{db}`"));
}

/// Objects created after `SET NAMES latin1`, sequences, an Oracle-mode
/// package, and MyISAM/Aria/MERGE tables (issue 11).
fn context_schema(db: &str) -> Vec<u8> {
    let mut s = format!(
        "DROP DATABASE IF EXISTS `{db}`;
CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE `{db}`;
CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, a VARCHAR(60)) ENGINE=InnoDB;
CREATE TABLE my (id INT PRIMARY KEY) ENGINE=MyISAM;
INSERT INTO my VALUES (1), (2);
CREATE TABLE ar (id INT PRIMARY KEY) ENGINE=Aria;
INSERT INTO ar VALUES (5);
CREATE TABLE mrg (id INT PRIMARY KEY) ENGINE=MERGE UNION=(my) INSERT_METHOD=LAST;
CREATE SEQUENCE s_nocache START WITH 100 INCREMENT BY 7 NOCACHE;
CREATE SEQUENCE s_cached START WITH 1 INCREMENT BY 1 CACHE 1000;
CREATE SEQUENCE s_cycle START WITH 3 MINVALUE 1 MAXVALUE 3 INCREMENT BY 1 CACHE 2 CYCLE;
CREATE SEQUENCE s_fresh START WITH -5 MINVALUE -10 MAXVALUE 10 INCREMENT BY -1;
DO NEXTVAL(s_nocache), NEXTVAL(s_nocache), NEXTVAL(s_cached), NEXTVAL(s_cached);
DO NEXTVAL(s_cycle), NEXTVAL(s_cycle), NEXTVAL(s_cycle), NEXTVAL(s_cycle), NEXTVAL(s_cycle);
CREATE TABLE uses_seq (id INT PRIMARY KEY DEFAULT NEXTVAL(s_nocache), v INT);
INSERT INTO uses_seq (v) VALUES (1);
-- A routine created while the database had another collation.
ALTER DATABASE `{db}` COLLATE utf8mb4_bin;
CREATE FUNCTION bin_coll(p VARCHAR(10)) RETURNS VARCHAR(60) DETERMINISTIC RETURN CONCAT(COLLATION(p), '/');
ALTER DATABASE `{db}` COLLATE utf8mb4_unicode_ci;
SET sql_mode = ORACLE;
DELIMITER $$
CREATE PACKAGE pkg AS FUNCTION f1 RETURN VARCHAR2; END;
$$
CREATE PACKAGE BODY pkg AS FUNCTION f1 RETURN VARCHAR2 AS BEGIN RETURN 'p' || 'kg'; END; END;
$$
DELIMITER ;
SET sql_mode = DEFAULT;
SET NAMES latin1;
"
    )
    .into_bytes();
    // 0xE9 is é in latin1; these objects return different results when
    // re-created as utf8mb4.
    s.extend_from_slice(
        b"CREATE FUNCTION f() RETURNS VARCHAR(60) DETERMINISTIC RETURN CONCAT('\xe9', CHAR_LENGTH('\xe9'), COLLATION('x'));
CREATE PROCEDURE pr(OUT r VARCHAR(60)) SET r = CONCAT('\xe9', COLLATION('y'));
CREATE VIEW v AS SELECT '\xe9' AS e, CHAR_LENGTH('\xe9') AS n, COLLATION('x') AS c;
CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = CONCAT(NEW.a, '\xe9', COLLATION('x'));
CREATE EVENT ev ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO INSERT INTO t (a) VALUES (CONCAT('\xe9', COLLATION('z')));
SET NAMES utf8mb4;
",
    );
    s
}

/// What the objects return and how the server records them (definition
/// bytes and creation context), for comparing a restore with its source.
fn behaviour(db: &str) -> String {
    let views = sql(&format!(
        "SELECT TABLE_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{db}' ORDER BY 1"
    ));
    let routines = sql(&format!(
        "SELECT ROUTINE_TYPE, ROUTINE_NAME, HEX(ROUTINE_DEFINITION), CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}' ORDER BY 1, 2"
    ));
    let triggers = sql(&format!(
        "SELECT TRIGGER_NAME, HEX(ACTION_STATEMENT), CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}' ORDER BY 1"
    ));
    let events = sql(&format!(
        "SELECT EVENT_NAME, HEX(EVENT_DEFINITION), CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, TIME_ZONE, STATUS, INTERVAL_VALUE, INTERVAL_FIELD, STARTS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}' ORDER BY 1"
    ));
    let results = sql(&format!(
        "USE `{db}`; SELECT f(), bin_coll('a'); SET sql_mode = ORACLE; SELECT pkg.f1() FROM DUAL; SET sql_mode = DEFAULT; CALL pr(@r); SELECT @r; SELECT * FROM v;
         START TRANSACTION; INSERT INTO t (a) VALUES ('x'); SELECT a FROM t ORDER BY id DESC LIMIT 1; ROLLBACK;"
    ));
    let mut seqs = String::new();
    for s in ["s_nocache", "s_cached", "s_cycle", "s_fresh"] {
        seqs.push_str(&sql(&format!(
            "SHOW CREATE SEQUENCE `{db}`.{s}; SELECT * FROM `{db}`.{s}"
        )));
    }
    format!("{views}\n{routines}\n{triggers}\n{events}\n{results}\n{seqs}")
}

/// The value each sequence hands out next, consuming it.
fn next_values(db: &str) -> String {
    sql(&format!(
        "SELECT NEXTVAL(`{db}`.s_nocache), NEXTVAL(`{db}`.s_cached), NEXTVAL(`{db}`.s_cycle), NEXTVAL(`{db}`.s_fresh)"
    ))
}

#[test]
fn objects_keep_their_context_and_sequences_their_position_through_both_restores() {
    let _scratch = common::scratch_databases();
    let db = unique("cexdr_ctx");
    sql_raw(&context_schema(&db));
    let before = behaviour(&db);
    // The fixture is what it claims: latin1 objects, a cycled sequence.
    assert!(
        before.contains("latin1_swedish_ci") && before.contains("\u{e9}1latin1_swedish_ci"),
        "{before}"
    );
    assert!(before.contains("utf8mb4_bin/"), "{before}");
    let sums = checksums(&db);
    let dir = tempfile::tempdir().unwrap();
    // gzip, named: the stock client below reads it with gunzip.
    let pol = policy(
        dir.path(),
        &format!("databases = [\"{db}\"]\nthreads = 2\ncompression = \"gzip\""),
    );
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 0);
    let b = only_backup(&pol);
    assert_eq!(b["compression"], "gzip");
    let id = b["id"].as_str().unwrap().to_owned();
    let warnings = b["warnings"].to_string();
    for t in ["my (engine MyISAM)", "ar (engine Aria)"] {
        assert!(
            warnings.contains(&format!("{db}.{t} is not transactional")),
            "{warnings}"
        );
    }
    assert!(
        warnings.contains(&format!(
            "{db}.mrg (engine MRG_MyISAM): its rows live elsewhere"
        )),
        "{warnings}"
    );
    assert!(
        !warnings.contains(".t ") && !warnings.contains("uses_seq"),
        "{warnings}"
    );
    assert_eq!(b["details"]["objects"]["sequences"], 4, "{b:#}");
    let defs = b["details"]["definitions"][&db].as_object().unwrap();
    for k in [
        "SEQUENCE s_cycle",
        "VIEW v",
        "FUNCTION f",
        "PROCEDURE pr",
        "TRIGGER tr",
        "EVENT ev",
        "PACKAGE pkg",
        "PACKAGE BODY pkg",
    ] {
        assert!(defs.contains_key(k), "{k} missing from {defs:?}");
    }
    assert!(b["details"]["tables"][&db].get("mrg").is_none());
    assert!(b["details"]["tables"][&db].get("s_cycle").is_none());

    // 1. cexdr restore, renamed: same results, same recorded contexts.
    let copy = format!("{db}_r");
    let o = restore_as(&pol, &id, &db, &copy, &[]);
    assert_code(&o, 0);
    assert_eq!(behaviour(&copy), before, "cexdr restore changed an object");
    assert_eq!(checksums(&copy), sums);
    // A restore over it (--force) drops and re-creates every object kind.
    let o = restore_as(&pol, &id, &db, &copy, &["--force"]);
    assert_code(&o, 0);
    assert_eq!(
        behaviour(&copy),
        before,
        "cexdr restore --force changed an object"
    );

    // 2. The restore test compares definitions and sequence positions.
    let o = cexdr(&[
        "--policy",
        p(&pol),
        "verify",
        &id,
        "--restore-test",
        &mysql_url(),
    ]);
    assert_code(&o, 0);
    let show = stdout(&cexdr(&[
        "--policy",
        p(&pol),
        "--json",
        "catalog",
        "show",
        &id,
    ]));
    assert!(show.contains("12 views, routines, triggers, events and sequences: definitions and creation contexts compared"), "{show}");

    // 3. The stock client, into the original name.
    let source_next = next_values(&db);
    sql(&format!("DROP DATABASE `{db}`"));
    stock_client(&artifact_path(&dir.path().join("store"), &b));
    assert_eq!(behaviour(&db), before, "gunzip | mariadb changed an object");
    assert_eq!(checksums(&db), sums);
    // The next value equals the source's stored position (values cached by
    // a session but not handed out are skipped, as after a server restart;
    // the uncached sequences continue exactly).
    let (a, b2) = (next_values(&db), next_values(&copy));
    assert_eq!(a, b2);
    let want: Vec<&str> = source_next.trim().split('\t').collect();
    let got: Vec<&str> = a.trim().split('\t').collect();
    assert_eq!(got[0], want[0], "NOCACHE sequence continues exactly");
    assert_eq!(got[3], want[3], "an unused sequence starts where it would");
    assert_eq!(
        got[1], "1001",
        "cached sequence resumes at next_not_cached_value"
    );

    // 4. A restore test notices a sequence at another position.
    let store = dir.path().join("store");
    let key = b["artifacts"][0]["key"].as_str().unwrap();
    let manifest = store
        .join(Path::new(key).parent().unwrap())
        .join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let fp = defs["SEQUENCE s_nocache"].as_str().unwrap();
    std::fs::write(&manifest, text.replace(fp, "0123456789abcdef")).unwrap();
    let o = cexdr(&[
        "--policy",
        p(&pol),
        "verify",
        &id,
        "--restore-test",
        &mysql_url(),
    ]);
    assert_code(&o, 4);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(out.contains("SEQUENCE s_nocache differs"), "{out}");

    sql(&format!("DROP DATABASE `{db}`; DROP DATABASE `{copy}`"));
}

/// With local_infile off on the server (a private one: the shared server's
/// settings are not ours to change), there is no LOAD DATA: the restore
/// runs the dump's INSERTs as written, on both schedules, and is as exact.
#[test]
fn a_server_without_local_infile_gets_the_dumps_inserts() {
    use crate::mariadb_server::{MariaDb, Options};
    let srv = MariaDb::start(Options {
        binlog: false,
        extra: vec!["--local-infile=0".into()],
        ..Options::default()
    });
    srv.sql(
        "CREATE DATABASE src; USE src;
         CREATE TABLE t (id INT PRIMARY KEY, b VARBINARY(8), s VARCHAR(20), KEY s (s));
         INSERT INTO t SELECT seq, IF(seq % 3 = 0, NULL, UNHEX(HEX(seq))), CONCAT('v\\t', seq) FROM seq_1_to_5000;
         CREATE TABLE u (id INT PRIMARY KEY, v INT);
         INSERT INTO u SELECT seq, seq FROM seq_1_to_300;",
    );
    let dir = tempfile::tempdir().unwrap();
    let pol = policy_at(dir.path(), &srv.url(), "databases = [\"src\"]");
    let o = cexdr(&["--policy", p(&pol), "backup", "db"]);
    assert_code(&o, 0);
    let b = only_backup(&pol);
    let id = b["id"].as_str().unwrap();
    let sums = |db: &str| srv.sql(&format!("CHECKSUM TABLE {db}.t, {db}.u"));
    let defs = |db: &str| {
        srv.sql(&format!(
            "SHOW CREATE TABLE {db}.t; SHOW CREATE TABLE {db}.u"
        ))
        .replace(db, "DB")
    };
    for bulk in ["1", "0"] {
        let copy = format!("dst{bulk}");
        let map = format!("src={copy}");
        let o = restore_to(&pol, id, &srv.url(), &map, &["--threads", "2"], bulk);
        assert_code(&o, 0);
        assert!(stdout(&o).contains(" 0 rows bulk-loaded"), "{}", stdout(&o));
        assert_eq!(sums(&copy).replace(&copy, "src"), sums("src"));
        assert_eq!(defs(&copy), defs("src"));
    }
}

/// A dump whose rows break the primary key (an artifact altered and its
/// manifest checksum and size rewritten to match, so only the load can
/// tell): LOAD DATA LOCAL only warns about the duplicate, and InnoDB's bulk
/// load then leaves the table empty; the restore fails naming the table and
/// drops what it created, on both schedules.
#[test]
fn a_duplicate_key_in_the_dump_fails_the_restore_instead_of_emptying_the_table() {
    let db = unique("cexdr_dup");
    sql(&format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`; USE `{db}`;
         CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_3000;"
    ));
    let (dir, pol, b) = backed_up(&db);
    let id = b["id"].as_str().unwrap();
    let store = dir.path().join("store");
    let key = b["artifacts"][0]["key"].as_str().unwrap();
    assert!(key.ends_with(".zst"), "{key}");
    let art = store.join(key);
    let plain = Command::new("zstd")
        .args(["-dc", art.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(plain.status.success());
    let text = String::from_utf8(plain.stdout).unwrap();
    // Row 2 becomes a second row 1 (same length, so only the rows differ).
    let altered = text.replacen("),(2,'", "),(1,'", 1);
    assert_ne!(altered, text);
    let mut z = Command::new("zstd")
        .args(["-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = z.stdin.take().unwrap();
    let feed = altered.into_bytes();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&feed).unwrap()
    });
    let out = z.wait_with_output().unwrap();
    writer.join().unwrap();
    std::fs::write(&art, &out.stdout).unwrap();
    let manifest = store
        .join(Path::new(key).parent().unwrap())
        .join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    use sha2::Digest;
    m["artifacts"][0]["sha256"] = hex::encode(sha2::Sha256::digest(&out.stdout)).into();
    m["artifacts"][0]["stored_bytes"] = (out.stdout.len() as u64).into();
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    for bulk in ["1", "0"] {
        let copy = format!("{db}_r{bulk}");
        let map = format!("{db}={copy}");
        let o = restore_to(&pol, id, &mysql_url(), &map, &[], bulk);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains("`t`") && err.contains("Duplicate entry '1'") && err.contains("dropped"),
            "bulk={bulk}: {err}"
        );
        assert!(
            sql(&format!("SHOW DATABASES LIKE '{copy}'")).is_empty(),
            "partial restore left behind"
        );
    }
    sql(&format!("DROP DATABASE `{db}`"));
}
