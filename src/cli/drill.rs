//! `cexdr drill JOB`: a job's restore drill now, as the daemon runs it.
use std::path::Path;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::Status;
use crate::backup::job;
use crate::backup::metrics::Metrics;
use crate::backup::policy::Policy;
use crate::cli::keys::CliKeys;
use crate::cli::output::print_json;
use crate::error::{one_line, Result};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The job whose drill runs (its `drill = {…}` table).
    pub job: String,
}

pub async fn drill(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    args: DrillArgs,
    metrics: Option<Metrics>,
    cancel: CancellationToken,
) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let j = policy.job(&args.job)?;
    job::drill_target(j)?;
    // A bad signing key fails before any job starts.
    policy.signer()?;
    let env = keys.job_env(&policy, metrics).await?;
    let out = job::drill_job(&env, j, cancel).await;
    let code = out.exit_code();
    match &out.record {
        Ok(v) => {
            if json {
                print_json(v);
            } else if v.status == Status::Ok {
                println!(
                    "{} {}: restore drill ok: restored in {} (RTO); {}",
                    v.job,
                    v.backup_id,
                    crate::backup::report::secs(v.details["seconds"].as_f64().unwrap_or(0.0)),
                    v.checks.join("; ")
                );
            } else {
                println!(
                    "{} {}: restore drill FAILED: {}",
                    v.job,
                    v.backup_id,
                    v.error.as_deref().unwrap_or("failed")
                );
            }
        }
        Err(e) => eprintln!("cexdr: error: {}", one_line(e)),
    }
    Ok(code)
}
