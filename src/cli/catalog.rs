//! `cexdr catalog`: list, show, signatures, keys, and the audit report.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::Subcommand;

use crate::backup::catalog::{Entry, Level, Status};
use crate::backup::policy::{Policy, SourceSpec};
use crate::cli::keys::{open_catalog, CliKeys};
use crate::cli::output::{human_bytes, print_json};
use crate::error::{exit, Error, Result};

#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// Complete backups, oldest first, with their latest verification.
    List {
        #[arg(long)]
        job: Option<String>,
        /// files, mysql or redis.
        #[arg(long)]
        kind: Option<String>,
        /// Only backups started at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
    /// One backup's manifest and verification history.
    Show { id: String },
    /// Check every manifest's and verification record's signature, and each
    /// job's chain of manifests (a deleted backup leaves a gap). Exit 4 on
    /// any finding.
    VerifySignatures {
        #[arg(long)]
        job: Option<String>,
        /// Trust only these public keys (hex); default: the keys published
        /// in the store under keys/.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
    },
    /// Write the audit report: one self-contained HTML page (inline CSS
    /// and SVG, no network) with every job's backups, verification states,
    /// RPO, RTO, retention and signature chain.
    Report {
        /// Where to write the page (written to a temporary name, then renamed).
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
    },
    /// PITR: the recoverable windows of mysql jobs with a binlog archive,
    /// and every gap, named.
    Pitr {
        #[arg(long)]
        job: Option<String>,
    },
    /// Create an Ed25519 signing key file (0600) for `signing-key-file`.
    Keygen {
        /// Where to write the key; never overwrites.
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn catalog(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    cmd: CatalogCmd,
) -> Result<i32> {
    match cmd {
        CatalogCmd::List { job, kind, since } => {
            list(policy_file, json, keys, job, kind, since).await
        }
        CatalogCmd::Pitr { job } => pitr(policy_file, json, keys, job).await,
        CatalogCmd::Keygen { out } => keygen(&out),
        CatalogCmd::VerifySignatures { job, trusted_keys } => {
            verify_signatures(policy_file, json, keys, job, &trusted_keys).await
        }
        CatalogCmd::Show { id } => show(policy_file, json, keys, &id).await,
        CatalogCmd::Report { html } => report(policy_file, json, keys, &html).await,
    }
}

/// `catalog list`.
async fn list(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    job: Option<String>,
    kind: Option<String>,
    since: Option<String>,
) -> Result<i32> {
    let since: Option<DateTime<Utc>> = match since {
        Some(s) => Some(
            DateTime::parse_from_rfc3339(&s)
                .map_err(|e| {
                    Error::Usage(format!(
                        "--since {s:?}: {e} (use RFC 3339, e.g. 2026-11-25T00:00:00Z)"
                    ))
                })?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    let policy = Policy::load(policy_file)?;
    let catalog = open_catalog(&policy, keys).await?;
    let (listed, damaged) = catalog.scan_full(job.as_deref()).await?;
    let entries: Vec<Entry> = listed
        .into_iter()
        .filter(|e| {
            kind.as_deref()
                .map(|k| e.manifest.kind == k)
                .unwrap_or(true)
        })
        .filter(|e| since.map(|s| e.manifest.started_at >= s).unwrap_or(true))
        .collect();
    if json {
        let rows = entries.iter().map(Entry::to_json);
        print_json(
            &rows
                .chain(damaged.iter().map(|d| d.to_json()))
                .collect::<Vec<_>>(),
        );
    } else {
        print!("{}", list_table(&entries));
        for d in &damaged {
            println!("DAMAGED {}: {}", d.folder, d.error);
        }
    }
    Ok(exit::OK)
}

/// `catalog pitr`.
async fn pitr(policy_file: &Path, json: bool, keys: &CliKeys, job: Option<String>) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let jobs: Vec<&crate::backup::policy::Job> = match &job {
        Some(j) => vec![policy.job(j)?],
        None => policy
            .jobs
            .iter()
            .filter(|j| matches!(&j.source, SourceSpec::Mysql(m) if m.binlog.is_some()))
            .collect(),
    };
    let catalog = open_catalog(&policy, keys).await?;
    let mut reports = Vec::new();
    for j in jobs {
        reports.push(crate::backup::pitr::report(&catalog, &j.name).await?);
    }
    if json {
        print_json(&reports);
    } else if reports.is_empty() {
        println!("no mysql job of this policy has a binlog archive (binlog = {{ … }})");
    } else {
        for r in &reports {
            print!("{}", crate::backup::binlog::window::render(r));
        }
    }
    Ok(exit::OK)
}

/// `catalog keygen`.
fn keygen(out: &Path) -> Result<i32> {
    let s = crate::backup::catalog::signing::Signer::generate(out)?;
    println!(
        "wrote {} (key {}); public key {}",
        out.display(),
        s.key_id,
        s.public_hex()
    );
    Ok(exit::OK)
}

/// `catalog verify-signatures`.
async fn verify_signatures(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    job: Option<String>,
    trusted_keys: &[String],
) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let catalog = open_catalog(&policy, keys).await?;
    let trusted = if trusted_keys.is_empty() {
        catalog.published_keys().await?
    } else {
        let mut m = std::collections::BTreeMap::new();
        for k in trusted_keys {
            let key = crate::backup::catalog::signing::parse_public(k).ok_or_else(|| {
                Error::Usage(format!(
                    "--trusted-key {k:?} is not a hex Ed25519 public key"
                ))
            })?;
            m.insert(crate::backup::catalog::signing::key_id(&key), key);
        }
        m
    };
    let rows = catalog.audit(job.as_deref(), &trusted).await?;
    let bad = rows.iter().filter(|r| !r.is_ok()).count();
    if json {
        print_json(&rows);
    } else {
        let ids: Vec<_> = trusted.keys().cloned().collect();
        println!(
            "trusted keys: {}",
            if ids.is_empty() {
                "none".into()
            } else {
                ids.join(", ")
            }
        );
        for r in &rows {
            let mut line = format!(
                "{} {} {}: signature {}",
                r.job,
                r.id,
                r.object,
                r.signature.word()
            );
            for p in &r.problems {
                line.push_str(&format!("; {p}"));
            }
            println!("{line}");
        }
        println!("{} object(s) checked, {bad} with findings", rows.len());
    }
    if bad > 0 {
        return Err(Error::VerifyFailed {
            failed: bad,
            total: rows.len(),
        });
    }
    Ok(exit::OK)
}

/// `catalog show`.
async fn show(policy_file: &Path, json: bool, keys: &CliKeys, id: &str) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let catalog = open_catalog(&policy, keys).await?;
    let e = catalog.find(id).await?;
    if json {
        let mut v = e.to_json();
        v["verifications"] = serde_json::to_value(&e.verifications).expect("serialisable");
        print_json(&v);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&e.manifest).expect("serialisable")
        );
        for v in &e.verifications {
            println!(
                "verification {} {} ({}) by {}{}",
                v.at.to_rfc3339(),
                if v.status == Status::Ok {
                    "ok"
                } else {
                    "FAILED"
                },
                v.method,
                v.tool_version,
                v.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(exit::OK)
}

/// `catalog report`.
async fn report(policy_file: &Path, json: bool, keys: &CliKeys, html: &Path) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let catalog = open_catalog(&policy, keys).await?;
    let names: Vec<String> = policy.jobs.iter().map(|j| j.name.clone()).collect();
    let input = crate::backup::report::gather(&catalog, &names).await?;
    let page = crate::backup::report::html(&policy, &input, Utc::now());
    write_atomic(html, page.as_bytes())?;
    if json {
        print_json(
            &serde_json::json!({"report": html, "jobs": names.len(), "backups": input.entries.len()}),
        );
    } else {
        println!(
            "wrote the audit report ({} jobs, {} backups) to {}",
            names.len(),
            input.entries.len(),
            html.display()
        );
    }
    Ok(exit::OK)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{:08x}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    let res = std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| Error::io(format!("writing the report {}", path.display()), e))
}

/// The VERIFIED column: the strongest level proven and when.
pub fn level_words(e: &Entry) -> String {
    match e.level() {
        Level::Never => "never".into(),
        Level::Failed(v) => format!("FAILED {} ({})", v.at.format("%Y-%m-%d %H:%M"), v.method),
        Level::Checksum(v) => format!("checksum {}", v.at.format("%Y-%m-%d")),
        Level::RestoreTested(v) => format!(
            "restore-tested {} (RTO {})",
            v.at.format("%Y-%m-%d"),
            crate::backup::report::secs(v.details["seconds"].as_f64().unwrap_or(0.0))
        ),
    }
}

fn list_table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<32} {:<14} {:<6} {:<20} {:>10} {:>10}  {}\n",
        "ID", "JOB", "KIND", "STARTED", "SOURCE", "STORED", "VERIFIED"
    );
    for e in entries {
        let m = &e.manifest;
        let ver = level_words(e);
        out.push_str(&format!(
            "{:<32} {:<14} {:<6} {:<20} {:>10} {:>10}  {}\n",
            m.id,
            m.job,
            m.kind,
            m.started_at.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(m.source_bytes),
            human_bytes(m.stored_bytes),
            ver
        ));
    }
    out.push_str(&format!("{} backup(s)\n", entries.len()));
    out
}
