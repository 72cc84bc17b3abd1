use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// mimalloc: the dump's row decoding allocates per column, and glibc with
/// a fixed mmap threshold (kept for flat memory) paid page faults and TLB
/// shootdowns for every 1 MiB block; mimalloc reuses its segments and
/// still returns memory (bench/memory.sh, bench/mysql.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cexdr::cli::Cli::parse();
    cexdr::cli::init_tracing(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cexdr: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let code = rt.block_on(async {
        let c = cancel.clone();
        tokio::spawn(async move {
            // First Ctrl-C / SIGTERM: stop cleanly (uploads aborted, no
            // manifest). Second: leave at once.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            for n in 0.. {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
                if n > 0 {
                    eprintln!("cexdr: interrupted again; exiting now");
                    std::process::exit(cexdr::error::exit::INTERRUPTED);
                }
                cexdr::cli::progress::eprint_line(
                    "cexdr: interrupted; cleaning up (press Ctrl-C again to exit at once)",
                );
                c.cancel();
            }
        });
        match cexdr::cli::run(cli, cancel).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cexdr: error: {}", cexdr::error::one_line(&e));
                e.exit_code()
            }
        }
    });
    // Do not wait for background tasks (abort requests already awaited).
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    ExitCode::from(code as u8)
}
