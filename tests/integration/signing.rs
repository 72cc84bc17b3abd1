//! The signed catalog: tampering, deletions and unsigned entries are all
//! reported by `catalog verify-signatures`; prune records explain gaps.
use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use serde_json::Value;

struct Setup {
    _dir: tempfile::TempDir,
    policy: PathBuf,
    repo: PathBuf,
    key: PathBuf,
}

fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let o = cexdr(&["catalog", "keygen", "--out", key.to_str().unwrap()]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("public key"), "{}", stdout(&o));
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.conf"), "a").unwrap();
    let repo = dir.path().join("repo");
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}signing-key-file = \"{}\"\n\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"{}\"]\nverify-after-backup = false\n",
            local_store(&repo),
            key.display(),
            src.display()
        ),
    );
    for _ in 0..n {
        assert_code(
            &cexdr(&["--policy", policy.to_str().unwrap(), "backup", "config"]),
            0,
        );
    }
    Setup {
        _dir: dir,
        policy,
        repo,
        key,
    }
}

fn audit(s: &Setup, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "--policy",
        s.policy.to_str().unwrap(),
        "catalog",
        "verify-signatures",
    ];
    args.extend_from_slice(extra);
    let o = cexdr(&args);
    (o.status.code().unwrap(), stdout(&o))
}

fn backups(s: &Setup) -> Vec<Value> {
    catalog_json(&s.policy).as_array().unwrap().clone()
}

fn folder(s: &Setup, b: &Value) -> PathBuf {
    s.repo
        .join(Path::new(b["key"].as_str().unwrap()).parent().unwrap())
}

#[test]
fn an_untouched_signed_catalog_passes_and_lists_as_signed() {
    let s = setup(3);
    let list = backups(&s);
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|b| b["signature"] == "ok"), "{list:#?}");
    // Each manifest links to the one before it.
    assert_eq!(list[1]["previous"]["id"], list[0]["id"]);
    assert_eq!(list[2]["previous"]["id"], list[1]["id"]);
    // Verification records are signed too.
    assert_code(
        &cexdr(&["--policy", s.policy.to_str().unwrap(), "verify", "--all"]),
        0,
    );
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("6 object(s) checked, 0 with findings"),
        "{out}"
    );
}

#[test]
fn an_altered_manifest_is_reported() {
    let s = setup(2);
    let b = &backups(&s)[0];
    let m = folder(&s, b).join("manifest.json");
    let text = fs::read_to_string(&m).unwrap();
    fs::write(
        &m,
        text.replace(b["sha256"].as_str().unwrap(), &"0".repeat(64)),
    )
    .unwrap();
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "{} manifest: signature altered",
            b["id"].as_str().unwrap()
        )),
        "{out}"
    );
    // The next backup's link also shows the older manifest changed.
    assert!(
        out.contains("was altered after this one was taken"),
        "{out}"
    );
}

#[test]
fn a_deleted_middle_backup_leaves_a_gap() {
    let s = setup(3);
    let list = backups(&s);
    fs::remove_dir_all(folder(&s, &list[1])).unwrap();
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "previous backup {} is missing and no prune record explains it",
            list[1]["id"].as_str().unwrap()
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prune_record_explains_the_gap() {
    let s = tokio::task::spawn_blocking(|| setup(3)).await.unwrap();
    let list = backups(&s);
    // Remove the middle backup the way prune does: a signed record first.
    let store: cexdr::store::DynStore =
        Arc::new(cexdr::store::local::LocalStore::new(s.repo.clone()));
    let signer = Arc::new(cexdr::backup::catalog::signing::Signer::load(&s.key).unwrap());
    let catalog = cexdr::backup::catalog::Catalog::new(store).with_signer(Some(signer));
    let entry = catalog.find(list[1]["id"].as_str().unwrap()).await.unwrap();
    catalog
        .record_removal(&entry, "retention: not kept by any rule")
        .await
        .unwrap();
    fs::remove_dir_all(folder(&s, &list[1])).unwrap();
    let (code, out) = tokio::task::spawn_blocking(move || audit(&s, &[]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn unsigned_and_unknown_key_entries_are_reported() {
    let s = setup(2);
    let list = backups(&s);
    fs::remove_file(folder(&s, &list[1]).join("manifest.json.sig")).unwrap();
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "{} manifest: signature unsigned",
            list[1]["id"].as_str().unwrap()
        )),
        "{out}"
    );
    assert_eq!(backups(&s)[1]["signature"], "unsigned");

    // Trusting only another key: every signed entry is by an unknown key.
    let other = s.repo.parent().unwrap().join("other.key");
    let o = cexdr(&["catalog", "keygen", "--out", other.to_str().unwrap()]);
    let public = stdout(&o).rsplit(' ').next().unwrap().trim().to_owned();
    let (code, out) = audit(&s, &["--trusted-key", &public]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "{} manifest: signature unknown-key",
            list[0]["id"].as_str().unwrap()
        )),
        "{out}"
    );
}

#[test]
fn a_manifest_pointing_outside_its_folder_is_rejected() {
    let s = setup(1);
    let b = &backups(&s)[0];
    let m = folder(&s, b).join("manifest.json");
    let text = fs::read_to_string(&m).unwrap();
    let key = b["key"].as_str().unwrap();
    fs::write(&m, text.replace(key, "otherjob/2026/01/01/x/files.tar.gz")).unwrap();
    // Not listed as a backup but as a damaged folder, and `show` refuses it
    // with the reason.
    let listed = backups(&s);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["damaged"], true, "{listed:?}");
    assert!(listed[0]["error"]
        .as_str()
        .unwrap()
        .contains("lies outside its backup folder"));
    let o = cexdr(&[
        "--policy",
        s.policy.to_str().unwrap(),
        "catalog",
        "show",
        b["id"].as_str().unwrap(),
    ]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("lies outside its backup folder"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn prune_leaves_signed_records_that_keep_the_chain_whole() {
    let s = setup(0);
    let text = std::fs::read_to_string(&s.policy).unwrap();
    std::fs::write(&s.policy, format!("{text}keep = {{ last = 1 }}\n")).unwrap();
    for _ in 0..3 {
        assert_code(
            &cexdr(&["--policy", s.policy.to_str().unwrap(), "backup", "config"]),
            0,
        );
    }
    assert_code(
        &cexdr(&["--policy", s.policy.to_str().unwrap(), "prune"]),
        0,
    );
    assert_eq!(backups(&s).len(), 1);
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, 0, "{out}");
    // Without the prune records, the same catalog shows the gap.
    std::fs::remove_dir_all(s.repo.join("config/pruned")).unwrap();
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("no prune record explains it"), "{out}");
}
