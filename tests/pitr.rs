//! Point-in-time recovery against private MariaDB servers (binlog on).
#[path = "support/mariadb_server.rs"]
mod mariadb_server;

use mariadb_server::MariaDb;

/// The fixture itself: a primary and a GTID replica, a crash and restart of
/// each on the same datadir, replication resuming without loss.
#[test]
fn fixture_primary_replica_kill9_restart() {
    let mut p = MariaDb::primary();
    assert_eq!(p.sql("SELECT @@log_bin"), "1");
    assert_eq!(p.sql("SELECT @@binlog_format"), "ROW");
    let mut r = MariaDb::replica_of(&p);
    assert_ne!(p.server_id(), r.server_id());
    p.sql("CREATE DATABASE fx; CREATE TABLE fx.t (id INT PRIMARY KEY); INSERT INTO fx.t VALUES (1),(2)");
    r.wait_caught_up(&p);
    assert_eq!(r.sql("SELECT COUNT(*) FROM fx.t"), "2");
    let port = p.port();
    p.kill9();
    assert!(p.try_sql("SELECT 1").is_err());
    p.restart();
    assert_eq!(p.port(), port);
    p.sql("INSERT INTO fx.t VALUES (3)");
    r.kill9();
    r.restart();
    r.sql("START SLAVE");
    r.wait_caught_up(&p);
    assert_eq!(r.sql("SELECT COUNT(*) FROM fx.t"), "3");
    assert_eq!(r.sql("SELECT @@read_only"), "1");
}
