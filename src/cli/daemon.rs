//! `cexdr daemon`.
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::backup::scheduler;
use crate::error::{exit, Result};

pub async fn daemon(policy: PathBuf, cancel: CancellationToken) -> Result<i32> {
    scheduler::daemon(policy, cancel, Vec::new()).await?;
    Ok(exit::OK)
}
