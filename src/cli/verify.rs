//! `cexdr verify`: re-read stored backups; with `--restore-test`, restore
//! into scratch and compare. With `--job` / `--all`, the jobs' binlog
//! archives too (one record each).
use std::path::Path;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::Entry;
use crate::backup::job;
use crate::backup::metrics::Metrics;
use crate::backup::policy::{Policy, Secret};
use crate::backup::source::ScratchTarget;
use crate::cli::keys::{open_catalog_as, CliKeys};
use crate::cli::output::print_json;
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
    /// With `--restore-test mysql://…`: a point-in-time drill. The base
    /// (ID, or the job's newest suitable one) is restored and the binlog
    /// archive replayed up to this time on the scratch server, under the
    /// original database names, which are dropped again.
    #[arg(long, requires = "restore_test", conflicts_with = "all")]
    pub until: Option<String>,
    /// As `--until`, up to this GTID position.
    #[arg(long, requires = "restore_test", conflicts_with_all = ["all", "until"])]
    pub until_gtid: Option<String>,
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
    if args.until.is_some() || args.until_gtid.is_some() {
        return pitr_drill(&policy, &catalog, json, &args).await;
    }
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
    let archives = crate::backup::pitr::verify_archives(
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

/// `--restore-test URL --until T`: one point-in-time drill.
async fn pitr_drill(
    policy: &Policy,
    catalog: &crate::backup::catalog::Catalog,
    json: bool,
    args: &VerifyArgs,
) -> Result<i32> {
    use crate::backup::pitr;
    let until = pitr::parse_until(args.until.as_deref(), args.until_gtid.as_deref())?;
    let (job, base) = match (&args.job, args.ids.as_slice()) {
        (Some(j), []) => (policy.job(j)?.name.clone(), None),
        (None, [id]) => (catalog.find(id).await?.manifest.job, Some(id.as_str())),
        _ => {
            return Err(Error::Usage(
                "a point-in-time drill takes one base backup id or --job JOB".into(),
            ))
        }
    };
    let to = args
        .restore_test
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Usage("--until needs --restore-test mysql://…".into()))?;
    let req = pitr::Request {
        job: &job,
        base_id: base,
        until: &until,
        to,
        batch: 1000,
        dry_run: false,
        databases_selected: policy
            .job(&job)
            .map(pitr::selects_databases)
            .unwrap_or(false),
    };
    let password = std::env::var_os("CEXDR_RESTORE_TEST_PASSWORD")
        .is_some()
        .then_some("CEXDR_RESTORE_TEST_PASSWORD");
    let v = pitr::pitr_drill(catalog, &req, password).await?;
    if json {
        print_json(&vec![&v]);
    } else {
        match &v.error {
            None => println!(
                "{} {}: ok (point in time {}: {} transaction(s) replayed, restore + replay {:.1} s)",
                v.job,
                v.backup_id,
                v.details["until"].as_str().unwrap_or(""),
                v.details["transactions"],
                v.details["restore_seconds"].as_f64().unwrap_or(0.0)
            ),
            Some(err) => println!("{} {}: FAILED: {err}", v.job, v.backup_id),
        }
    }
    if v.status == crate::backup::catalog::Status::Failed {
        return Err(Error::VerifyFailed {
            failed: 1,
            total: 1,
        });
    }
    Ok(exit::OK)
}
