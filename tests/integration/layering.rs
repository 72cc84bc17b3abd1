//! The dependency rule (docs/architecture.md) holds for the tree, and its
//! check fails, naming the file and the import, on a wrong import.
use std::path::Path;
use std::process::Command;

fn layering(src: &Path) -> std::process::Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/layering"))
        .arg(src)
        .output()
        .expect("run scripts/layering")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn the_tree_keeps_the_rule() {
    let o = layering(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_wrong_import_fails_the_check() {
    let cases = [
        // A flow importing the other flow.
        (
            "backup/catalog/mod.rs",
            "use crate::failover::journal::Journal;",
            "backup may not import failover",
        ),
        // A lower layer importing a flow.
        (
            "store/local.rs",
            "use crate::backup::policy::Policy;",
            "store may not import backup",
        ),
        // Neighbours on one layer.
        (
            "pipeline/mod.rs",
            "use crate::store::DynStore;",
            "pipeline may not import store",
        ),
        // A source importing the policy.
        (
            "backup/source/files.rs",
            "use crate::backup::policy::Job;",
            "backup::source may not import backup::policy",
        ),
        // The layers inside backup/: the catalog imports nothing above it.
        (
            "backup/catalog/mod.rs",
            "use crate::backup::source::files::FilesSpec;",
            "backup::catalog may not import backup::source",
        ),
        // Sources do not import the archive above them.
        (
            "backup/source/files.rs",
            "use crate::backup::binlog::window::Base;",
            "backup::source may not import backup::binlog",
        ),
        // Only orchestration reads the policy.
        (
            "backup/binlog/replay.rs",
            "use crate::backup::policy::Policy;",
            "backup::binlog may not import backup::policy",
        ),
        // Planning never calls orchestration.
        (
            "backup/plan/prune.rs",
            "use crate::backup::job::JobEnv;",
            "backup::plan may not import backup::job",
        ),
        // Neighbours in orchestration may import each other, but never in a circle.
        (
            "backup/lease.rs",
            "use crate::backup::job::JobEnv;",
            "import cycle: backup::job (src/backup/job.rs) <-> backup::lease",
        ),
        // A parent and its child in a circle: the child importing the
        // parent's registry while the parent names the child.
        (
            "store/local.rs",
            "use super::StoreSpec;",
            "import cycle: store (src/store/mod.rs) <-> store::local",
        ),
        // A group import is read too.
        (
            "base/mod.rs",
            "use crate::{error, notify::Message};",
            "base may not import notify",
        ),
    ];
    for (file, line, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &src);
        let path = src.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{line}\n{text}")).unwrap();
        let o = layering(&src);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{file}: {line}\n{out}");
        assert!(
            out.contains(expect) && out.contains(file),
            "{file}: {line}\n{out}"
        );
    }
}
