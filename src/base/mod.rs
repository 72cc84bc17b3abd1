//! The shared base of both flows: checked durations and sizes, secrets,
//! locating keys in TOML files, the host name, the HTTP client, byte streams.
//! It imports nothing of the crate but `error`.
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub mod duration;
pub mod http;
pub mod mysql_tls;
pub mod progress;
pub mod secret;
pub mod size;
pub mod toml_loc;

pub use duration::{human_duration, parse_duration, parse_duration_ms, Dur, DurationError};
pub use secret::Secret;
pub use size::{human_bytes, parse_size, SizeError};

/// A stream of byte chunks; errors travel as `io::Error` (typed errors inside).
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// This machine's host name, as recorded in manifests, leases and messages.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// An absolute, lexically normalised path (relative ones are taken from
/// `base`, a policy file's folder), so archive names and messages are stable.
pub fn resolve_path(base: &std::path::Path, p: &std::path::Path) -> std::path::PathBuf {
    use std::path::{Component, PathBuf};
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else if base.is_absolute() {
        base.join(p)
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(base)
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Cores available to this process (compression threads, restore lanes,
/// default MySQL dump threads).
pub fn parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
