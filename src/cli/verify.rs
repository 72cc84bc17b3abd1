//! `cexdr verify`: re-read stored backups; with `--restore-test`, restore
//! into scratch and compare. With `--job` / `--all`, the jobs' binlog
//! archives too (one record each).
use std::path::Path;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{open_catalog_as, print_json, CliKeys};
use crate::backup::catalog::Entry;
use crate::backup::job;
use crate::backup::metrics::Metrics;
use crate::backup::policy::{Policy, Secret};
use crate::backup::source::ScratchTarget;
use crate::error::{exit, Error, Result};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup ids.
    pub ids: Vec<String>,
    /// Every backup of this job, and its binlog archive if it has one.
    #[arg(long, conflicts_with = "ids")]
    pub job: Option<String>,
    /// Every backup in the catalog, and every job's binlog archive.
    #[arg(long, conflicts_with_all = ["ids", "job"])]
    pub all: bool,
    /// Also restore into a scratch target and compare with the manifest:
    /// a MySQL URL for mysql backups; for redis backups a scratch
    /// redis-server is started on a free loopback port (no value needed).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub restore_test: Option<String>,
}

pub async fn verify(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    args: VerifyArgs,
    metrics: Option<Metrics>,
    cancel: CancellationToken,
) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let catalog = open_catalog_as(&policy, keys, true).await?;
    let (entries, damaged): (Vec<Entry>, _) = if args.all {
        catalog.scan(None).await?
    } else if let Some(job) = &args.job {
        policy.job(job)?;
        catalog.scan(Some(job)).await?
    } else if !args.ids.is_empty() {
        let mut v = Vec::new();
        for id in &args.ids {
            v.push(catalog.find(id).await?);
        }
        (v, Vec::new())
    } else {
        return Err(Error::Usage("name backup ids, --job JOB or --all".into()));
    };
    let env = keys.job_env(&policy, metrics).await?;
    let target = args.restore_test.as_ref().map(|t| ScratchTarget {
        url: Some(t.clone()).filter(|t| !t.is_empty()),
        // The scratch server's password, if any.
        password: if std::env::var_os("CEXDR_RESTORE_TEST_PASSWORD").is_some() {
            Secret::Env("CEXDR_RESTORE_TEST_PASSWORD".into())
        } else {
            Secret::None
        },
        allow_source_server: true,
        ..Default::default()
    });
    let mut records =
        job::verify_backups(&env, &catalog, &entries, target.as_ref(), cancel.clone()).await?;
    // Binlog archives (segment SHA-256s, signatures, chain and continuity).
    let archive_jobs: Vec<&str> = match (&args.job, args.all) {
        (Some(j), _) => vec![j.as_str()],
        (None, true) => policy.jobs.iter().map(|j| j.name.as_str()).collect(),
        _ => Vec::new(),
    };
    let archives = crate::backup::binlog::commands::verify_archives(
        &catalog,
        &archive_jobs,
        policy.signing_key_file.is_some(),
        &cancel,
    )
    .await?;
    let archive_count = archives.len();
    records.extend(archives);
    let failed = records
        .iter()
        .filter(|v| v.status == crate::backup::catalog::Status::Failed)
        .count();
    if json {
        print_json(&records);
    } else {
        for v in &records {
            match &v.error {
                None => println!("{} {}: ok", v.job, v.backup_id),
                Some(err) => println!("{} {}: FAILED: {err}", v.job, v.backup_id),
            }
        }
    }
    // A folder that cannot be read is a failed verification, named.
    for d in &damaged {
        if json {
            eprintln!("cexdr: damaged backup folder {}: {}", d.folder, d.error);
        } else {
            println!("{}: DAMAGED: {}", d.folder, d.error);
        }
    }
    if failed + damaged.len() > 0 {
        return Err(Error::VerifyFailed {
            failed: failed + damaged.len(),
            total: entries.len() + damaged.len() + archive_count,
        });
    }
    if records.is_empty() && !json {
        println!("no backups to verify");
    }
    Ok(exit::OK)
}
