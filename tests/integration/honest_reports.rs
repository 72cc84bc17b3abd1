//! Issue 11, "reports that say ok when they should not": a damaged folder
//! fails verify (exit 4) by name, shows in `catalog list`, counts in
//! `catalog verify-signatures`, stops prune; extreme values are usage
//! errors; a kill -9 leftover temporary file is removed by prune.
use crate::common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

fn policy(dir: &Path, keep: &str) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("app.conf"), "x = 1\n").unwrap();
    write_policy(
        dir,
        &format!(
            "{}\n[[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\nkeep = {{ {keep} }}\nverify-after-backup = false\n",
            local_store(&dir.join("repo")),
            src.display()
        ),
    )
}

fn p(policy: &Path) -> &str {
    policy.to_str().unwrap()
}

/// Files below `repo` (tolerating a store that is being written).
fn objects(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(repo)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_tampered_manifest_fails_verify_list_audit_and_prune_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "last = 1");
    for _ in 0..3 {
        assert_code(&cexdr(&["--policy", p(&policy), "backup", "cfg"]), 0);
        std::thread::sleep(Duration::from_millis(5));
    }
    let list = catalog_json(&policy);
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    // Point the middle backup's artifact outside its folder.
    let key = arr[1]["key"].as_str().unwrap().to_owned();
    let folder = key.rsplit_once('/').unwrap().0.to_owned();
    let repo = dir.path().join("repo");
    let mpath = repo.join(&folder).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
    m["artifacts"][0]["key"] = "cfg/elsewhere/files.tar.gz".into();
    fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();

    let o = cexdr(&["--policy", p(&policy), "catalog", "verify-signatures"]);
    assert_code(&o, 4);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("damaged backup folder {folder}")),
        "{out}"
    );
    assert!(out.contains("3 object(s) checked"), "{out}");

    let o = cexdr(&["--policy", p(&policy), "verify", "--all"]);
    assert_code(&o, 4);
    let out = stdout(&o);
    assert!(out.contains(&format!("{folder}: DAMAGED")), "{out}");
    assert!(out.contains("lies outside its backup folder"), "{out}");
    assert!(
        stderr(&o).contains("1 of 3 backup(s) failed verification"),
        "{}",
        stderr(&o)
    );

    let o = cexdr(&["--policy", p(&policy), "catalog", "list"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains(&format!("DAMAGED {folder}")),
        "{}",
        stdout(&o)
    );
    let list = catalog_json(&policy);
    let damaged: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["damaged"] == true)
        .collect();
    assert_eq!(damaged.len(), 1, "{list:#}");
    assert_eq!(damaged[0]["folder"], folder.as_str());
    assert!(damaged[0]["error"].as_str().unwrap().contains("outside"));

    // keep last = 1 would remove two backups around the damaged one: no.
    let before = objects(&repo);
    let o = cexdr(&["--policy", p(&policy), "prune"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains(&format!("DAMAGED {folder}")),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("nothing of job cfg deleted"),
        "{}",
        stdout(&o)
    );
    assert_eq!(objects(&repo), before);
}

#[test]
fn extreme_durations_are_usage_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "last = 1");
    for v in [
        "200000000000d",
        "18446744073709551615s",
        "99999999999999999999999w",
        "0s",
    ] {
        let o = cexdr(&["--policy", p(&policy), "prune", "--grace", v]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains("--grace"), "{v}: {}", stderr(&o));
    }
    // In a policy: file:line:key.
    let text = fs::read_to_string(&policy)
        .unwrap()
        .replace("last = 1", "within = \"200000000000d\"");
    fs::write(&policy, text).unwrap();
    let o = cexdr(&["--policy", p(&policy), "policy", "check"]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("policy.toml:") && err.contains("keep") && err.contains("out of range"),
        "{err}"
    );
}

#[test]
fn prune_removes_a_kill_9_leftover_temporary_file_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "last = 5");
    {
        use std::io::Write;
        let mut f = fs::File::create(dir.path().join("src/big")).unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..400 {
            f.write_all(&chunk).unwrap();
        }
    }
    let text = fs::read_to_string(&policy).unwrap() + "compression = \"none\"\n";
    fs::write(&policy, text).unwrap();
    let repo = dir.path().join("repo");
    let mut child = cexdr_command(&["--policy", p(&policy), "backup", "cfg"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = poll(1000, Duration::from_millis(5), || {
        objects(&repo)
            .into_iter()
            // The artifact's temporary file (the lease is written through one too).
            .find(|k| k.contains(".files.tar.cexdr-tmp-"))
    });
    let tmp = tmp.expect("no temporary file appeared");
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    assert!(repo.join(&tmp).exists(), "the kill left no temporary file");

    // The killed backup still holds the job's lease (until its TTL): the
    // job itself is not pruned (exit 3); leftover files are still looked at.
    // Younger than the grace period, a backup may still be writing it.
    let o = cexdr(&["--policy", p(&policy), "prune"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    assert!(repo.join(&tmp).exists());

    let st = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(repo.join(&tmp))
        .status()
        .unwrap();
    assert!(st.success());
    let o = cexdr(&["--policy", p(&policy), "prune", "--dry-run"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains(&format!("leftover temporary file {tmp}")),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("would be removed"), "{}", stdout(&o));
    assert!(repo.join(&tmp).exists());
    let o = cexdr(&["--policy", p(&policy), "prune"]);
    assert_code(&o, 3);
    assert!(
        stdout(&o).contains(&format!("leftover temporary file {tmp}")),
        "{}",
        stdout(&o)
    );
    assert!(!repo.join(&tmp).exists(), "{}", stdout(&o));
}
