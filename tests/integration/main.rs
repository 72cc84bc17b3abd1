//! The integration tests, one binary (each used to link the AWS SDK and kube
//! on its own). Tests talk to real servers that `scripts/test` starts:
//! MariaDB, Redis, moto; a missing service is a failure, never a skip.
mod common;
mod fakes;
mod mariadb_server;
mod redis_support;

mod daemon;
mod deploy;
mod encryption;
mod failover;
mod failover_parts;
mod failover_promotion;
mod files;
mod files_fidelity;
mod files_hostile;
mod honest_reports;
mod hostile_input;
mod layering;
mod lock;
mod mysql;
mod mysql_tls;
mod notifications;
mod object_lock;
mod physical;
mod pitr;
mod pitr_daemon;
mod pitr_target;
mod proof;
mod prune;
mod redis;
mod redis_cluster;
mod retention_golden;
mod s3_retry;
mod scheduler;
mod secret_hygiene;
mod signing;
mod store_conformance;
mod toolbox;
