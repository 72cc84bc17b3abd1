//! `cexdr backup JOB… | --all`.
use std::path::Path;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::Status;
use crate::backup::job;
use crate::backup::metrics::Metrics;
use crate::backup::policy::Policy;
use crate::cli::keys::CliKeys;
use crate::cli::output::{human_bytes, print_json};
use crate::error::{one_line, Error, Result};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Jobs to run, by name.
    pub jobs: Vec<String>,
    /// Run every job of the policy.
    #[arg(long, conflicts_with = "jobs")]
    pub all: bool,
    /// An incremental physical backup: the pages changed since the job's
    /// newest physical backup (method = "physical" jobs only).
    #[arg(long)]
    pub incremental: bool,
}

pub async fn backup(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    args: BackupArgs,
    metrics: Option<Metrics>,
    cancel: CancellationToken,
) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let selected: Vec<_> = if args.all {
        policy.jobs.iter().collect()
    } else if args.jobs.is_empty() {
        return Err(Error::Usage("name at least one job, or --all".into()));
    } else {
        args.jobs
            .iter()
            .map(|j| policy.job(j))
            .collect::<Result<_>>()?
    };
    let incremental: Vec<_>;
    let selected: Vec<_> = if args.incremental {
        incremental = selected
            .iter()
            .map(|j| job::incremental(j))
            .collect::<Result<Vec<_>>>()?;
        incremental.iter().collect()
    } else {
        selected
    };
    // A bad signing key fails before any job starts.
    policy.signer()?;
    let env = keys.job_env(&policy, metrics).await?;
    let (outcomes, code) = job::run_jobs(&env, &selected, cancel).await;
    let mut done = Vec::new();
    for o in outcomes {
        match o.backup {
            Ok(m) => {
                if let Some(v) = o.read_back.as_ref().filter(|v| v.status == Status::Failed) {
                    eprintln!(
                        "cexdr: error: job {}: backup {} was written but its read-back FAILED: {}",
                        m.job,
                        m.id,
                        v.error.as_deref().unwrap_or("failed")
                    );
                } else if !json {
                    println!(
                        "{}: backup {} done: {} read, {} stored, sha256 {}{}{}",
                        m.job,
                        m.id,
                        human_bytes(m.source_bytes),
                        human_bytes(m.stored_bytes),
                        m.sha256,
                        if m.warnings.is_empty() {
                            String::new()
                        } else {
                            format!(" ({} warnings)", m.warnings.len())
                        },
                        if o.read_back.is_some() {
                            "; read back: ok"
                        } else {
                            ""
                        }
                    );
                }
                done.push(m);
            }
            Err(e) => eprintln!("cexdr: error: {}", one_line(&e)),
        }
    }
    if json {
        print_json(&done);
    }
    Ok(code)
}
