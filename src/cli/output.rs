//! What every command prints the same way: JSON documents on stdout, byte
//! counts for people, and the log format flag.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// One JSON document on stdout.
pub(crate) fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

pub use crate::backup::report::human_bytes;
