//! Point-in-time recovery for MySQL/MariaDB (issue 13): a continuous binlog
//! archive and replay on top of a base backup.
//!
//! ```text
//! Archive:  server (as a replica, own server id) ─► events ─► segment (closed every
//!           flush-interval / segment-size, at a transaction boundary) ─► pipeline ─► store
//!           ─► segment manifest (written last, signed, chained)
//! Windows:  base backups' GTID positions + segment manifests ─► recoverable windows, named gaps
//! Restore:  target time ─► GTID (from the manifests' commit-second runs) ─► newest base at or
//!           before it ─► restore ─► exact GTID filter over the segments ─► mariadb-binlog ─► target
//! ```
//!
//! Store layout (outside the backup folders, which prune would otherwise
//! treat as incomplete backups): `binlog/<job>/<timeline>/<seq>.json` (the
//! manifest, `.sig` beside it when signing) and
//! `binlog/<job>/<timeline>/<seq>-<file>-<pos>.binlog[.gz|.zst]` (the
//! segment: a standalone binlog file, magic + FDE + whole transactions).
//! `<timeline>` is `NNNN-s<server_id>`: it changes whenever the source
//! server changes, so a promoted replica's `binlog.000001` never overwrites
//! the old primary's. `<seq>` grows across timelines.
//!
//! The vocabulary this folder writes and reads lives in the catalog
//! (`catalog::segment`: segment manifests and the archive listing;
//! `catalog::gtid`); the `binlog = { … }` keys are the mysql source's
//! (`source::mysql::binlog`). The commands the CLI and the daemon run on
//! top (archive under the lease, windows, restore --until) are
//! orchestration: `backup::pitr`.
pub mod archive;
pub mod event;
pub mod replay;
pub mod topup;
pub mod window;
