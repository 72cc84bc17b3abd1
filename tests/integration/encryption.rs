//! Client-side age encryption end to end: unreadable without the identity,
//! readable by the stock `age` CLI with it, verify with and without it.
use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

const MARKER: &str = "KYC-MARKER-4f1c2b: passport 12345678";

fn keygen(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("backup.key");
    let o = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (Debian package age)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(&key).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned();
    (key, public)
}

#[test]
fn encrypted_backup_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let src = dir.path().join("src/etc");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("kyc.conf"), MARKER.repeat(50)).unwrap();
    let repo = dir.path().join("repo");
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}encryption = {{ recipients = [\"{public}\"] }}\n\n[[job]]\nname = \"kyc\"\nkind = \"files\"\npaths = [\"{}\"]\ncompression = \"none\"\nverify-after-backup = false\n",
            local_store(&repo),
            src.display()
        ),
    );
    let pol = policy.to_str().unwrap();
    assert_code(&cexdr(&["--policy", pol, "backup", "kyc"]), 0);
    let list = catalog_json(&policy);
    let b = &list[0];
    assert_eq!(b["encryption"]["scheme"], "age");
    assert_eq!(b["encryption"]["recipients"][0], public.as_str());
    let artifact = repo.join(b["key"].as_str().unwrap());
    let bytes = fs::read(&artifact).unwrap();
    // Even uncompressed, the marker is nowhere in the stored bytes.
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));

    // The stock age CLI decrypts it with the identity: a plain tar inside.
    let o = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o
        .stdout
        .windows(MARKER.len())
        .any(|w| w == MARKER.as_bytes()));

    // verify without the identity: checksum only, and it says so.
    let id = b["id"].as_str().unwrap();
    assert_code(&cexdr(&["--policy", pol, "verify", id]), 0);
    let show = cexdr(&["--policy", pol, "catalog", "show", id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let checks = v["verifications"][0]["checks"].to_string();
    assert!(checks.contains("content NOT checked"), "{checks}");

    // With it: decrypted, decompressed, tar walked.
    let o = cexdr(&[
        "--policy",
        pol,
        "--identity",
        key.to_str().unwrap(),
        "verify",
        id,
    ]);
    assert_code(&o, 0);
    let show = cexdr(&["--policy", pol, "catalog", "show", id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let checks = v["verifications"][1]["checks"].to_string();
    assert!(
        checks.contains("decrypted") && checks.contains("tar structure"),
        "{checks}"
    );

    // Restore needs the identity.
    let out = dir.path().join("out");
    let o = cexdr(&[
        "--policy",
        pol,
        "restore",
        id,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_code(&o, 6);
    assert!(stderr(&o).contains("--identity"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = cexdr(&[
        "--policy",
        pol,
        "--identity",
        key.to_str().unwrap(),
        "restore",
        id,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    let restored = out.join(src.strip_prefix("/").unwrap()).join("kyc.conf");
    assert_eq!(fs::read_to_string(restored).unwrap(), MARKER.repeat(50));

    // A private key readable by others is refused before use.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let o = cexdr(&[
        "--policy",
        pol,
        "--identity",
        key.to_str().unwrap(),
        "verify",
        id,
    ]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("AGE-SECRET-KEY"), "{}", stderr(&o));
}

#[test]
fn passphrase_encryption_and_bad_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "secret config").unwrap();
    let repo = dir.path().join("repo");
    let job = format!(
        "\n[[job]]\nname = \"c\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        src.display()
    );
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}{job}encryption = {{ passphrase-env = \"CEXDR_TEST_PASS\" }}\n",
            local_store(&repo)
        ),
    );
    let pol = policy.to_str().unwrap();
    let env = [("CEXDR_TEST_PASS", "correct horse battery")];
    assert_code(&cexdr_env(&["--policy", pol, "backup", "c"], &env), 0);
    let id = catalog_json(&policy)[0]["id"].as_str().unwrap().to_owned();
    let out = dir.path().join("out");
    let o = cexdr_env(
        &[
            "--policy",
            pol,
            "--passphrase-env",
            "CEXDR_TEST_PASS",
            "restore",
            &id,
            "--to",
            out.to_str().unwrap(),
        ],
        &env,
    );
    assert_code(&o, 0);
    // The wrong passphrase fails cleanly.
    let o = cexdr_env(
        &[
            "--policy",
            pol,
            "--passphrase-env",
            "CEXDR_TEST_PASS",
            "verify",
            &id,
        ],
        &[("CEXDR_TEST_PASS", "wrong")],
    );
    assert_code(&o, 4);
    // Restoring with it is "cannot decrypt" (6), and leaves nothing.
    let wrong = dir.path().join("wrong");
    let o = cexdr_env(
        &[
            "--policy",
            pol,
            "--passphrase-env",
            "CEXDR_TEST_PASS",
            "restore",
            &id,
            "--to",
            wrong.to_str().unwrap(),
        ],
        &[("CEXDR_TEST_PASS", "wrong")],
    );
    assert_code(&o, 6);
    assert!(!wrong.exists());

    // A malformed recipient is a config error naming the key.
    let bad = write_policy(
        dir.path(),
        &format!(
            "{}{job}encryption = {{ recipients = [\"age1nope\"] }}\n",
            local_store(&repo)
        ),
    );
    let o = cexdr(&["--policy", bad.to_str().unwrap(), "backup", "c"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("`encryption`") && stderr(&o).contains("policy.toml:"),
        "{}",
        stderr(&o)
    );
}
