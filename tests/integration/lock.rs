//! Job locks: two concurrent `cexdr backup` runs of one job (exactly one
//! exits 3 and names the holder), a live lease written by another host, and
//! takeover of an expired lease; against the local store and moto S3.
use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cexdr::backup::lease::{lease_key, Lease, LeaseRecord};
use cexdr::store::{self, DynStore};
use chrono::Utc;
use common::*;

fn files_job(src: &Path) -> String {
    format!(
        "\n[[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        src.display()
    )
}

/// A source big enough (random, incompressible) that a backup lasts far
/// longer than the start of a second process.
fn big_source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; 48 << 20];
    rand::Rng::fill(&mut rand::thread_rng(), &mut data[..]);
    std::fs::write(src.join("blob"), &data).unwrap();
    src
}

fn two_concurrent_runs(policy: &Path) {
    let p = policy.to_str().unwrap().to_owned();
    let spawn = |p: String| std::thread::spawn(move || cexdr(&["--policy", &p, "backup", "cfg"]));
    let (a, b) = (spawn(p.clone()), spawn(p.clone()));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(3)],
        "a:\n{}\n{}\nb:\n{}\n{}",
        stdout(&a),
        stderr(&a),
        stdout(&b),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    let msg = stderr(loser);
    let host = gethostname();
    assert!(
        msg.contains(&format!("job cfg is locked by {host} pid ")) && msg.contains(" since 20"),
        "{msg}"
    );
    // One backup listed, the lease released.
    assert_eq!(catalog_json(policy).as_array().unwrap().len(), 1);
}

fn gethostname() -> String {
    String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned()
}

fn record(job: &str, host: &str, expires_in: chrono::Duration) -> LeaseRecord {
    let now = Utc::now();
    LeaseRecord {
        job: job.into(),
        owner: "feedfacefeedface".into(),
        host: host.into(),
        pid: 4242,
        acquired_at: now - chrono::Duration::hours(1),
        renewed_at: now - chrono::Duration::minutes(1),
        expires_at: now + expires_in,
    }
}

async fn foreign_and_expired_leases(store: DynStore, policy: &Path) {
    let key = lease_key("cfg");
    let p = policy.to_str().unwrap();
    // A live lease of another host: exit 3, naming it.
    let live = record("cfg", "db-backup-7", chrono::Duration::minutes(4));
    store::put_bytes(store.as_ref(), &key, serde_json::to_vec(&live).unwrap())
        .await
        .unwrap();
    let o = cexdr(&["--policy", p, "backup", "cfg"]);
    assert_code(&o, 3);
    let want = format!(
        "job cfg is locked by db-backup-7 pid 4242 since {}",
        live.acquired_at.to_rfc3339()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    // Once expired (its holder was killed), the next run takes it over.
    let dead = record("cfg", "db-backup-7", chrono::Duration::seconds(-1));
    store::put_bytes(store.as_ref(), &key, serde_json::to_vec(&dead).unwrap())
        .await
        .unwrap();
    let o = cexdr(&["--policy", p, "backup", "cfg"]);
    assert_code(&o, 0);
    assert!(store.head(&key).await.unwrap().is_none(), "lease released");
    let left: Vec<_> = store.list(".locks/").await.unwrap();
    assert!(left.is_empty(), "takeover marker left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_store_lock() {
    let dir = tempfile::tempdir().unwrap();
    let src = big_source(dir.path());
    let repo = dir.path().join("repo");
    let policy = write_policy(dir.path(), &(local_store(&repo) + &files_job(&src)));
    let p2 = policy.clone();
    tokio::task::spawn_blocking(move || two_concurrent_runs(&p2))
        .await
        .unwrap();
    let store: DynStore = Arc::new(cexdr::store::local::LocalStore::new(repo));
    foreign_and_expired_leases(store, &policy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_lock() {
    let (_client, bucket) = s3_bucket("lock").await;
    let dir = tempfile::tempdir().unwrap();
    let src = big_source(dir.path());
    let policy = write_policy(dir.path(), &(s3_store(&bucket, "cexdr") + &files_job(&src)));
    let p2 = policy.clone();
    tokio::task::spawn_blocking(move || two_concurrent_runs(&p2))
        .await
        .unwrap();
    let pol = cexdr::backup::policy::Policy::load(&policy).unwrap();
    let store = store::build(&pol.store).await.unwrap();
    foreign_and_expired_leases(store, &policy).await;
}

/// Two takers of the same expired lease: exactly one wins.
#[tokio::test(flavor = "multi_thread")]
async fn racing_takeovers_have_one_winner() {
    let (_client, bucket) = s3_bucket("lockrace").await;
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        &(s3_store(&bucket, "") + &files_job(dir.path())),
    );
    let pol = cexdr::backup::policy::Policy::load(&policy).unwrap();
    let s3 = store::build(&pol.store).await.unwrap();
    let local: DynStore = Arc::new(cexdr::store::local::LocalStore::new(dir.path().join("r")));
    for store in [s3, local] {
        for _ in 0..5 {
            let dead = record("j", "gone", chrono::Duration::seconds(-5));
            store::put_bytes(
                store.as_ref(),
                &lease_key("j"),
                serde_json::to_vec(&dead).unwrap(),
            )
            .await
            .unwrap();
            let (a, b) = tokio::join!(
                Lease::acquire(store.clone(), "j", Duration::from_secs(60)),
                Lease::acquire(store.clone(), "j", Duration::from_secs(60)),
            );
            assert!(
                a.is_ok() != b.is_ok(),
                "{}: exactly one taker wins: {:?} {:?}",
                store.describe(),
                a.as_ref().err(),
                b.as_ref().err()
            );
            let won = a.or(b).unwrap();
            won.release().await.unwrap();
            assert!(store.list(".locks/").await.unwrap().is_empty());
        }
    }
}

/// The holder renews its lease (expiry moves on) and notices when another
/// run overwrote it. Lease expiry is wall-clock time across hosts, so this
/// test waits on the real clock, briefly (TTL 600 ms).
#[tokio::test(flavor = "multi_thread")]
async fn renewal_and_loss() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(cexdr::store::local::LocalStore::new(dir.path().into()));
    let ttl = Duration::from_millis(600);
    let lease = Lease::acquire(store.clone(), "j", ttl).await.unwrap();
    let first = lease.record().await.expires_at;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = lease.record().await.expires_at;
    assert!(
        now > first + chrono::Duration::milliseconds(500),
        "{first} -> {now}"
    );
    assert!(
        Lease::acquire(store.clone(), "j", ttl).await.is_err(),
        "still held"
    );
    assert!(!lease.lost().is_cancelled());
    // Another run takes it (as if our renewals had stalled past expiry),
    // just after a renewal, so that the write does not land between a
    // renewal's read and its write (which would overwrite it: the store has
    // no compare-and-swap for an existing object).
    let last = lease.record().await.renewed_at;
    tokio::time::timeout(Duration::from_secs(5), async {
        while lease.record().await.renewed_at == last {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a renewal within 5 s");
    let thief = record("j", "elsewhere", chrono::Duration::minutes(5));
    store::put_bytes(
        store.as_ref(),
        &lease_key("j"),
        serde_json::to_vec(&thief).unwrap(),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(2), lease.lost().cancelled())
        .await
        .expect("loss noticed within a renewal period");
    // Releasing a lost lease leaves the new holder's lease alone.
    lease.release().await.unwrap();
    assert!(store.head(&lease_key("j")).await.unwrap().is_some());
}

/// `kill -9` mid-backup: nothing is listed, the dead run's lease blocks the
/// next run (exit 3, naming the dead pid) until it expires; then the next
/// run takes it over and succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_backup() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let st = std::process::Command::new("head")
        .args(["-c", "200M", "/dev/urandom"])
        .stdout(std::fs::File::create(src.join("blob")).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let repo = dir.path().join("repo");
    let policy = write_policy(dir.path(), &(local_store(&repo) + &files_job(&src)));
    let p = policy.to_str().unwrap();
    let mut child = cexdr_command(&["--policy", p, "backup", "cfg"])
        .env_remove("CEXDR_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("backup started").unwrap();
        if l.contains("backup started") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(
        catalog_json(&policy).as_array().unwrap().len(),
        0,
        "nothing listed"
    );
    let o = cexdr(&["--policy", p, "backup", "cfg"]);
    assert_code(&o, 3);
    assert!(
        stderr(&o).contains(&format!(" pid {pid} since ")),
        "{}",
        stderr(&o)
    );
    // Let the dead run's lease expire (rewritten instead of waiting 5 minutes).
    let store: DynStore = Arc::new(cexdr::store::local::LocalStore::new(repo));
    let key = lease_key("cfg");
    let mut rec: LeaseRecord =
        serde_json::from_slice(&store::get_bytes(store.as_ref(), &key).await.unwrap()).unwrap();
    assert_eq!(rec.pid, pid);
    rec.expires_at = Utc::now() - chrono::Duration::seconds(1);
    store::put_bytes(store.as_ref(), &key, serde_json::to_vec(&rec).unwrap())
        .await
        .unwrap();
    let o = cexdr(&["--policy", p, "backup", "cfg"]);
    assert_code(&o, 0);
    assert_eq!(catalog_json(&policy).as_array().unwrap().len(), 1);
}

/// `backup a b`: a job another run holds (3) never hides a job that failed
/// (1), whichever comes first; `--json` failures are a document on stdout.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_never_hides_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.conf"), "x").unwrap();
    let missing = dir.path().join("missing");
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}{}\n[[job]]\nname = \"broken\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            local_store(&repo),
            files_job(&src),
            missing.display()
        ),
    );
    let store = store::build(&store::StoreSpec::Local { path: repo.clone() })
        .await
        .unwrap();
    let live = record("cfg", "db-backup-7", chrono::Duration::minutes(4));
    store::put_bytes(
        store.as_ref(),
        &lease_key("cfg"),
        serde_json::to_vec(&live).unwrap(),
    )
    .await
    .unwrap();
    let p = policy.to_str().unwrap();
    for order in [["cfg", "broken"], ["broken", "cfg"]] {
        let o = cexdr(&["--policy", p, "backup", order[0], order[1]]);
        assert_code(&o, 1);
        assert!(
            stderr(&o).contains("locked by db-backup-7"),
            "{}",
            stderr(&o)
        );
    }
    // Locked alone is 3; under --json the error is a document on stdout.
    let o = cexdr(&["--policy", p, "--json", "backup", "cfg"]);
    assert_code(&o, 3);
    let o = cexdr(&[
        "--policy",
        p,
        "--json",
        "catalog",
        "show",
        "20990101T000000.000Z-000000",
    ]);
    assert_code(&o, 5);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(doc["schema"], "cexdr.error/1");
    assert_eq!(doc["exit"], 5);
    assert_eq!(doc["error"]["kind"], "not-found");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no backup with id 20990101T000000.000Z-000000"),
        "{doc}"
    );
}
