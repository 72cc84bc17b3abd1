//! Runbooks for the failover tests: the top-level keys every test uses,
//! then the test's own steps.
use std::path::{Path, PathBuf};
use std::process::Output;

/// Writes `DIR/NAME.toml`: runbook `name` from site `primary` to `backup`,
/// its state under `DIR/state`, a one-hour cool-down, then `steps` (one or
/// more `[[step]]` tables).
pub fn runbook(dir: &Path, name: &str, steps: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nfrom-site = \"primary\"\nto-site = \"backup\"\nstate-dir = \"{}\"\ncool-down = \"1h\"\n{steps}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    p
}

/// The arguments of `cexdr failover --runbook RB --yes EXTRA…`.
pub fn failover_args<'a>(rb: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["failover", "--runbook", rb.to_str().unwrap(), "--yes"];
    a.extend_from_slice(extra);
    a
}

/// Runs `cexdr failover --runbook RB --yes EXTRA…` to its end.
pub async fn failover(rb: &Path, extra: &[&str]) -> Output {
    super::cexdr_async(&failover_args(rb, extra))
        .output()
        .await
        .unwrap()
}
