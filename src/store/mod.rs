//! Where artifacts and manifests live. A store knows nothing about backups:
//! it moves byte streams under keys. One function (`build`) picks the backend.
//! The contract lives in `object` (re-exported here); each backend is one
//! file beside it.
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
pub use object::{
    check_key, get_bytes, is_locked_delete, put_bytes, ByteStream, DynStore, ObjectLock,
    ObjectMeta, PendingUpload, Store, LOCAL_TEMP_FILE,
};
pub use s3::S3Spec;

#[derive(Debug, Clone, PartialEq)]
pub enum StoreSpec {
    Local { path: PathBuf },
    S3(S3Spec),
}

pub mod local;
pub mod memory;
pub mod object;
pub mod s3;

/// The one place that chooses a backend.
pub async fn build(spec: &StoreSpec) -> Result<DynStore> {
    Ok(match spec {
        StoreSpec::Local { path } => Arc::new(local::LocalStore::new(path.clone())),
        StoreSpec::S3(s3spec) => Arc::new(s3::S3Store::connect(s3spec.clone()).await?),
    })
}
