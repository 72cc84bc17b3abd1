//! cexdr: backup and disaster recovery for an exchange's MySQL, Redis and
//! config folders. The binary (`src/main.rs`) is a thin edge over this library.
pub mod backup;
pub mod catalog;
pub mod cli;
pub mod engine;
pub mod error;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod policy;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod runbook;
pub mod scheduler;
pub mod source;
pub mod step;
pub mod store;
pub mod verify;

pub use error::{Error, Result};
pub mod binlog;
pub mod encryption;
pub mod signing;
