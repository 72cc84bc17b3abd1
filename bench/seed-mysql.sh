#!/usr/bin/env bash
# Fill a MySQL/MariaDB server with an exchange-shaped benchmark database
# (the shared dataset shape of issue 3; kept here so bench/mysql.sh is self-contained).
#
#   seed-mysql.sh [SCALE] [DB]
#
# SCALE 1 is about 1 million order rows (roughly 300 MB of table data);
# rows grow linearly with SCALE. DB defaults to cex_bench. The client is
# `mariadb` (or `mysql`) with whatever connection options are in
# MYSQL_OPTS, e.g. MYSQL_OPTS="-h 127.0.0.1 -u root".
# Needs MariaDB's SEQUENCE engine (seq_1_to_N tables); on MySQL 8 use a
# recursive CTE instead.
set -euo pipefail
SCALE=${1:-1}
DB=${2:-cex_bench}
CLIENT=$(command -v mariadb || command -v mysql)
run() { "$CLIENT" ${MYSQL_OPTS:-} "$@"; }

USERS=$((100000 * SCALE))
ORDERS=$((1000000 * SCALE))
TRADES=$((500000 * SCALE))
LEDGER=$((1000000 * SCALE))

run -e "DROP DATABASE IF EXISTS \`$DB\`; CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4;"
run "$DB" <<SQL
CREATE TABLE users (
  id BIGINT PRIMARY KEY,
  email VARCHAR(191) NOT NULL UNIQUE,
  kyc_level TINYINT NOT NULL,
  country CHAR(2) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  api_key_hash BINARY(32) NOT NULL
) ENGINE=InnoDB;

CREATE TABLE balances (
  user_id BIGINT NOT NULL,
  asset VARCHAR(16) NOT NULL,
  available DECIMAL(36,18) NOT NULL,
  frozen DECIMAL(36,18) NOT NULL,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (user_id, asset)
) ENGINE=InnoDB;

CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  symbol VARCHAR(16) NOT NULL,
  side ENUM('buy','sell') NOT NULL,
  price DECIMAL(36,18) NOT NULL,
  qty DECIMAL(36,18) NOT NULL,
  status ENUM('new','partial','filled','cancelled') NOT NULL,
  client_order_id VARCHAR(64),
  created_at DATETIME(6) NOT NULL,
  KEY idx_user (user_id, created_at)
) ENGINE=InnoDB;

CREATE TABLE trades (
  id BIGINT PRIMARY KEY,
  buy_order_id BIGINT NOT NULL,
  sell_order_id BIGINT NOT NULL,
  symbol VARCHAR(16) NOT NULL,
  price DECIMAL(36,18) NOT NULL,
  qty DECIMAL(36,18) NOT NULL,
  fee DECIMAL(36,18) NOT NULL,
  executed_at DATETIME(6) NOT NULL
) ENGINE=InnoDB;

CREATE TABLE ledger (
  id BIGINT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  asset VARCHAR(16) NOT NULL,
  delta DECIMAL(36,18) NOT NULL,
  reason VARCHAR(32) NOT NULL,
  memo TEXT,
  created_at DATETIME(6) NOT NULL
) ENGINE=InnoDB;

INSERT INTO users
SELECT seq, CONCAT('user', seq, '@example.com'), seq % 4, ELT(1 + seq % 5, 'SG','JP','DE','BR','US'),
       TIMESTAMPADD(SECOND, seq, '2024-01-01'), UNHEX(SHA2(seq, 256))
FROM seq_1_to_${USERS};

INSERT INTO balances
SELECT u.seq, a.asset, (u.seq * 7919 % 1000000) / 1000, (u.seq % 13) / 100, '2026-01-01'
FROM seq_1_to_${USERS} u
JOIN (SELECT 'BTC' asset UNION ALL SELECT 'ETH' UNION ALL SELECT 'USDT' UNION ALL SELECT 'SOL' UNION ALL SELECT 'BNB') a;

INSERT INTO orders
SELECT seq, 1 + seq % ${USERS}, ELT(1 + seq % 4, 'BTC-USDT','ETH-USDT','SOL-USDT','BNB-USDT'),
       IF(seq % 2, 'buy', 'sell'), 20000 + (seq * 31 % 50000) / 100, (seq * 17 % 10000) / 10000,
       ELT(1 + seq % 4, 'new','partial','filled','cancelled'),
       IF(seq % 3 = 0, NULL, CONCAT('c-', MD5(seq))), TIMESTAMPADD(MICROSECOND, seq * 1000, '2025-01-01')
FROM seq_1_to_${ORDERS};

INSERT INTO trades
SELECT seq, seq * 2 - 1, seq * 2, ELT(1 + seq % 4, 'BTC-USDT','ETH-USDT','SOL-USDT','BNB-USDT'),
       20000 + (seq * 29 % 50000) / 100, (seq * 13 % 10000) / 10000, (seq % 97) / 100000,
       TIMESTAMPADD(MICROSECOND, seq * 2000, '2025-01-01')
FROM seq_1_to_${TRADES};

INSERT INTO ledger
SELECT seq, 1 + seq % ${USERS}, ELT(1 + seq % 5, 'BTC','ETH','USDT','SOL','BNB'),
       (CAST(seq * 7 % 2001 AS SIGNED) - 1000) / 100, ELT(1 + seq % 3, 'trade','deposit','withdrawal'),
       IF(seq % 10 = 0, CONCAT('note: ', REPEAT(SUBSTRING(MD5(seq), 1, 8), 1 + seq % 6), ' ✓ 入金'), NULL),
       TIMESTAMPADD(MICROSECOND, seq * 1500, '2025-01-01')
FROM seq_1_to_${LEDGER};

CREATE VIEW open_orders AS SELECT id, user_id, symbol, side, price, qty FROM orders WHERE status IN ('new','partial');

DELIMITER ;;
CREATE TRIGGER ledger_guard BEFORE INSERT ON ledger FOR EACH ROW
BEGIN
  IF NEW.asset = '' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'empty asset'; END IF;
END;;
CREATE PROCEDURE user_equity(IN uid BIGINT)
BEGIN
  SELECT asset, available + frozen AS total FROM balances WHERE user_id = uid;
END;;
DELIMITER ;
SQL
run -N -e "SELECT ROUND(SUM(data_length+index_length)/1048576) FROM information_schema.tables WHERE table_schema='$DB'" | sed 's/^/MiB in tables: /'
