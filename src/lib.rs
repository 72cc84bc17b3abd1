//! cexdr: backup and disaster recovery for an exchange's MySQL, Redis and
//! config folders. The binary (`src/main.rs`) is a thin edge over this library.
pub mod backup;
pub mod catalog;
pub mod cli;
pub mod error;
pub mod lock;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod scheduler;
pub mod source;
pub mod store;
pub mod verify;

pub use error::{Error, Result};
