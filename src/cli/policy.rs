//! `cexdr policy check`: validate a policy and describe it in plain words.
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Subcommand;

use crate::backup::policy::{Policy, SourceSpec, StoreSpec};
use crate::backup::report::keep_words;
use crate::cli::output::print_json;
use crate::error::{exit, one_line, Result};
use crate::store;

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy and describe it in plain words.
    Check {
        /// Defaults to --policy.
        file: Option<PathBuf>,
    },
}

pub async fn check(cmd: PolicyCmd, default: PathBuf, json: bool) -> Result<i32> {
    let PolicyCmd::Check { file } = cmd;
    let file = file.unwrap_or(default);
    let p = Policy::load(&file)?;
    if json {
        print_json(&describe_json(&p));
    } else {
        print!("{}", describe(&p, Utc::now()));
    }
    for j in &p.jobs {
        for w in crate::backup::pitr::server_warnings(j).await {
            eprintln!("cexdr: warning: {w}");
        }
    }
    if let StoreSpec::S3(spec) = &p.store {
        if spec.object_lock.is_some() {
            // The one check that needs the bucket: retention cannot be
            // set without Object Lock enabled on it.
            let s = store::build(&p.store).await?;
            match s.object_lock_enabled().await {
                Ok(Some(true)) | Ok(None) => {}
                Ok(Some(false)) => eprintln!(
                    "cexdr: warning: bucket {} has no Object Lock enabled; uploads with object-lock will fail",
                    spec.bucket
                ),
                Err(e) => eprintln!("cexdr: warning: could not check Object Lock on bucket {}: {}", spec.bucket, one_line(&e)),
            }
        }
    }
    Ok(exit::OK)
}

/// `policy check` in plain words.
pub fn describe(p: &Policy, now: DateTime<Utc>) -> String {
    let mut out = format!("policy {} is valid\n", p.file.display());
    match &p.store {
        StoreSpec::Local { path } => {
            out.push_str(&format!("store: local directory {}\n", path.display()))
        }
        StoreSpec::S3(s) => {
            out.push_str(&format!(
                "store: s3://{}/{} (region {}{}{}{})\n",
                s.bucket,
                s.prefix,
                s.region,
                s.endpoint
                    .as_ref()
                    .map(|e| format!(", endpoint {e}"))
                    .unwrap_or_default(),
                s.sse
                    .as_ref()
                    .map(|e| format!(", SSE {e}"))
                    .unwrap_or_default(),
                s.storage_class
                    .as_ref()
                    .map(|e| format!(", class {e}"))
                    .unwrap_or_default(),
            ));
        }
    }
    for j in &p.jobs {
        out.push_str(&format!("job {} ({}):\n", j.name, j.source.kind()));
        out.push_str(&j.source.info().describe());
        out.push_str(&format!("  compression: {}\n", j.compression.name()));
        match &j.schedule {
            Some(s) => {
                // In the daemon's time zone, as the daemon will run them.
                let next: Vec<_> = s
                    .after_in(p.daemon.timezone, now)
                    .take(3)
                    .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                    .collect();
                let zone = if p.daemon.timezone == chrono_tz::UTC {
                    String::new()
                } else {
                    format!(" in {}", p.daemon.timezone)
                };
                out.push_str(&format!(
                    "  schedule: {}{zone} (next: {})\n",
                    s.expr,
                    next.join(", ")
                ));
            }
            None => out.push_str("  schedule: none (runs only when asked)\n"),
        }
        if let Some(dr) = &j.drill {
            out.push_str(&format!(
                "  drill: {} (restore into {}; timeout {})\n",
                dr.schedule.expr,
                match (&dr.target, &dr.scratch) {
                    (Some(t), _) => format!("scratch databases on {t}"),
                    (None, Some(s)) => format!("a scratch folder under {}", s.display()),
                    (None, None) => match j.source {
                        SourceSpec::Redis(_) => "a scratch redis-server".to_owned(),
                        _ => "a scratch folder under the temporary folder".to_owned(),
                    },
                },
                dr.timeout
                    .map(crate::base::human_duration)
                    .unwrap_or_else(|| "none".into())
            ));
        }
        out.push_str(&format!(
            "  verify after backup: {}\n",
            if crate::backup::job::verify_after(p, j) {
                "yes (read back from the store)"
            } else {
                "no"
            }
        ));
        out.push_str(&format!("  retention: {}\n", keep_words(&j.keep)));
    }
    out
}

pub fn describe_json(p: &Policy) -> serde_json::Value {
    let now = Utc::now();
    serde_json::json!({
        "file": p.file,
        "jobs": p.jobs.iter().map(|j| serde_json::json!({
            "name": j.name,
            "kind": j.source.kind(),
            "compression": j.compression.name(),
            "schedule": j.schedule.as_ref().map(|s| s.expr.clone()),
            "next_runs": j.schedule.as_ref().map(|s| s.after_in(p.daemon.timezone, now).take(3).collect::<Vec<_>>()),
            "keep": j.keep,
        })).collect::<Vec<_>>(),
    })
}
