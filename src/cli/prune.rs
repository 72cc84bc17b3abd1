//! `cexdr prune`.
use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::backup::job;
use crate::backup::plan::prune;
use crate::backup::policy::Policy;
use crate::cli::keys::{open_catalog_as, CliKeys};
use crate::cli::output::print_json;
use crate::error::Result;
use crate::store::LOCAL_TEMP_FILE;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this job (default: every job of the policy).
    #[arg(long)]
    pub job: Option<String>,
    /// Print the plan; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Folders without a manifest (and multipart uploads) younger than
    /// this may belong to a running backup and are left alone.
    #[arg(long, default_value = "24h", value_parser = crate::backup::policy::parse_duration)]
    pub grace: std::time::Duration,
}

pub async fn prune_command(
    policy_file: &std::path::Path,
    json: bool,
    args: PruneArgs,
    cancel: CancellationToken,
) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let jobs: Vec<&crate::backup::policy::Job> = match &args.job {
        Some(j) => vec![policy.job(j)?],
        None => policy.jobs.iter().collect(),
    };
    let catalog = open_catalog_as(&policy, &CliKeys::none(), !args.dry_run).await?;
    let env = CliKeys::none().job_env(&policy, None).await?;
    let opts = prune::Options {
        dry_run: args.dry_run,
        grace: args.grace,
        now: Utc::now(),
    };
    let prefix = args
        .job
        .as_ref()
        .map(|j| format!("{j}/"))
        .unwrap_or_default();
    let run = job::prune_jobs(&env, &catalog, &jobs, &opts, &prefix, cancel).await?;
    for l in &run.locked {
        eprintln!("cexdr: {l}");
    }
    if json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "jobs": run.reports,
            "binlog": run.binlog,
            "stale_uploads": run.uploads,
        }));
    } else {
        for r in &run.reports {
            print!("{}", prune::render_job(r, args.dry_run));
        }
        for br in &run.binlog {
            print!(
                "{}",
                crate::backup::plan::binlog_retention::render(br, args.dry_run)
            );
        }
        for u in run
            .uploads
            .aborted
            .iter()
            .filter(|u| u.upload_id == LOCAL_TEMP_FILE)
        {
            println!(
                "leftover temporary file {} (last written {}): {}",
                u.key,
                u.initiated
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "?".into()),
                if args.dry_run {
                    "would be removed"
                } else {
                    "removed"
                }
            );
        }
        for u in run
            .uploads
            .aborted
            .iter()
            .filter(|u| u.upload_id != LOCAL_TEMP_FILE)
        {
            println!(
                "stale upload {} (started {}): {}",
                u.key,
                u.initiated
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "?".into()),
                if args.dry_run {
                    "would be aborted"
                } else {
                    "aborted"
                }
            );
        }
        for e in &run.uploads.errors {
            println!("error: {e}");
        }
    }
    Ok(run.code)
}
