//! S3 Object Lock and SSE on the emulator: retention is set on every
//! uploaded object, recorded in the manifest, and deletes are refused.
use crate::common;

use std::sync::Arc;

use cexdr::backup::policy::{ObjectLock, S3Spec};
use cexdr::store::{s3::S3Store, Store};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn locked_uploads_and_refused_deletes() {
    let (client, _) = s3_bucket("unused").await;
    let bucket = format!("locked-{:08x}", rand::random::<u32>());
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.conf"), "a").unwrap();
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}sse = \"AES256\"\nobject-lock = {{ mode = \"GOVERNANCE\", days = 3 }}\n\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            s3_store(&bucket, "p"),
            src.display()
        ),
    );
    let pol = policy.clone();
    let o = tokio::task::spawn_blocking(move || {
        cexdr(&["--policy", pol.to_str().unwrap(), "policy", "check"])
    })
    .await
    .unwrap();
    assert_code(&o, 0);
    assert!(!stderr(&o).contains("no Object Lock"), "{}", stderr(&o));
    let pol = policy.clone();
    let o = tokio::task::spawn_blocking(move || {
        cexdr(&["--policy", pol.to_str().unwrap(), "backup", "config"])
    })
    .await
    .unwrap();
    assert_code(&o, 0);
    let b = catalog_json(&policy)[0].clone();
    assert_eq!(b["storage"]["object_lock"]["mode"], "GOVERNANCE");
    assert_eq!(b["storage"]["sse"], "AES256");

    let now = chrono::Utc::now().timestamp();
    for key in [
        b["key"].as_str().unwrap().to_owned(),
        b["key"]
            .as_str()
            .unwrap()
            .replace("files.tar.gz", "manifest.json"),
    ] {
        let h = client
            .head_object()
            .bucket(&bucket)
            .key(format!("p/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            h.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{key}"
        );
        let until = h.object_lock_retain_until_date().unwrap().secs();
        assert!(
            until > now + 2 * 86400 && until <= now + 3 * 86400 + 60,
            "{key}: {until}"
        );
    }

    // The store refuses to delete a retained object, and says until when.
    let spec = S3Spec {
        object_lock: Some(ObjectLock {
            mode: "GOVERNANCE".into(),
            days: 3,
        }),
        ..s3_spec(&bucket, "p", s3_endpoint())
    };
    let store: Arc<dyn Store> = Arc::new(S3Store::connect(spec).await.unwrap());
    let key = b["key"].as_str().unwrap();
    let err = store.delete(key).await.unwrap_err();
    assert!(matches!(err, cexdr::Error::ObjectLocked { .. }), "{err}");
    assert!(err.to_string().contains("locked until"), "{err}");
    assert!(
        store.head(key).await.unwrap().is_some(),
        "the locked object is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_check_warns_when_the_bucket_has_no_object_lock() {
    let (_client, bucket) = s3_bucket("nolock").await;
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}object-lock = {{ mode = \"COMPLIANCE\", days = 30 }}\n\n[[job]]\nname = \"c\"\nkind = \"files\"\npaths = [\"/etc\"]\n",
            s3_store(&bucket, "")
        ),
    );
    let o = tokio::task::spawn_blocking(move || {
        cexdr(&["--policy", policy.to_str().unwrap(), "policy", "check"])
    })
    .await
    .unwrap();
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains(&format!("bucket {bucket} has no Object Lock enabled")),
        "{}",
        stderr(&o)
    );
}
