//! A Redis Cluster backup against three real `redis-server --cluster-enabled
//! yes` nodes created with `redis-cli --cluster create`.
use crate::common;
use crate::redis_support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_code, catalog_json, cexdr, stderr};
use redis_support::*;

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

fn start_cluster() -> Vec<Server> {
    let nodes: Vec<Server> = (0..3)
        .map(|_| {
            Server::start_in(
                tempfile::tempdir().unwrap(),
                cluster_port(),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "3000",
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let o = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let t0 = Instant::now();
    for n in &nodes {
        while !n.cli(&["cluster", "info"]).contains("cluster_state:ok") {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "cluster did not become ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    nodes
}

/// SET through the cluster, following MOVED redirects.
fn set(nodes: &[Server], key: &str, val: &str) {
    let mut port = nodes[0].port;
    for _ in 0..3 {
        let mut c = Resp::connect(port).unwrap();
        match c
            .try_cmd(&[b"SET", key.as_bytes(), val.as_bytes()])
            .unwrap()
        {
            Reply::Error(e) if e.starts_with("MOVED") => {
                port = e.rsplit(':').next().unwrap().parse().unwrap();
            }
            Reply::Status(_) => return,
            other => panic!("SET {key}: {other:?}"),
        }
    }
    panic!("SET {key}: too many redirects");
}

#[test]
fn cluster_backup_restore_and_drill() {
    let nodes = start_cluster();
    let written: BTreeSet<String> = (0..600).map(|i| format!("order:{i}")).collect();
    for k in &written {
        set(&nodes, k, &format!("v-{k}"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &nodes[1].url(), "");
    let ps = policy.to_str().unwrap();
    let o = cexdr(&["--policy", ps, "backup", "cache"]);
    assert_code(&o, 0);

    let list = catalog_json(&policy);
    let m = &list[0];
    let id = m["id"].as_str().unwrap().to_owned();
    let d = &m["details"];
    assert_eq!(d["mode"], "cluster");
    assert_eq!(d["slots_covered"], 16384);
    let shards = d["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    assert_eq!(m["artifacts"].as_array().unwrap().len(), 3);
    let mut total = 0;
    for (s, a) in shards.iter().zip(m["artifacts"].as_array().unwrap()) {
        let node_id = s["node_id"].as_str().unwrap();
        assert_eq!(node_id.len(), 40);
        assert_eq!(a["name"], format!("shard-{node_id}.rdb"));
        assert_eq!(s["name"], a["name"]);
        assert!(!s["slots"].as_array().unwrap().is_empty());
        assert_eq!(a["details"]["crc_checked"], true);
        total += a["details"]["keyspace"]["db0"]["keys"].as_u64().unwrap();
    }
    assert_eq!(total, 600);

    // Restore: one file per shard; together they hold exactly what was written.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("shards");
    let o = cexdr(&[
        "--policy",
        ps,
        "restore",
        &id,
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    let mut found = BTreeSet::new();
    for a in m["artifacts"].as_array().unwrap() {
        let f = dir.join(a["name"].as_str().unwrap());
        let scratch = tempfile::tempdir().unwrap();
        std::fs::copy(&f, scratch.path().join("dump.rdb")).unwrap();
        let s = Server::start_in(scratch, free_port(), &[]);
        let mut c = s.conn();
        for k in keys(&mut c) {
            let k = String::from_utf8(k).unwrap();
            let Reply::Bulk(Some(v)) = c.cmd(&[b"GET", k.as_bytes()]) else {
                panic!()
            };
            assert_eq!(v, format!("v-{k}").into_bytes());
            assert!(found.insert(k), "a key is in two shards");
        }
    }
    assert_eq!(found, written);

    let o = cexdr(&["--policy", ps, "verify", &id, "--restore-test"]);
    assert_code(&o, 0);

    // One master down: the whole backup fails and nothing new is listed.
    let files_before = store_files(tmp.path());
    let mut nodes = nodes;
    drop(nodes.pop());
    let o = cexdr(&["--policy", ps, "backup", "cache"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("cannot connect") || stderr(&o).contains("marked"),
        "{}",
        stderr(&o)
    );
    assert_eq!(catalog_json(&policy).as_array().unwrap().len(), 1);
    assert_eq!(store_files(tmp.path()), files_before);
}

#[test]
fn cluster_true_on_a_standalone_server_is_refused() {
    let s = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &s.url(), "cluster = true\n");
    let o = cexdr(&["--policy", policy.to_str().unwrap(), "backup", "cache"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("cluster mode disabled"),
        "{}",
        stderr(&o)
    );
}
