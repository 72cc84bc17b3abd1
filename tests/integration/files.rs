//! Config-folder backups end to end through the binary, against the real
//! local store and the S3 emulator: round trips, verification, restore
//! guards, and every bad input of issue #2.
use crate::common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A config tree with the things that matter: modes, symlinks, nesting,
/// odd names, an empty file, a multi-block file and things to exclude.
fn make_tree(root: &Path) {
    let d = root.join("nginx");
    fs::create_dir_all(d.join("sites-available")).unwrap();
    fs::create_dir_all(d.join("sites-enabled")).unwrap();
    fs::create_dir_all(d.join("cache/deep")).unwrap();
    fs::write(d.join("nginx.conf"), "worker_processes 4;\n").unwrap();
    fs::set_permissions(d.join("nginx.conf"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(
        d.join("sites-available/api.conf"),
        "server { listen 443; }\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../sites-available/api.conf",
        d.join("sites-enabled/api.conf"),
    )
    .unwrap();
    std::os::unix::fs::symlink("sites-available", d.join("available-link")).unwrap();
    fs::write(d.join("reload.sh"), "#!/bin/sh\nnginx -s reload\n").unwrap();
    fs::set_permissions(d.join("reload.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(d.join("empty"), "").unwrap();
    fs::write(d.join("ünïcode name.conf"), "x = 1\n").unwrap();
    let big: Vec<u8> = (0..3_500_000u32).map(|_| rand::random::<u8>()).collect();
    fs::write(d.join("geo.dat"), big).unwrap();
    fs::write(d.join(".nginx.conf.swp"), "swap").unwrap();
    fs::write(d.join("cache/deep/x"), "cached").unwrap();
    fs::set_permissions(d.join("sites-available"), fs::Permissions::from_mode(0o750)).unwrap();
    let redis = root.join("redis");
    fs::create_dir_all(&redis).unwrap();
    fs::write(redis.join("redis.conf"), "maxmemory 1gb\n").unwrap();
}

fn files_job(root: &Path, extra: &str) -> String {
    format!(
        "\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"{}\", \"{}\"]\nexclude = [\"*.swp\", \"cache/\"]\nschedule = \"0 3 * * *\"\n{extra}\n",
        root.join("nginx").display(),
        root.join("redis").display()
    )
}

fn p(policy: &Path) -> &str {
    policy.to_str().unwrap()
}

fn only_backup(policy: &Path) -> Value {
    let list = catalog_json(policy);
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{list:#}");
    arr[0].clone()
}

/// Compares the restored copy with the source: names, bytes, modes, mtimes, links.
fn assert_same_tree(src: &Path, restored: &Path) {
    let mut want: Vec<PathBuf> = walk(src)
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            !s.ends_with(".swp") && !p.components().any(|c| c.as_os_str() == "cache")
        })
        .collect();
    want.sort();
    let got = walk(restored);
    assert_eq!(got, want);
    for rel in &want {
        let (a, b) = (src.join(rel), restored.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&a).unwrap(),
                fs::read_link(&b).unwrap(),
                "{}",
                rel.display()
            );
            continue;
        }
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            rel.display()
        );
        assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
        if ma.is_file() {
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "content of {}",
                rel.display()
            );
        }
    }
}

fn round_trip(store_toml: String, dir: &Path) -> (PathBuf, Value) {
    let src = dir.join("src");
    make_tree(&src);
    let policy = write_policy(
        dir,
        &format!(
            "{store_toml}{}",
            // Unverified until `verify` below (no read-back after the backup).
            files_job(
                &src,
                "keep = { within = \"30d\" }\nverify-after-backup = false"
            )
        ),
    );

    let o = cexdr(&["--policy", p(&policy), "policy", "check"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("next: "), "{}", stdout(&o));

    let o = cexdr(&["--policy", p(&policy), "backup", "config"]);
    assert_code(&o, 0);
    let b = only_backup(&policy);
    for field in [
        "id",
        "job",
        "kind",
        "host",
        "started_at",
        "finished_at",
        "source_bytes",
        "stored_bytes",
        "sha256",
        "compression",
        "key",
        "tool_version",
        "details",
    ] {
        assert!(
            b.get(field).is_some(),
            "catalog list --json lacks {field}: {b:#}"
        );
    }
    assert_eq!(b["verification"], Value::Null);
    assert_eq!(b["kind"], "files");
    assert_eq!(b["compression"], "gzip");
    assert!(b["key"].as_str().unwrap().starts_with("config/"));
    assert!(b["key"].as_str().unwrap().ends_with("/files.tar.gz"));

    let o = cexdr(&["--policy", p(&policy), "verify", "--all"]);
    assert_code(&o, 0);
    let b = only_backup(&policy);
    assert_eq!(b["verification"]["status"], "ok", "{b:#}");

    let id = b["id"].as_str().unwrap().to_owned();
    let out = dir.join("restored");
    let o = cexdr(&[
        "--policy",
        p(&policy),
        "restore",
        &id,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    let restored_src = out.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &restored_src);

    // An existing target is never overwritten without --force.
    let o = cexdr(&[
        "--policy",
        p(&policy),
        "restore",
        &id,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    fs::write(restored_src.join("nginx/nginx.conf"), "changed").unwrap();
    let o = cexdr(&[
        "--policy",
        p(&policy),
        "restore",
        &id,
        "--to",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert_code(&o, 0);
    assert_same_tree(&src, &restored_src);
    (policy, b)
}

#[test]
fn local_round_trip_keeps_modes_links_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, b) = round_trip(local_store(&dir.path().join("repo")), dir.path());
    // The artifact on disk is a standard .tar.gz that sha256sum agrees with.
    let artifact = dir.path().join("repo").join(b["key"].as_str().unwrap());
    let sum = std::process::Command::new("sha256sum")
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(b["sha256"].as_str().unwrap()));
    let t = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(t.status.success());
    assert!(String::from_utf8_lossy(&t.stdout).contains("nginx/sites-enabled/api.conf"));

    // catalog show prints the manifest and the verification.
    let o = cexdr(&[
        "--policy",
        p(&policy),
        "catalog",
        "show",
        b["id"].as_str().unwrap(),
    ]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("verification") && stdout(&o).contains(" ok "),
        "{}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_round_trip_and_sha256sum_of_the_downloaded_object() {
    let (client, bucket) = s3_bucket("files").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let store = s3_store(&bucket, "cexdr");
    let (_policy, b) = tokio::task::spawn_blocking(move || round_trip(store, &d))
        .await
        .unwrap();
    let key = format!("cexdr/{}", b["key"].as_str().unwrap());
    let obj = client
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let data = obj.body.collect().await.unwrap().into_bytes();
    let file = dir.path().join("downloaded.tar.gz");
    fs::write(&file, &data).unwrap();
    let sum = std::process::Command::new("sha256sum")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap(),
        b["sha256"].as_str().unwrap()
    );
    // The manifest sits beside the artifact.
    let mkey = key.replace("files.tar.gz", "manifest.json");
    client
        .head_object()
        .bucket(&bucket)
        .key(&mkey)
        .send()
        .await
        .unwrap();
}

fn corrupt_and_verify(policy: &Path, flip: impl FnOnce(&str)) {
    let b = only_backup(policy);
    flip(b["key"].as_str().unwrap());
    let o = cexdr(&["--policy", p(policy), "verify", b["id"].as_str().unwrap()]);
    assert_code(&o, 4);
    assert!(stdout(&o).contains("FAILED"), "{}", stdout(&o));
    let after = only_backup(policy);
    assert_eq!(after["verification"]["status"], "failed", "{after:#}");
    // A damaged object is never restored: nothing appears at the target.
    let target = policy.parent().unwrap().join("never");
    let o = cexdr(&[
        "--policy",
        p(policy),
        "restore",
        b["id"].as_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_code(&o, 1);
    assert!(!target.exists());
}

#[test]
fn one_flipped_byte_fails_verify_with_exit_4_local() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let repo = dir.path().join("repo");
    let policy = write_policy(
        dir.path(),
        &format!("{}{}", local_store(&repo), files_job(&src, "")),
    );
    assert_code(&cexdr(&["--policy", p(&policy), "backup", "--all"]), 0);
    corrupt_and_verify(&policy, |key| {
        let f = repo.join(key);
        let mut data = fs::read(&f).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0x01;
        fs::write(&f, data).unwrap();
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn one_flipped_byte_fails_verify_with_exit_4_s3() {
    let (client, bucket) = s3_bucket("corrupt").await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let policy = write_policy(
        dir.path(),
        &format!("{}{}", s3_store(&bucket, ""), files_job(&src, "")),
    );
    let pol = policy.clone();
    tokio::task::spawn_blocking(move || {
        assert_code(&cexdr(&["--policy", p(&pol), "backup", "--all"]), 0)
    })
    .await
    .unwrap();
    let b = only_backup(&policy);
    let key = b["key"].as_str().unwrap().to_owned();
    let obj = client
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let mut data = obj.body.collect().await.unwrap().into_bytes().to_vec();
    let n = data.len() - 100;
    data[n] ^= 0x80;
    client
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(data.into())
        .send()
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || corrupt_and_verify(&policy, |_| {}))
        .await
        .unwrap();
}

#[test]
fn bad_policies_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let good = format!(
        "{}{}",
        local_store(&dir.path().join("repo")),
        files_job(&src, "")
    );
    let cases = [
        (
            good.replace("schedule =", "schedul ="),
            "unknown field `schedul`",
        ),
        (good.replace("0 3 * * *", "0 25 * * *"), "`schedule`"),
        (good.replace("kind = \"files\"", "kind = \"ftp\""), "`kind`"),
        (
            good.replace("kind = \"local\"", "kind = \"local\"\nbucket = \"b\""),
            "`bucket`",
        ),
        (format!("{good}compression = \"lz4\"\n"), "`compression`"),
        (
            good.replace("[[job]]", "[[job]]\nkeep = { daily = 0 }"),
            "daily = 0",
        ),
        ("[store\nkind=".to_string(), "policy.toml:1"),
    ];
    for (text, needle) in cases {
        let policy = write_policy(dir.path(), &text);
        let o = cexdr(&["--policy", p(&policy), "backup", "--all"]);
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(err.contains(needle), "wanted {needle:?} in: {err}");
        assert!(err.contains("policy.toml:"), "no file:line in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    }
    // Nothing was written anywhere.
    assert!(!dir.path().join("repo").exists());
    // Usage errors are exit 2 too.
    assert_code(&cexdr(&["backup", "--bogus"]), 2);
}

fn assert_nothing_listed(policy: &Path) {
    let list = catalog_json(policy);
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");
}

#[test]
fn missing_folder_and_unwritable_store_exit_1_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"{}/does-not-exist\"]\n",
            local_store(&repo),
            dir.path().display()
        ),
    );
    let o = cexdr(&["--policy", p(&policy), "backup", "config"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("does-not-exist") && stderr(&o).contains("No such file"),
        "{}",
        stderr(&o)
    );
    assert_nothing_listed(&policy);

    // A store path below a regular file can never be created.
    let src = dir.path().join("src");
    make_tree(&src);
    fs::write(dir.path().join("plainfile"), "x").unwrap();
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}{}",
            local_store(&dir.path().join("plainfile/repo")),
            files_job(&src, "")
        ),
    );
    let o = cexdr(&["--policy", p(&policy), "backup", "config"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("not writable"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_missing_bucket_and_missing_credentials_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}{}",
            s3_store("no-such-bucket-here", ""),
            files_job(&src, "")
        ),
    );
    let pol = policy.clone();
    let o = tokio::task::spawn_blocking(move || cexdr(&["--policy", p(&pol), "backup", "config"]))
        .await
        .unwrap();
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("bucket no-such-bucket-here does not exist"),
        "{}",
        stderr(&o)
    );

    // No credentials anywhere in the chain: a clear error, not a hang.
    let (_c, bucket) = s3_bucket("nocreds").await;
    let policy = write_policy(
        dir.path(),
        &format!("{}{}", s3_store(&bucket, ""), files_job(&src, "")),
    );
    let o = tokio::task::spawn_blocking(move || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cexdr"));
        c.args(["--policy", p(&policy), "backup", "config"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c.output().unwrap()
    })
    .await
    .unwrap();
    assert_code(&o, 1);
    assert!(
        stderr(&o).to_lowercase().contains("credentials"),
        "{}",
        stderr(&o)
    );
}

/// `mib` MiB of written (not sparse) zeros: slow enough to interrupt.
fn dense_file(path: &Path, mib: usize) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
}

/// A small tmpfs: the store fills up in the middle of the artifact.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&path).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount (tests run as root, as CI does)");
        assert!(
            st.success(),
            "mounting a tmpfs failed; the full-disk test needs root"
        );
        Tmpfs(path)
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_exits_1_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let mnt = Tmpfs::mount(dir.path().join("small"), "1m");
    let repo = mnt.0.join("repo");
    // geo.dat (3.5 MB of noise) cannot fit compressed into 1 MiB.
    let policy = write_policy(
        dir.path(),
        &format!("{}{}", local_store(&repo), files_job(&src, "")),
    );
    let o = cexdr(&["--policy", p(&policy), "backup", "config"]);
    assert_code(&o, 1);
    // The store's error, with the store, the key and the cause; not the
    // source's "the consumer of the stream went away".
    let err = stderr(&o);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&format!("store local:{}", repo.display())),
        "{err}"
    );
    assert!(
        err.contains("put config/") && err.contains("/files.tar.gz"),
        "{err}"
    );
    assert!(!err.contains("went away"), "{err}");
    let left: Vec<_> = walk(&repo)
        .into_iter()
        .filter(|p| fs::metadata(repo.join(p)).unwrap().is_file())
        .collect();
    assert!(left.is_empty(), "files left on the full store: {left:?}");
}

#[test]
fn files_changing_during_the_backup_become_manifest_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let log = src.join("nginx/access.log");
    fs::write(&log, vec![b'a'; 40 << 20]).unwrap();
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}{}",
            local_store(&dir.path().join("repo")),
            files_job(&src, "")
        ),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_all(b"GET /\n").unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let o = cexdr(&["--policy", p(&policy), "backup", "config"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_code(&o, 0);
    let b = only_backup(&policy);
    let warnings = b["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("access.log changed while it was read")),
        "{warnings:?}"
    );
    assert!(stdout(&o).contains("warnings"), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_mid_upload_aborts_the_multipart_upload_and_exits_130() {
    let (client, bucket) = s3_bucket("sigint").await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    fs::create_dir_all(&src).unwrap();
    // Written zeros: a sparse file would now be archived as holes, in a blink.
    dense_file(&src.join("zeros"), 400);
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}part-size = \"5MiB\"\n\n[[job]]\nname = \"big\"\nkind = \"files\"\npaths = [\"{}\"]\ncompression = \"none\"\n",
            s3_store(&bucket, ""),
            src.display()
        ),
    );
    let child = cexdr_command(&["--policy", p(&policy), "backup", "big"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a multipart upload is really in flight.
    let (c, b) = (&client, bucket.as_str());
    let seen = poll_async(300, Duration::from_millis(50), move || async move {
        (!multipart_uploads(c, b).await.is_empty()).then_some(())
    })
    .await
    .is_some();
    assert!(seen, "no multipart upload started");
    let out = tokio::task::spawn_blocking(move || interrupt(child))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_no_multipart_upload(&client, &bucket, "upload not aborted").await;
    let objs = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        objs.contents().is_empty(),
        "objects left: {:?}",
        objs.contents()
    );
}

/// A second moto that enforces authentication (INITIAL_NO_AUTH_ACTION_COUNT=0),
/// started on a free port and killed at the end.
struct AuthMoto(std::process::Child, u16);
impl AuthMoto {
    fn start() -> AuthMoto {
        let python = PathBuf::from(service("CEXDR_TEST_PYTHON"));
        let moto = python.with_file_name("moto_server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let m = AuthMoto(child, port);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto with authentication did not start");
    }
}
impl Drop for AuthMoto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn wrong_s3_credentials_exit_1_with_access_denied() {
    let moto = AuthMoto::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let store = format!(
        "[store]\nkind = \"s3\"\nbucket = \"cex\"\nendpoint = \"http://127.0.0.1:{}\"\npath-style = true\n",
        moto.1
    );
    let policy = write_policy(dir.path(), &format!("{store}{}", files_job(&src, "")));
    let o = cexdr_env(
        &["--policy", p(&policy), "backup", "config"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG"),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ],
    );
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("denied (check the AWS credentials)"), "{err}");
    assert!(!err.contains("not-the-secret"), "the secret leaked: {err}");
}

#[test]
fn ctrl_c_mid_write_to_a_local_store_leaves_no_file_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    fs::create_dir_all(&src).unwrap();
    dense_file(&src.join("zeros"), 400);
    let repo = dir.path().join("repo");
    let policy = write_policy(
        dir.path(),
        &format!("{}\n[[job]]\nname = \"big\"\nkind = \"files\"\npaths = [\"{}\"]\ncompression = \"none\"\n", local_store(&repo), src.display()),
    );
    let child = cexdr_command(&["--policy", p(&policy), "backup", "big"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the temporary file to exist, then interrupt.
    let seen = poll(400, Duration::from_millis(10), || {
        (repo.exists()
            && walk(&repo)
                .iter()
                .any(|p| p.to_string_lossy().contains(".cexdr-tmp-")))
        .then_some(())
    })
    .is_some();
    assert!(seen, "no temporary file appeared");
    let out = interrupt(child);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = walk(&repo)
        .into_iter()
        .filter(|p| repo.join(p).is_file())
        .collect();
    assert!(files.is_empty(), "left behind: {files:?}");
}
