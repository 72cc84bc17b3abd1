//! Issue 11: a config tree with every file kind tar keeps, restored by
//! `cexdr restore` and by GNU tar (`tar --xattrs --acls -xpSf`) from the
//! same artifact, compared with `stat`, `getfattr`, `getfacl` and bytes.
use crate::common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn sh(cmd: &str, dir: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What both restores must agree on, path by path.
fn describe(root: &Path) -> String {
    // %h link count, %b allocated blocks, %t/%T device numbers, %y mtime with nanoseconds.
    let stat = sh(
        "find . -mindepth 1 | LC_ALL=C sort | xargs -d '\\n' stat -c '%n %F uid=%u gid=%g mode=%a links=%h size=%s blocks=%b dev=%t,%T mtime=%y'",
        root,
    );
    let xattrs = sh(
        "getfattr -R -h -d -m - . 2>/dev/null | grep -v '^$' || true",
        root,
    );
    let acls = sh("getfacl -R -P -n -p . 2>/dev/null", root);
    let sums = sh(
        "find . -type f | LC_ALL=C sort | xargs -d '\\n' sha256sum",
        root,
    );
    format!("{stat}\n--- xattrs\n{xattrs}\n--- acls\n{acls}\n--- content\n{sums}")
}

fn need(tool: &str) {
    assert!(
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .status()
            .unwrap()
            .success(),
        "{tool} is missing: scripts/dev-services installs it (Debian packages attr, acl)"
    );
}

fn make_tree(d: &Path) {
    fs::create_dir_all(d.join("conf.d")).unwrap();
    let run = |c: &str| sh(c, d);
    run("printf 'requirepass x\\n' > redis.conf && chown 999:998 redis.conf && chmod 0640 redis.conf");
    run("printf 'shared\\n' > conf.d/a.conf && ln conf.d/a.conf conf.d/b.conf && ln conf.d/a.conf third-link");
    run("printf 'attr\\n' > tagged && setfattr -n user.origin -v cexdr tagged && setfattr -n user.bin -v 0x00ff0a01 tagged");
    run("printf 'acl\\n' > acl.conf && setfacl -m u:1234:rw-,g:55:r-- acl.conf");
    run("setfacl -d -m u:1234:r-x,g::r-x conf.d && chown 4242:4243 conf.d");
    run("mkfifo pipe && chown 7:8 pipe && chmod 0620 pipe");
    run("mknod null-dev c 1 3 && mknod loop-dev b 7 200");
    // 1 GiB apparent, two data regions, a trailing hole.
    run("truncate -s 1G sparse.img && printf 'head' | dd of=sparse.img conv=notrunc status=none && printf 'middle' | dd of=sparse.img bs=1 seek=300000000 conv=notrunc status=none");
    run("printf '#!/bin/sh\\n' > setuid.sh && chown 1000:1000 setuid.sh && chmod 4755 setuid.sh");
    run("ln -s redis.conf link && chown -h 4242:4243 link");
    run("touch -h -d '2024-02-29 12:34:56.123456789' link redis.conf conf.d/a.conf pipe");
    run("touch -d '2023-01-02 03:04:05.987654321' conf.d");
}

#[test]
fn restore_matches_gnu_tar_for_every_file_kind() {
    need("getfattr");
    need("setfacl");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"0 3 * * *\"\n",
            local_store(&dir.path().join("repo")),
            src.display()
        ),
    );
    let o = cexdr(&["--policy", policy.to_str().unwrap(), "backup", "cfg"]);
    assert_code(&o, 0);
    let list = catalog_json(&policy);
    let b = &list.as_array().unwrap()[0];
    let details = &b["details"];
    let counts = details.to_string();
    // the extract's counters land in the manifest details
    for (k, want) in [
        ("hard_links", 2),
        ("special_files", 3),
        ("sparse_files", 1),
        ("symlinks", 1),
        ("acls", 2),
    ] {
        assert!(
            counts.contains(&format!("\"{k}\":{want}")),
            "{k} != {want} in {counts}"
        );
    }
    assert!(counts.contains("\"xattrs\":2"), "{counts}");
    // 1 GiB of holes is not 1 GiB stored.
    assert!(b["stored_bytes"].as_u64().unwrap() < 1 << 20, "{b:#}");

    let ours = dir.path().join("ours");
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        b["id"].as_str().unwrap(),
        "--to",
        ours.to_str().unwrap(),
    ]);
    assert_code(&o, 0);

    let theirs = dir.path().join("theirs");
    fs::create_dir_all(&theirs).unwrap();
    let artifact = dir.path().join("repo").join(b["key"].as_str().unwrap());
    sh(
        &format!(
            "gzip -dc '{}' | tar --xattrs --acls -xpSf - -C '{}'",
            artifact.display(),
            theirs.display()
        ),
        dir.path(),
    );
    let rel = src.strip_prefix("/").unwrap();
    let (a, b2) = (describe(&ours.join(rel)), describe(&theirs.join(rel)));
    assert_eq!(a, b2, "cexdr restore differs from GNU tar's");

    // And both equal the source where a fresh restore can: spot checks.
    let (s, r) = (src.as_path(), ours.join(rel));
    for name in ["redis.conf", "setuid.sh", "conf.d", "pipe", "link"] {
        let (ms, mr) = (
            fs::symlink_metadata(s.join(name)).unwrap(),
            fs::symlink_metadata(r.join(name)).unwrap(),
        );
        assert_eq!(
            (ms.uid(), ms.gid(), ms.mode(), ms.mtime(), ms.mtime_nsec()),
            (mr.uid(), mr.gid(), mr.mode(), mr.mtime(), mr.mtime_nsec()),
            "{name}"
        );
    }
    let m = fs::metadata(r.join("conf.d/a.conf")).unwrap();
    assert_eq!(m.nlink(), 3);
    assert_eq!(m.ino(), fs::metadata(r.join("third-link")).unwrap().ino());
    let sp = fs::metadata(r.join("sparse.img")).unwrap();
    assert_eq!(sp.len(), 1 << 30);
    assert!(
        sp.blocks() < 1024,
        "sparse.img restored with {} blocks",
        sp.blocks()
    );
    assert_eq!(
        sh("getfattr -n user.bin -e hex tagged", &r),
        sh("getfattr -n user.bin -e hex tagged", s)
    );
    assert_eq!(
        sh("getfacl -n -p acl.conf conf.d", &r),
        sh("getfacl -n -p acl.conf conf.d", s)
    );
    assert!(fs::symlink_metadata(r.join("null-dev"))
        .unwrap()
        .file_type()
        .is_char_device_like());
}

trait CharDev {
    fn is_char_device_like(&self) -> bool;
}
impl CharDev for fs::FileType {
    fn is_char_device_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_char_device(self)
    }
}

/// As a non-root user: everything the user may is restored (content,
/// modes, links, FIFOs, user xattrs), ownership is not, with ONE warning;
/// device nodes are skipped and reported by name.
#[test]
fn non_root_restore_keeps_what_it_may_and_warns_once_about_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}\n[[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            local_store(&dir.path().join("repo")),
            src.display()
        ),
    );
    assert_code(
        &cexdr(&["--policy", policy.to_str().unwrap(), "backup", "cfg"]),
        0,
    );
    let id = catalog_json(&policy)[0]["id"].as_str().unwrap().to_owned();
    // Let uid 65534 read the store and write the target's parent.
    sh("chmod -R a+rX . && mkdir -m 0777 out", dir.path());
    let target = dir.path().join("out/restored");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_cexdr"))
        .args(["--policy", policy.to_str().unwrap(), "restore", &id, "--to"])
        .arg(&target)
        .output()
        .unwrap();
    assert_code(&o, 0);
    let err = stderr(&o);
    assert_eq!(err.matches("ownership not restored").count(), 1, "{err}");
    assert!(
        err.contains("null-dev (character device) not restored"),
        "{err}"
    );
    assert!(
        err.contains("loop-dev (block device) not restored"),
        "{err}"
    );
    let r = target.join(src.strip_prefix("/").unwrap());
    let m = fs::metadata(r.join("redis.conf")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (65534, 0o640));
    assert_eq!(
        fs::read(r.join("redis.conf")).unwrap(),
        fs::read(src.join("redis.conf")).unwrap()
    );
    assert_eq!(fs::metadata(r.join("conf.d/a.conf")).unwrap().nlink(), 3);
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(r.join("pipe")).unwrap().file_type()
    ));
    assert_eq!(
        sh("getfattr -n user.origin --only-values tagged", &r),
        "cexdr"
    );
    assert!(fs::metadata(r.join("sparse.img")).unwrap().blocks() < 1024);
}
