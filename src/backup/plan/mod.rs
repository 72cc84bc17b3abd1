//! Planning over the catalog: which backups to keep (`retention`, pure),
//! removing the others (`prune`) and the binlog segments no kept base needs
//! (`binlog_retention`), reading an artifact back for a restore (`restore`),
//! and verification (`verify`). Nothing here reads the policy: callers hand
//! in the job's rules.
pub mod binlog_retention;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod verify;
