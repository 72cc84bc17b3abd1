//! The shipped deployment files agree with the binary: the policy in the
//! Kubernetes ConfigMap is valid, and every command line in the systemd
//! units and the manifests parses. (scripts/check-deploy validates the
//! files themselves with promtool, systemd-analyze and kubernetes-validate.)
use std::path::Path;

use clap::Parser;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn configmap_policy_is_valid() {
    let text = read("deploy/kubernetes/configmap.yaml");
    let start = text.find("policy.toml: |\n").expect("policy.toml key") + "policy.toml: |\n".len();
    let policy: String = text[start..]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim()))
        .collect::<Vec<_>>()
        .join("\n");
    let p = cexdr::backup::policy::Policy::parse(Path::new("configmap.yaml"), &policy).unwrap();
    let names: Vec<_> = p.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["mysql", "redis"]);
    assert_eq!(
        p.daemon.metrics_listen,
        Some("0.0.0.0:9847".parse().unwrap())
    );
    // One CronJob per job, each backing up its own job.
    for n in names {
        let cj = read(&format!("deploy/kubernetes/cronjob-{n}.yaml"));
        assert!(
            cj.contains(&format!("\"backup\", \"{n}\"]")),
            "cronjob-{n}.yaml"
        );
    }
}

fn args_of(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|s| s.replace("%i", "db"))
        .collect()
}

#[test]
fn unit_and_manifest_command_lines_parse() {
    let mut lines = Vec::new();
    for unit in [
        "systemd/cexdr-daemon.service",
        "systemd/cexdr-backup@.service",
    ] {
        for l in read(unit).lines() {
            if let Some(cmd) = l
                .strip_prefix("ExecStart=")
                .or_else(|| l.strip_prefix("ExecStartPost="))
            {
                lines.push(args_of(cmd));
            }
        }
    }
    for m in ["cronjob-mysql", "daemon-deployment"] {
        let text = read(&format!("deploy/kubernetes/{m}.yaml"));
        let l = text
            .lines()
            .find(|l| l.trim_start().starts_with("args:"))
            .unwrap();
        let json = l.trim_start().trim_start_matches("args:").trim();
        let mut v: Vec<String> = serde_json::from_str(json).unwrap();
        v.insert(0, "cexdr".into());
        lines.push(v);
    }
    assert_eq!(lines.len(), 5);
    for l in lines {
        if let Err(e) = cexdr::cli::Cli::try_parse_from(&l) {
            panic!("{l:?}: {e}");
        }
    }
}
