//! The failover flow: a runbook (strict TOML) of steps that the engine runs
//! one by one, each journaled (fsync'd JSON lines) so that `--resume` skips
//! what is done and polls what was started. Steps receive a small context,
//! never the runbook or the engine.
pub mod archive;
pub mod engine;
pub mod journal;
pub mod runbook;
pub mod step;
