//! cexdr: backup and disaster recovery for an exchange's MySQL, Redis and
//! config folders. The binary (`src/main.rs`) is a thin edge over this library.
//!
//! Two flows, each in its own folder; they share only the layers below them:
//!
//! ```text
//! Backup:   policy ─► source ─► pipeline (compress → [encrypt] → sha256) ─► store ─► catalog (manifest LAST)
//! Prune:    catalog list ─► retention::plan(now) ─► dry-run print │ delete artifact, then manifest
//! Daemon:   cron tick │ shutdown ─► lease ─► backup ─► prune ─► metrics
//!           (all of it in `backup/`)
//!
//! Failover: runbook ─► engine ─► step (check-primary → fence → dns → scale → verify → notify) ─► journal
//!                        ▲                                                                  │
//!                        └──────────── resume: skip steps the journal marks done ◄──────────┘
//!           (all of it in `failover/`)
//! ```
//!
//! Imports point one way (checked by `scripts/layering`):
//! `main → cli → {backup, failover} → {store, pipeline, notify} → base → error`.
//! `backup` and `failover` never import each other; `store`, `pipeline` and
//! `backup::source` never import the policy (each family owns its spec type,
//! the policy parser imports them). Inside `backup/` the layers are
//! catalog → source → binlog → plan → policy → orchestration, and no two
//! modules anywhere import each other in a circle. See docs/architecture.md.
pub mod base;
pub mod error;
pub mod notify;
pub mod pipeline;
pub mod store;

pub mod backup;
pub mod failover;

pub mod cli;

pub use error::{Error, Result};
