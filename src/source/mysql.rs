//! MySQL / MariaDB logical dumps (issue #3).
use async_trait::async_trait;

use super::{Opened, Source};
use crate::error::{Error, Result};
use crate::policy::MysqlSpec;
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
