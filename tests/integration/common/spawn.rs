//! Spawning the cexdr binary and acting while it runs: the commands with
//! the environment every test gives it, polling for a condition, and
//! interrupting it as Ctrl-C does.
use std::process::{Child, Command, Output};
use std::time::Duration;

/// The cexdr binary with the moto credentials and without the caller's
/// `CEXDR_POLICY`, for a test that spawns it (`cexdr()` runs it to its end).
pub fn cexdr_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cexdr"));
    c.args(args)
        .env_remove("CEXDR_POLICY")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

/// The same for async tests (failover runs): no `CEXDR_STATE_DIR` of the
/// caller, stdin closed, killed when dropped.
pub fn cexdr_async(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_cexdr"));
    c.args(args)
        .env_remove("CEXDR_POLICY")
        .env_remove("CEXDR_STATE_DIR")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

/// Calls `ready` up to `tries` times, `every` apart, until it gives a value.
pub fn poll<T>(tries: usize, every: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..tries {
        if let Some(v) = ready() {
            return Some(v);
        }
        std::thread::sleep(every);
    }
    None
}

/// `poll` for async conditions (the runtime keeps running between tries).
pub async fn poll_async<T, F>(
    tries: usize,
    every: Duration,
    mut ready: impl FnMut() -> F,
) -> Option<T>
where
    F: std::future::Future<Output = Option<T>>,
{
    for _ in 0..tries {
        if let Some(v) = ready().await {
            return Some(v);
        }
        tokio::time::sleep(every).await;
    }
    None
}

/// SIGINT to a running cexdr (what Ctrl-C sends), then waits for its exit
/// and collects what it wrote to piped stdout/stderr.
pub fn interrupt(child: Child) -> Output {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait_with_output().expect("wait for cexdr")
}
