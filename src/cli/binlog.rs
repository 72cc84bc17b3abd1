//! `cexdr binlog archive|verify`: the continuous binlog archive (docs/pitr.md).
use std::path::{Path, PathBuf};

use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use crate::backup::policy::Policy;
use crate::cli::keys::{open_catalog, open_catalog_as, CliKeys};
use crate::cli::output::print_json;
use crate::error::{exit, Error, Result};

#[derive(Debug, Subcommand)]
pub enum BinlogCmd {
    /// Archive one job's binlog in the foreground until SIGTERM / Ctrl-C.
    Archive {
        job: String,
        /// How long a killed archiver blocks the next one on this job.
        #[arg(long, default_value = "30s", value_parser = crate::base::parse_duration)]
        lease_ttl: std::time::Duration,
    },
    /// Re-read every archived segment (SHA-256, size, whole events) and check
    /// the archive's continuity; exit 4 on a damaged segment or a gap.
    Verify { job: String },
}

pub async fn binlog(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    cmd: BinlogCmd,
    metrics_file: Option<PathBuf>,
    cancel: CancellationToken,
) -> Result<i32> {
    match cmd {
        BinlogCmd::Verify { job } => {
            let policy = Policy::load(policy_file)?;
            let job = policy.job(&job)?;
            let catalog = open_catalog(&policy, keys).await?;
            let (checks, report) =
                crate::backup::pitr::verify(&catalog, &job.name, policy.signing_key_file.is_some())
                    .await?;
            let breaks: Vec<_> = report
                .gaps
                .iter()
                .filter(|g| crate::backup::pitr::is_break(&g.kind))
                .collect();
            let bad = checks.iter().filter(|c| !c.ok).count();
            if json {
                print_json(&serde_json::json!({"segments": checks, "report": report}));
            } else {
                for c in checks.iter().filter(|c| !c.ok) {
                    println!(
                        "segment {} ({}): FAILED: {}",
                        c.seq,
                        c.key,
                        c.error.as_deref().unwrap_or("")
                    );
                }
                print!("{}", crate::backup::binlog::window::render(&report));
                println!(
                    "{} segment(s) checked, {bad} damaged, {} break(s) in the archive",
                    checks.len(),
                    breaks.len()
                );
            }
            if bad > 0 || !breaks.is_empty() {
                return Err(Error::VerifyFailed {
                    failed: bad + breaks.len(),
                    total: checks.len(),
                });
            }
            Ok(exit::OK)
        }
        BinlogCmd::Archive { job, lease_ttl } => {
            let policy = Policy::load(policy_file)?;
            let job = policy.job(&job)?;
            let catalog = open_catalog_as(&policy, keys, true).await?;
            let stats = std::sync::Arc::new(crate::backup::binlog::archive::Stats::default());
            crate::backup::pitr::archive(&catalog, job, lease_ttl, stats, metrics_file, cancel)
                .await?;
            Ok(exit::OK)
        }
    }
}
