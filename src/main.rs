use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// glibc raises its mmap threshold each time a large block is freed, after
/// which the pipeline's 1 MiB blocks come from the heap and fragment it: peak
/// RSS then creeps up with the size of the backup (measured: 24 MiB for
/// 10 MB, 46 MiB for 1 GB). A fixed threshold keeps big buffers in mmap,
/// returned on free, and memory flat (bench/memory.sh).
fn fix_malloc_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    fix_malloc_threshold();
    let cli = cexdr::cli::Cli::parse();
    let json = cli.json;
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
                if json && !cexdr::cli::output::printed() {
                    // Scripts get one document on stdout, failures too
                    // (a command that printed its own already said it).
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&e.to_json()).expect("serialisable")
                    );
                }
                e.exit_code()
            }
        }
    });
    // Do not wait for background tasks (abort requests already awaited).
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    ExitCode::from(code as u8)
}
