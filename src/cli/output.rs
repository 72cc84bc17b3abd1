//! What every command prints the same way: JSON documents on stdout, byte
//! counts for people, and the log format flag.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Set once a command printed its JSON document: a failure after it (a
/// verification that failed, say) adds no second one.
static PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once `print_json` wrote this run's document.
pub fn printed() -> bool {
    PRINTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// One JSON document on stdout.
pub(crate) fn print_json(v: &impl serde::Serialize) {
    PRINTED.store(true, std::sync::atomic::Ordering::SeqCst);
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

pub use crate::backup::report::human_bytes;
