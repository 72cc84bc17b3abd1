//! What a store is: the `Store` trait every backend implements (objects
//! under `/`-separated keys, streamed in and out), the object types it
//! speaks in, and the helpers every backend and caller shares.
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;

pub use crate::base::ByteStream;
use crate::error::{Error, Result};

/// S3 Object Lock retention set on every artifact and manifest at upload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectLock {
    /// GOVERNANCE or COMPLIANCE.
    pub mode: String,
    pub days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Human description for messages: `local:/var/repo`, `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// Checks that the store is reachable and writable enough to start.
    async fn preflight(&self) -> Result<()>;

    /// Streams `body` to `key`. The object appears under `key` only when the
    /// whole body was written; on any error nothing is left under `key`.
    /// Returns the number of bytes stored.
    async fn put(&self, key: &str, body: ByteStream) -> Result<u64>;

    /// Creates `key` only if it does not exist yet. Returns false if it did.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool>;

    async fn get(&self, key: &str) -> Result<ByteStream>;

    /// All complete objects whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// What the store applies to every object it writes (SSE, storage
    /// class, Object Lock), for the manifest. Null when nothing.
    fn put_attributes(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Multipart uploads started before `before` and never completed nor
    /// aborted, under `prefix` (S3; a local store reports its leftover
    /// temporary files last written before `before`).
    async fn stale_uploads(
        &self,
        _prefix: &str,
        _before: DateTime<Utc>,
    ) -> Result<Vec<PendingUpload>> {
        Ok(Vec::new())
    }

    async fn abort_upload(&self, _upload: &PendingUpload) -> Result<()> {
        Ok(())
    }

    /// The Object Lock retention date of `key`, if the store has one.
    async fn locked_until(&self, _key: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(None)
    }

    /// Whether the bucket has Object Lock enabled; None for stores that
    /// have no such thing.
    async fn object_lock_enabled(&self) -> Result<Option<bool>> {
        Ok(None)
    }
}

/// `PendingUpload::upload_id` of a local store's leftover temporary file
/// (a writer killed with SIGKILL never ran its cleanup).
pub const LOCAL_TEMP_FILE: &str = "local-temp-file";

/// An incomplete multipart upload (or, on a local store, a leftover
/// temporary file) (its parts cost storage until aborted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// True for a delete refused because the object is under retention. The
/// S3 store turns Object Lock's AccessDenied into `Error::ObjectLocked`
/// (after checking the retention date); any other AccessDenied is an error.
pub fn is_locked_delete(e: &Error) -> bool {
    matches!(e.root(), Error::ObjectLocked { .. })
}

pub type DynStore = Arc<dyn Store>;

/// Keys are `/`-separated, relative, with no empty, `.` or `..` component.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || key.chars().any(|c| c.is_control() || c == '\\');
    if bad {
        return Err(Error::Store {
            store: "-".into(),
            op: "check",
            key: key.escape_debug().to_string(),
            msg: "invalid object key".into(),
        });
    }
    Ok(())
}

/// Reads a whole (small) object: manifests, leases, verification records.
pub async fn get_bytes(store: &dyn Store, key: &str) -> Result<Vec<u8>> {
    let mut s = store.get(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| Error::io(format!("reading {key}"), e))?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub async fn put_bytes(store: &dyn Store, key: &str, data: Vec<u8>) -> Result<u64> {
    let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(Bytes::from(data)) }));
    store.put(key, body).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_checked() {
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\nb", "a\\b"] {
            assert!(super::check_key(bad).is_err(), "{bad:?}");
        }
        super::check_key("job/2026/11/25/id/manifest.json").unwrap();
    }
}
