#!/usr/bin/env bash
# A copy of the shared benchmark dataset generator (issue 4), so bench/redis.sh is self-contained.
# Fill a Redis server with exchange-shaped data: sessions (strings with
# TTLs), user profiles (hashes), order books (sorted sets) and event
# queues (lists).
#
#   seed-redis.sh [SCALE]
#
# SCALE 1 is about 1 million keys and a few hundred MB of memory.
# Connection options for redis-cli come from REDIS_OPTS (e.g. "-p 6380").
# The database is NOT flushed first.
set -euo pipefail
SCALE=${1:-1}
N=$((250000 * SCALE))
awk -v n="$N" 'BEGIN {
  srand(42)
  for (i = 1; i <= n; i++) {
    s = sprintf("%x%x", i * 2654435761 % 4294967296, i)
    printf "*5\r\n$3\r\nSET\r\n$%d\r\nsession:%d\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$5\r\n86400\r\n", length("session:" i), i, length(s), s
    u = "user:" i
    printf "*8\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$5\r\nemail\r\n$%d\r\n%s\r\n$3\r\nkyc\r\n$1\r\n%d\r\n$7\r\ncountry\r\n$2\r\nSG\r\n", length(u), u, length("u" i "@example.com"), "u" i "@example.com", i % 4
    b = "book:" (i % 4000)
    m = "o" i
    sc = sprintf("%.2f", 20000 + (i * 31 % 50000) / 100)
    printf "*4\r\n$4\r\nZADD\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(b), b, length(sc), sc, length(m), m
    q = "events:" (i % 1000)
    e = sprintf("{\"order\":%d,\"qty\":\"%.4f\"}", i, (i * 17 % 10000) / 10000)
    printf "*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(q), q, length(e), e
  }
}' | redis-cli ${REDIS_OPTS:-} --pipe
redis-cli ${REDIS_OPTS:-} dbsize | sed 's/^/keys: /'
redis-cli ${REDIS_OPTS:-} info memory | grep '^used_memory_human'
