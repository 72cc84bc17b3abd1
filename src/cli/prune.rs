//! `cexdr prune`.
use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{open_catalog_as, print_json, CliKeys};
use crate::backup::policy::Policy;
use crate::backup::{lease, prune};
use crate::error::{exit, one_line, Error, Result};

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
    let notifier = crate::backup::notifier::Notifier::for_policy(&policy, None);
    let opts = prune::Options {
        dry_run: args.dry_run,
        grace: args.grace,
        now: Utc::now(),
    };
    let mut reports = Vec::new();
    let mut code = exit::OK;
    for job in jobs {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        // A dry run changes nothing, so it needs no lease (it can preview
        // while a backup runs); a real prune holds the job's lease.
        let res = if args.dry_run {
            prune::prune_job(&catalog, job, &opts).await
        } else {
            let c = &catalog;
            let o = &opts;
            lease::with_lease(
                catalog.store().clone(),
                &job.name,
                lease::DEFAULT_TTL,
                cancel.clone(),
                |_| async move { prune::prune_job(c, job, o).await },
            )
            .await
        };
        match res {
            Ok(r) => {
                if !r.errors.is_empty() {
                    code = code.max(exit::FAILED);
                    notifier.prune_failed(&job.name, &r.errors.join("; ")).await;
                }
                if !json {
                    print!("{}", prune::render_job(&r, args.dry_run));
                }
                reports.push(r);
            }
            Err(e) if matches!(e.root(), Error::Locked { .. }) => {
                eprintln!("cexdr: {}; not pruned", one_line(&e));
                code = exit::LOCKED;
            }
            Err(e) => return Err(e.in_job(&job.name)),
        }
    }
    let prefix = args
        .job
        .as_ref()
        .map(|j| format!("{j}/"))
        .unwrap_or_default();
    let uploads = prune::stale_uploads(&catalog, &prefix, &opts).await?;
    if !uploads.errors.is_empty() {
        code = code.max(exit::FAILED);
    }
    if json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "jobs": reports,
            "stale_uploads": uploads,
        }));
    } else {
        for u in &uploads.aborted {
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
        for e in &uploads.errors {
            println!("error: {e}");
        }
    }
    Ok(code)
}
