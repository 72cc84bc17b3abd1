//! `cexdr prune`: dry run changes nothing; retention removes what no rule
//! keeps (never the newest verified); incomplete folders older than the
//! grace period and stale S3 multipart uploads go; Object Lock is reported
//! as "locked until"; a store failing half-way leaves the catalog consistent.
use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cexdr::backup::catalog::{backup_dir, new_id, Catalog};
use cexdr::backup::policy::Policy;
use cexdr::store::{self, ByteStream, DynStore, ObjectMeta, Store};
use chrono::Utc;
use common::*;
use tokio_util::sync::CancellationToken;

fn job(src: &Path, keep: &str) -> String {
    format!(
        "\n[[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\nkeep = {{ {keep} }}\n",
        src.display()
    )
}

fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("nginx.conf"), "worker_processes 4;\n").unwrap();
    src
}

async fn backups(policy: &Policy, store: &DynStore, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let m = cexdr::backup::run::run(store.clone(), &policy.jobs[0], CancellationToken::new())
            .await
            .unwrap();
        ids.push(m.id);
    }
    ids
}

/// An incomplete backup folder (artifact, no manifest) whose id is `age` old.
async fn incomplete(store: &DynStore, age: chrono::Duration) -> String {
    let t = Utc::now() - age;
    let dir = backup_dir("cfg", &new_id(t), t);
    store::put_bytes(
        store.as_ref(),
        &format!("{dir}/files.tar.gz"),
        vec![1, 2, 3],
    )
    .await
    .unwrap();
    dir
}

async fn keys(store: &DynStore) -> Vec<String> {
    store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_incomplete_and_dry_run_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let repo = dir.path().join("repo");
    let pfile = write_policy(dir.path(), &(local_store(&repo) + &job(&src, "last = 2")));
    let policy = Policy::load(&pfile).unwrap();
    let store = store::build(&policy.store).await.unwrap();
    let ids = backups(&policy, &store, 4).await;
    // The oldest is the newest verified backup: the guard keeps it.
    let catalog = Catalog::new(store.clone());
    let oldest = catalog.find(&ids[0]).await.unwrap();
    let v = cexdr::backup::plan::verify::verify(&catalog, &oldest)
        .await
        .unwrap();
    assert_eq!(v.status, cexdr::backup::catalog::Status::Ok);
    let old_incomplete = incomplete(&store, chrono::Duration::hours(48)).await;
    let fresh_incomplete = incomplete(&store, chrono::Duration::minutes(5)).await;

    let p = pfile.to_str().unwrap();
    let before = keys(&store).await;
    let o = cexdr(&["--policy", p, "prune", "--dry-run", "--json"]);
    assert_code(&o, 0);
    assert_eq!(keys(&store).await, before, "a dry run deletes nothing");
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let decisions = plan["jobs"][0]["decisions"].as_array().unwrap();
    let verdicts: Vec<(String, bool, String)> = decisions
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["keep"].as_bool().unwrap(),
                d["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
        .collect();
    let expect = vec![
        (ids[3].clone(), true, "newest, last".to_owned()),
        (ids[2].clone(), true, "last".to_owned()),
        (ids[1].clone(), false, "matches no rule".to_owned()),
        (ids[0].clone(), true, "newest verified".to_owned()),
    ];
    assert_eq!(verdicts, expect);
    assert_eq!(
        plan["jobs"][0]["incomplete"],
        serde_json::json!([old_incomplete])
    );

    let o = cexdr(&["--policy", p, "prune"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains(&format!("{}  remove  matches no rule", ids[1])),
        "{text}"
    );
    assert!(
        text.contains(&format!("incomplete {old_incomplete}: removed")),
        "{text}"
    );
    let listed: Vec<String> = catalog_json(&pfile)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [ids[0].clone(), ids[2].clone(), ids[3].clone()]);
    let left = keys(&store).await;
    // Only the signed prune record (cfg/pruned/<id>.json) may name it.
    assert!(
        !left
            .iter()
            .any(|k| k.contains(&ids[1]) && !k.contains("/pruned/")),
        "every object of the removed backup: {left:?}"
    );
    assert!(!left.iter().any(|k| k.starts_with(&old_incomplete)));
    assert!(
        left.iter().any(|k| k.starts_with(&fresh_incomplete)),
        "within the grace period"
    );
    assert!(
        !left.iter().any(|k| k.starts_with(".locks/")),
        "lease released"
    );
    // The oldest backup's verification record stays with it.
    assert!(left
        .iter()
        .any(|k| k.contains(&ids[0]) && k.contains("/verify/")));
}

/// A real store whose deletes start failing after `ok` successful ones:
/// the store going down in the middle of a prune.
struct FailingDeletes {
    inner: DynStore,
    ok: usize,
    done: AtomicUsize,
}

#[async_trait]
impl Store for FailingDeletes {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn preflight(&self) -> cexdr::Result<()> {
        self.inner.preflight().await
    }
    async fn put(&self, key: &str, body: ByteStream) -> cexdr::Result<u64> {
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> cexdr::Result<bool> {
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> cexdr::Result<ByteStream> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> cexdr::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> cexdr::Result<()> {
        if self.done.fetch_add(1, Ordering::SeqCst) >= self.ok {
            return Err(cexdr::Error::Store {
                store: self.describe(),
                op: "delete",
                key: key.into(),
                msg: "connection refused".into(),
            });
        }
        self.inner.delete(key).await
    }
    async fn head(&self, key: &str) -> cexdr::Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_failing_half_way_leaves_the_catalog_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let pfile = write_policy(
        dir.path(),
        &(local_store(&dir.path().join("repo")) + &job(&src, "last = 1")),
    );
    let policy = Policy::load(&pfile).unwrap();
    let real = store::build(&policy.store).await.unwrap();
    let ids = backups(&policy, &real, 3).await;
    // Each backup folder: manifest + one artifact. Let every possible
    // number of deletes succeed before the failure.
    for ok in 0..4 {
        let flaky: DynStore = Arc::new(FailingDeletes {
            inner: real.clone(),
            ok,
            done: AtomicUsize::new(0),
        });
        let catalog = Catalog::new(flaky);
        let opts = cexdr::backup::plan::prune::Options {
            dry_run: false,
            grace: cexdr::backup::plan::prune::DEFAULT_GRACE,
            now: Utc::now(),
        };
        let r =
            cexdr::backup::plan::prune::prune_job(&catalog, policy.jobs[0].prune_rules(), &opts)
                .await
                .unwrap();
        let listed = Catalog::new(real.clone())
            .list(Some("cfg"))
            .await
            .unwrap()
            .len();
        if listed > 1 {
            assert!(
                !r.errors.is_empty(),
                "ok={ok}: a prune that stopped says so"
            );
        }
        // Every listed backup is whole: verification passes.
        let healthy = Catalog::new(real.clone());
        for e in healthy.list(Some("cfg")).await.unwrap() {
            let v = cexdr::backup::plan::verify::verify(&healthy, &e)
                .await
                .unwrap();
            assert_eq!(
                v.status,
                cexdr::backup::catalog::Status::Ok,
                "ok={ok}: {} listed without data",
                e.manifest.id
            );
        }
    }
    // With the store back, prune finishes: leftovers of interrupted removals
    // (folders without a manifest, ids older than the grace) go too.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let o = cexdr(&[
        "--policy",
        pfile.to_str().unwrap(),
        "prune",
        "--grace",
        "1s",
    ]);
    assert_code(&o, 0);
    let left = keys(&real).await;
    for id in &ids[..2] {
        assert!(
            !left
                .iter()
                .any(|k| k.contains(id.as_str()) && !k.contains("/pruned/")),
            "{id} left: {left:?}"
        );
    }
    assert_eq!(catalog_json(&pfile).as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn object_lock_and_stale_uploads_on_s3() {
    let (client, bucket) = s3_bucket("prune").await;
    // A second bucket with Object Lock (1-day governance retention).
    let locked = format!("{bucket}-lock");
    client
        .create_bucket()
        .bucket(&locked)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    use aws_sdk_s3::types::*;
    client
        .put_object_lock_configuration()
        .bucket(&locked)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(ObjectLockRetentionMode::Governance)
                                .days(1)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let pfile = write_policy(
        dir.path(),
        &(s3_store(&locked, "x") + &job(&src, "last = 1")),
    );
    let policy = Policy::load(&pfile).unwrap();
    let store = store::build(&policy.store).await.unwrap();
    let ids = backups(&policy, &store, 2).await;
    let o = cexdr(&["--policy", pfile.to_str().unwrap(), "prune"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    let day = (Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        text.contains(&format!("{}/manifest.json is locked until {day}", ids[0])),
        "{text}\n{}",
        stderr(&o)
    );
    // Still listed, still whole.
    assert_eq!(catalog_json(&pfile).as_array().unwrap().len(), 2);

    // Stale multipart uploads (plain bucket).
    let pfile = write_policy(
        dir.path(),
        &(s3_store(&bucket, "x") + &job(&src, "last = 1")),
    );
    let up = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("x/cfg/2026/01/01/20260101T000000.000Z-000001/files.tar.gz")
        .send()
        .await
        .unwrap();
    let other = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("elsewhere/file")
        .send()
        .await
        .unwrap();
    // moto reports every upload as initiated in 2010, so the grace period
    // cannot be exercised here: both uploads are "stale"; only the one
    // under the store's prefix is ours to abort.
    let p = pfile.to_str().unwrap();
    let o = cexdr(&["--policy", p, "prune", "--dry-run", "--json"]);
    assert_code(&o, 0);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let planned = r["stale_uploads"]["aborted"].as_array().unwrap();
    assert_eq!(planned.len(), 1, "{r}");
    assert_eq!(
        planned[0]["key"],
        "cfg/2026/01/01/20260101T000000.000Z-000001/files.tar.gz"
    );
    let listed = multipart_uploads(&client, &bucket).await;
    assert_eq!(listed.len(), 2, "a dry run aborts nothing");
    let o = cexdr(&["--policy", p, "prune"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("stale upload cfg/2026/01/01/20260101T000000.000Z-000001/files.tar.gz"),
        "{}",
        stdout(&o)
    );
    let left = multipart_uploads(&client, &bucket).await;
    let ids: Vec<_> = left.iter().filter_map(|u| u.upload_id()).collect();
    assert!(!ids.contains(&up.upload_id().unwrap()), "aborted");
    assert!(
        ids.contains(&other.upload_id().unwrap()),
        "outside the store prefix: untouched"
    );
}
