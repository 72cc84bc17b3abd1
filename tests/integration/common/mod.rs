//! Shared helpers for the integration tests. Tests talk to real servers
//! (MariaDB, Redis, moto); `scripts/test` starts them and exports their
//! addresses. A missing service is a test failure, never a silent skip.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Output;

mod runbook;
mod spawn;
mod uploads;
pub use runbook::{failover, failover_args, runbook};
pub use spawn::{cexdr_async, cexdr_command, interrupt, poll, poll_async};
pub use uploads::{assert_no_multipart_upload, multipart_uploads};

/// The address of a service the tests need; panics with the fix if unset.
pub fn service(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run scripts/test, or `scripts/dev-services start && eval \"$(scripts/dev-services env)\"` first")
    })
}

pub fn s3_endpoint() -> String {
    service("CEXDR_TEST_S3_ENDPOINT")
}
pub fn mysql_url() -> String {
    service("CEXDR_TEST_MYSQL_URL")
}
pub fn redis_url() -> String {
    service("CEXDR_TEST_REDIS_URL")
}

/// Runs the cexdr binary with the moto credentials in its environment.
pub fn cexdr(args: &[&str]) -> Output {
    cexdr_env(args, &[])
}

pub fn cexdr_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = cexdr_command(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run cexdr")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts an exit code, showing the output when it differs.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Creates an S3 bucket on the emulator with a unique name.
pub async fn s3_bucket(prefix: &str) -> (aws_sdk_s3::Client, String) {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(s3_endpoint())
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("{prefix}-{:08x}", rand::random::<u32>());
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    (client, bucket)
}

/// The `[store]` table for a local store at `dir`.
pub fn local_store(dir: &Path) -> String {
    format!("[store]\nkind = \"local\"\npath = \"{}\"\n", dir.display())
}

/// The `[store]` table for an emulator bucket.
pub fn s3_store(bucket: &str, prefix: &str) -> String {
    format!(
        "[store]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\npath-style = true\n",
        s3_endpoint()
    )
}

/// Writes a policy file into `dir` and returns its path.
pub fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Every file below `dir` (relative path, for comparisons).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The JSON of `catalog list --json`.
pub fn catalog_json(policy: &Path) -> serde_json::Value {
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "catalog",
        "list",
        "--json",
    ]);
    assert_code(&o, 0);
    serde_json::from_slice(&o.stdout).expect("catalog list --json is JSON")
}

/// An S3 store spec for an emulator bucket (5 MiB parts, 2 in flight);
/// tests adjust the fields they exercise.
pub fn s3_spec(bucket: &str, prefix: &str, endpoint: String) -> cexdr::backup::policy::S3Spec {
    cexdr::backup::policy::S3Spec {
        bucket: bucket.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint),
        path_style: true,
        storage_class: None,
        sse: None,
        kms_key_id: None,
        part_size: 5 << 20,
        upload_concurrency: 2,
        object_lock: None,
    }
}

/// Tests that create `cexdr_rt_*` scratch databases on the shared server
/// (restore tests, drills) or check that none is left behind hold this, so
/// that one test's check does not see another's scratch databases.
pub fn scratch_databases() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
