//! Secrets come from the environment or files and go nowhere else: not to
//! argv (ours or a child's), not to logs at any verbosity, not to manifests,
//! not to error messages.
use crate::common;
use crate::redis_support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

const AWS_SECRET: &str = "aws-secret-MARKER-9d1f0c";
const PASSPHRASE: &str = "age-pass-MARKER-71be33";
const REDIS_PW: &str = "redis-pw-MARKER-5ac0d2";
const MYSQL_PW: &str = "mysql-pw-MARKER-3e9b71";

fn assert_clean(what: &str, text: &str) {
    for m in [AWS_SECRET, PASSPHRASE, REDIS_PW, MYSQL_PW] {
        assert!(!text.contains(m), "{what} contains a secret:\n{text}");
    }
}

/// Every process in the tree below `pid` (children via /proc).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                    out.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
                }
            }
        }
        i += 1;
    }
    out
}

fn cmdlines(pid: u32) -> String {
    tree(pid)
        .into_iter()
        .filter_map(|p| fs::read(format!("/proc/{p}/cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `backup JOB` at trace level, sampling the argv of its process tree
/// until it exits; asserts success and that no secret showed anywhere.
fn traced_backup(policy: &Path, job: &str, secret: (&str, &str)) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cexdr"))
        .args(["--policy", policy.to_str().unwrap(), "-vv", "backup", job])
        .env(secret.0, secret.1)
        .env("CEXDR_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = String::new();
    while child.try_wait().unwrap().is_none() {
        seen.push_str(&cmdlines(pid));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        seen.contains(&format!("backup {job}")),
        "never saw the process running"
    );
    assert_clean("argv", &seen);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("trace log", &String::from_utf8_lossy(&out.stderr));
}

fn policy(dir: &Path, bucket: &str, src: &Path) -> std::path::PathBuf {
    write_policy(
        dir,
        &format!(
            "{}encryption = {{ passphrase-env = \"CEXDR_TEST_PASSPHRASE\" }}\n\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"{}\"]\ncompression = \"none\"\n",
            s3_store(bucket, ""),
            src.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_argv_logs_manifests_or_errors() {
    let (_c, bucket) = s3_bucket("hygiene").await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::File::create(src.join("zeros"))
        .unwrap()
        .set_len(20_000_000)
        .unwrap();
    let policy = policy(dir.path(), &bucket, &src);
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("CEXDR_TEST_PASSPHRASE", PASSPHRASE),
        ("CEXDR_LOG", "trace"),
    ];
    // While it runs: the argv of cexdr and of any child it starts.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cexdr"))
        .args([
            "--policy",
            policy.to_str().unwrap(),
            "-vv",
            "backup",
            "config",
        ])
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = String::new();
    for _ in 0..50 {
        seen.push_str(&cmdlines(pid));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.contains("backup config"),
        "never saw the process: {seen}"
    );
    assert_clean("argv", &seen);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Trace-level logs of cexdr and the AWS SDK.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.len() > 1000, "expected verbose logs, got: {log}");
    assert_clean("trace log", &log);
    assert_clean("stdout", &String::from_utf8_lossy(&out.stdout));

    // The manifest, as listed and as stored.
    let pol = policy.clone();
    let list = tokio::task::spawn_blocking(move || catalog_json(&pol))
        .await
        .unwrap();
    assert_clean("manifest", &list.to_string());
    assert_eq!(list[0]["encryption"]["passphrase"], true);

    // Errors: a wrong passphrase and a failing store name no secret.
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let pol = policy.clone();
    let o = tokio::task::spawn_blocking(move || {
        cexdr_env(
            &[
                "--policy",
                pol.to_str().unwrap(),
                "-vv",
                "--passphrase-env",
                "WRONG_PASS",
                "verify",
                &id,
            ],
            &[
                ("WRONG_PASS", PASSPHRASE),
                ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ],
        )
    })
    .await
    .unwrap();
    assert_clean("verify output", &(stdout(&o) + &stderr(&o)));
    let bad = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            s3_store("no-such-bucket-hygiene", ""),
            src.display()
        ),
    );
    let o = tokio::task::spawn_blocking(move || {
        cexdr_env(
            &["--policy", bad.to_str().unwrap(), "-vv", "backup", "config"],
            &env,
        )
    })
    .await
    .unwrap();
    assert_code(&o, 1);
    assert_clean("error", &stderr(&o));
}

#[test]
fn world_readable_secret_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    fs::write(&pass, PASSPHRASE).unwrap();
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o644)).unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}encryption = {{ passphrase-file = \"{}\" }}\n\n[[job]]\nname = \"c\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            local_store(&dir.path().join("repo")),
            pass.display(),
            src.display()
        ),
    );
    let o = cexdr(&["--policy", policy.to_str().unwrap(), "backup", "c"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("world-readable"), "{}", stderr(&o));
    assert_clean("error", &stderr(&o));
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).unwrap();
    assert_code(
        &cexdr(&["--policy", policy.to_str().unwrap(), "backup", "c"]),
        0,
    );
}

#[test]
fn redis_password_stays_out_of_argv_logs_manifests_and_errors() {
    // Set after start-up (and so not in the test server's argv either).
    let server = redis_support::Server::start(&[]);
    let mut c = server.conn();
    c.cmds(&["CONFIG", "SET", "requirepass", REDIS_PW]);
    c.cmds(&["DEBUG", "POPULATE", "300000", "key", "64"]);
    let dir = tempfile::tempdir().unwrap();
    let policy = redis_support::redis_policy(
        dir.path(),
        &server.url(),
        "password-env = \"CEXDR_TEST_REDIS_PW\"\n",
    );
    traced_backup(&policy, "cache", ("CEXDR_TEST_REDIS_PW", REDIS_PW));
    assert_clean("manifest", &catalog_json(&policy).to_string());

    // The scratch server of a restore test gets no password either.
    let id = catalog_json(&policy)[0]["id"].as_str().unwrap().to_owned();
    let o = cexdr_env(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "-vv",
            "verify",
            &id,
            "--restore-test",
        ],
        &[("CEXDR_TEST_REDIS_PW", REDIS_PW)],
    );
    assert_code(&o, 0);
    assert_clean("restore-test output", &(stdout(&o) + &stderr(&o)));

    // A wrong password: a clear error that does not echo it.
    let wrong = "wrong-MARKER-e2e0";
    let o = cexdr_env(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "-vv",
            "backup",
            "cache",
        ],
        &[("CEXDR_TEST_REDIS_PW", wrong)],
    );
    assert_code(&o, 1);
    assert!(!stderr(&o).contains(wrong), "{}", stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("password"),
        "{}",
        stderr(&o)
    );
}

fn sql(stmts: &str) {
    // The admin connection of the test itself (root without password).
    let url = mysql_url();
    let hostport = url.rsplit('@').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let o = std::process::Command::new("mariadb")
        .args([
            "--protocol=tcp",
            "-h",
            host,
            "-P",
            port,
            "-u",
            "root",
            "-e",
            stmts,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn mysql_password_stays_out_of_argv_logs_manifests_and_errors() {
    let db = format!("cexdr_hyg_{:06x}", rand::random::<u32>() & 0xffffff);
    let user = format!("hyg{:06x}", rand::random::<u32>() & 0xffffff);
    sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(100)); \
         USE {db}; INSERT INTO {db}.t SELECT seq, REPEAT('x', 90) FROM seq_1_to_200000; \
         CREATE USER '{user}'@'%' IDENTIFIED BY '{MYSQL_PW}'; GRANT ALL ON *.* TO '{user}'@'%';"
    ));
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            sql(&format!(
                "DROP DATABASE IF EXISTS {}; DROP USER IF EXISTS '{}'@'%';",
                self.0, self.1
            ));
        }
    }
    let _cleanup = Cleanup(db.clone(), user.clone());
    let hostport = mysql_url().rsplit('@').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"mysql://{user}@{hostport}\"\npassword-env = \"CEXDR_TEST_MYSQL_PW\"\ndatabases = [\"{db}\"]\n",
            local_store(&dir.path().join("repo"))
        ),
    );
    traced_backup(&policy, "db", ("CEXDR_TEST_MYSQL_PW", MYSQL_PW));
    assert_clean("manifest", &catalog_json(&policy).to_string());

    let wrong = "wrong-MARKER-77aa01";
    let o = cexdr_env(
        &["--policy", policy.to_str().unwrap(), "-vv", "backup", "db"],
        &[("CEXDR_TEST_MYSQL_PW", wrong)],
    );
    assert_code(&o, 1);
    assert!(!stderr(&o).contains(wrong), "{}", stderr(&o));
    assert_clean("error", &stderr(&o));
}
