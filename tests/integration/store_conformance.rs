//! One conformance suite for every store (restic's backend test suite):
//! the same cases run against the in-memory, local and S3 (moto) stores.
use crate::common;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use cexdr::backup::policy::S3Spec;
use cexdr::store::{
    self, local::LocalStore, memory::MemoryStore, s3::S3Store, ByteStream, DynStore, Store,
};
use cexdr::Error;

fn chunks(data: &[u8], size: usize) -> ByteStream {
    let v: Vec<io::Result<Bytes>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(v))
}

/// A stream that yields `good` bytes, then fails.
fn failing(good: usize) -> ByteStream {
    let data = vec![7u8; good];
    let v: Vec<io::Result<Bytes>> =
        vec![Ok(Bytes::from(data)), Err(io::Error::other("source broke"))];
    Box::pin(futures::stream::iter(v))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

async fn s3_store(part_size: u64) -> (DynStore, aws_sdk_s3::Client, String) {
    let (client, bucket) = common::s3_bucket("conformance").await;
    let spec = S3Spec {
        part_size,
        upload_concurrency: 3,
        ..common::s3_spec(&bucket, "pre/fix", common::s3_endpoint())
    };
    (
        Arc::new(S3Store::connect(spec).await.unwrap()),
        client,
        bucket,
    )
}

async fn suite(store: DynStore, big: usize) {
    store.preflight().await.unwrap();

    // Round trip, small and (for S3) multipart-sized.
    for (key, n) in [
        ("a/1/small.bin", 1000usize),
        ("a/2/big.bin", big),
        ("a/3/empty.bin", 0),
    ] {
        let data = pattern(n);
        let written = store.put(key, chunks(&data, 100_003)).await.unwrap();
        assert_eq!(written, n as u64, "{key}");
        let back = store::get_bytes(store.as_ref(), key).await.unwrap();
        assert_eq!(back.len(), data.len(), "{key}");
        assert!(back == data, "{key} differs");
        assert_eq!(store.head(key).await.unwrap().unwrap().size, n as u64);
    }

    // A failing input leaves nothing under the key.
    let err = store
        .put("a/4/broken.bin", failing(big.min(3 << 20) + 17))
        .await
        .unwrap_err();
    assert!(
        cexdr::error::one_line(&err).contains("source broke"),
        "{err}"
    );
    assert!(store.head("a/4/broken.bin").await.unwrap().is_none());

    // Listing: by prefix, sorted, only complete objects.
    let keys: Vec<String> = store
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["a/1/small.bin", "a/2/big.bin", "a/3/empty.bin"]);
    let keys: Vec<String> = store
        .list("a/2")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["a/2/big.bin"]);
    assert!(store.list("zzz/").await.unwrap().is_empty());

    // Create-if-absent: the second one loses and changes nothing.
    assert!(store
        .put_if_absent("locks/job", Bytes::from_static(b"one"))
        .await
        .unwrap());
    assert!(!store
        .put_if_absent("locks/job", Bytes::from_static(b"two"))
        .await
        .unwrap());
    assert_eq!(
        store::get_bytes(store.as_ref(), "locks/job").await.unwrap(),
        b"one"
    );

    // Overwrite replaces whole.
    store.put("a/1/small.bin", chunks(b"new", 2)).await.unwrap();
    assert_eq!(
        store::get_bytes(store.as_ref(), "a/1/small.bin")
            .await
            .unwrap(),
        b"new"
    );

    // Delete, also of a missing key.
    store.delete("a/1/small.bin").await.unwrap();
    store.delete("a/1/small.bin").await.unwrap();
    assert!(store.head("a/1/small.bin").await.unwrap().is_none());
    let err = match store.get("a/1/small.bin").await {
        Ok(_) => panic!("get of a deleted key succeeded"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("a/1/small.bin"), "{err}");

    // Keys that could escape are refused before any I/O.
    for bad in ["../x", "/abs", "a//b", "a/./b"] {
        assert!(
            matches!(store.head(bad).await, Err(Error::Store { .. })),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn memory_store() {
    suite(Arc::new(MemoryStore::new()), 3 << 20).await;
}

#[tokio::test]
async fn local_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    suite(Arc::new(LocalStore::new(root.clone())), 3 << 20).await;
    // No temporary files are left behind, and modes are private.
    use std::os::unix::fs::PermissionsExt;
    for p in common::walk(&root) {
        let full = root.join(&p);
        assert!(
            !p.to_string_lossy().contains(".cexdr-tmp-"),
            "left over: {}",
            p.display()
        );
        let mode = std::fs::metadata(&full).unwrap().permissions().mode() & 0o777;
        if full.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}

#[tokio::test]
async fn s3_store_on_the_emulator() {
    // 5 MiB parts: the 12 MiB object goes up as a 3-part multipart upload.
    let (store, client, bucket) = s3_store(5 << 20).await;
    suite(store.clone(), 12 << 20).await;
    // Keys live under the configured prefix, and the failed multipart
    // upload was aborted, not left behind.
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(listed
        .contents()
        .iter()
        .all(|o| o.key().unwrap().starts_with("pre/fix/")));
    common::assert_no_multipart_upload(&client, &bucket, "multipart uploads left").await;
}

#[tokio::test]
async fn s3_missing_bucket_is_a_clear_error() {
    let spec = common::s3_spec("no-such-bucket-cexdr", "", common::s3_endpoint());
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let store = S3Store::connect(spec).await.unwrap();
    let err = store.preflight().await.unwrap_err().to_string();
    assert!(
        err.contains("bucket no-such-bucket-cexdr does not exist"),
        "{err}"
    );
}
