//! The backup flow: a policy's jobs, each a source streamed through the
//! pipeline into a store and recorded in the catalog; verification, restore,
//! retention and prune over that catalog; the lease that keeps two runs of a
//! job apart; the daemon's scheduler and its metrics.
//!
//! `source` knows databases and file trees, not policies: the policy parser
//! (`policy`) imports the source specs, never the other way round.
pub mod binlog;
pub mod catalog;
pub mod lease;
pub mod metrics;
pub mod notifier;
pub mod policy;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod run;
pub mod scheduler;
pub mod signing;
pub mod source;
pub mod verify;
