#!/usr/bin/env bash
# Tool overhead of a whole failover runbook (check-primary, fence,
# promote-mysql, scale-up, dns-switch, verify, notify, exec + start/end
# notifications on Slack, a webhook and SMTP) against the local fakes of
# tests/integration/failover.rs and a private MariaDB primary (killed) + GTID
# replica that the step promotes, with every wait satisfied at once. Prints the median wall time next to the anchor
# measured in the same run (`cexdr runbook check`: process start + parse).
# Needs the dev services (MariaDB for the verify step, aiosmtpd's python):
#   scripts/dev-services start && eval "$(scripts/dev-services env)"
# PROFILE=release for optimised builds (default: the debug test profile).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
[[ "${PROFILE:-debug}" == release ]] && args+=(--release)
cargo test "${args[@]}" --test integration failover::bench_full_runbook_overhead -- --ignored --nocapture 2>&1 \
  | grep -E '^(failover|anchor|promote|ratio)'
# promote-mysql with the binlog archive top-up (a private primary, archiver
# and six GTID replicas): the top-up's own overhead, and 1,000 transactions applied.
cargo test "${args[@]}" --test integration failover_promotion::bench_promote_with_archive_top_up -- --ignored --nocapture 2>&1 \
  | grep -E '^promote-mysql with archive'
