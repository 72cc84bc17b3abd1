//! Redis RDB snapshots (issue #4).
use async_trait::async_trait;

use super::{Opened, Source};
use crate::error::{Error, Result};
use crate::policy::RedisSpec;
use crate::store::ByteStream;

pub struct RedisSource {
    job: String,
    #[allow(dead_code)]
    spec: RedisSpec,
}

impl RedisSource {
    pub fn new(job: String, spec: RedisSpec) -> Self {
        RedisSource { job, spec }
    }
}

#[async_trait]
impl Source for RedisSource {
    async fn open(&self) -> Result<Opened> {
        Err(Error::Usage(format!(
            "job {}: redis backups are not available in this build",
            self.job
        )))
    }
}

pub async fn validate(stream: ByteStream) -> Result<(u64, Vec<String>)> {
    super::drain(stream).await.map(|n| (n, vec![]))
}
