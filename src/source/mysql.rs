//! MySQL / MariaDB logical dumps (issue #3).
use async_trait::async_trait;

use super::{Opened, Source};
use crate::catalog::{Catalog, Manifest, Verification};
use crate::error::{Error, Result};
use crate::policy::MysqlSpec;
use crate::restore::RestoreOptions;
use crate::store::ByteStream;

pub struct MysqlSource {
    job: String,
    #[allow(dead_code)]
    spec: MysqlSpec,
}

impl MysqlSource {
    pub fn new(job: String, spec: MysqlSpec) -> Self {
        MysqlSource { job, spec }
    }
}

#[async_trait]
impl Source for MysqlSource {
    async fn open(&self) -> Result<Opened> {
        Err(Error::Usage(format!(
            "job {}: mysql backups are not available in this build",
            self.job
        )))
    }
}

pub async fn validate(stream: ByteStream) -> Result<(u64, Vec<String>)> {
    super::drain(stream).await.map(|n| (n, vec![]))
}

/// `cexdr restore ID --to TARGET` for mysql backups.
pub async fn restore(
    _catalog: &Catalog,
    m: &Manifest,
    _to: &str,
    _opts: &RestoreOptions,
) -> Result<String> {
    Err(Error::Restore(format!(
        "restoring mysql backup {} is not available in this build",
        m.id
    )))
}

/// `cexdr verify ID --restore-test TARGET`: restore into a scratch target,
/// compare with the manifest, clean up; the caller records the result.
pub async fn restore_test(
    _catalog: &Catalog,
    m: &Manifest,
    _target: Option<&str>,
) -> Result<Verification> {
    Err(Error::Restore(format!(
        "restore tests of mysql backup {} are not available in this build",
        m.id
    )))
}
