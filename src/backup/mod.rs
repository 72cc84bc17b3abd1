//! The backup flow: a policy's jobs, each a source streamed through the
//! pipeline into a store and recorded in the catalog; verification, restore,
//! retention and prune over that catalog; the lease that keeps two runs of a
//! job apart; the daemon's scheduler and its metrics.
//!
//! Layers, lowest first; a module imports its own layer and those below it,
//! never one above (checked by `scripts/layering`, drawn in
//! docs/architecture.md):
//!
//! ```text
//! orchestration  job, run, lease, scheduler, metrics, report, notifier, pitr   (read the policy)
//! policy         policy                      the policy file → Policy, from the specs below
//! plan           plan/{retention, prune, binlog_retention, restore, verify}
//! binlog         binlog/{archive, replay, window, topup, event}
//! source         source/{kinds, files, mysql/, redis/, artifact, …}
//! catalog        catalog/{manifests (mod), kind, gtid, segment, signing}: the vocabulary
//! ```
//!
//! `source` knows databases and file trees, not policies: the policy parser
//! (`policy`) imports the source specs, never the other way round.
pub mod catalog;
pub mod source;

pub mod binlog;

pub mod plan;

pub mod policy;

pub mod job;
pub mod lease;
pub mod metrics;
pub mod notifier;
pub mod pitr;
pub mod report;
pub mod run;
pub mod scheduler;
