//! `exec`: a local command for site-specific hooks, argv form (no shell),
//! with extra environment. Its exit code and output go into the journal. A
//! resumed run runs an interrupted hook again: hooks must be idempotent.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Invalid, PreviewCtx, Step};
use crate::error::Result;

const KEEP: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
}

impl Spec {
    fn check(&self) -> Invalid {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(("argv", "name the program and its arguments".into()));
        }
        Ok(())
    }

    fn lines(&self) -> Vec<String> {
        vec![format!("run {:?}", self.argv)]
    }
}

/// The last `KEEP` bytes: the end of a hook's output says why it failed.
fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[b.len().saturating_sub(KEEP)..]).into_owned();
    if b.len() > KEEP {
        format!("[{} bytes cut]…{s}", b.len() - KEEP)
    } else {
        s
    }
}

#[async_trait]
impl Step for Spec {
    fn validate(&self, _channels: &std::collections::BTreeSet<String>) -> Invalid {
        self.check()
    }
    fn describe(&self) -> Vec<String> {
        self.lines()
    }
    fn default_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(300)
    }

    async fn preview(&self, _ctx: &PreviewCtx<'_>) -> Result<Value> {
        Ok(json!({ "would": "run", "argv": self.argv }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let s = self;
        let mut cmd = tokio::process::Command::new(&s.argv[0]);
        cmd.args(&s.argv[1..])
            .envs(&s.env)
            .env("CEXDR_RUN", ctx.run)
            .env("CEXDR_STEP", ctx.step)
            .env("CEXDR_RUNBOOK", &ctx.info.runbook)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out step drops the future: the hook must not outlive it.
            .kill_on_drop(true);
        if let Some(d) = &s.cwd {
            cmd.current_dir(d);
        }
        let out = cmd
            .output()
            .await
            .map_err(|e| ctx.fail(format!("cannot run {:?}: {e}", s.argv[0])))?;
        let (so, se) = (tail(&out.stdout), tail(&out.stderr));
        if !out.status.success() {
            return Err(ctx.fail(format!(
                "{:?} exited with {}; stderr: {}; stdout: {}",
                s.argv[0],
                out.status,
                se.trim(),
                so.trim()
            )));
        }
        Ok(json!({ "exit-code": out.status.code(), "stdout": so, "stderr": se }))
    }
}
