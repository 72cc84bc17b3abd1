//! The dump itself: schema discovery, the work items in output order, the
//! row formatter, and the workers that fill per-item bounded channels so
//! several connections read at once while the output stays one ordered
//! SQL script.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Value};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::{exec, explain, rows};
use super::sql::{ident, push_hex, push_quoted, row_hash, string_literal};
use crate::error::{Error, Result};

/// Approximate SQL bytes per data item: small enough that every worker can
/// finish its item into the channel while the output drains another one.
pub const PART_BYTES: u64 = 2 << 20;
/// Bytes per chunk sent down an item's channel.
const CHUNK: usize = 128 << 10;
/// Longest multi-row INSERT (one row may exceed it).
pub const STATEMENT_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Col {
    pub name: String,
    /// FLOAT is printed with 6 digits by the server: read it as DOUBLE,
    /// which is exact and converts back to the same FLOAT.
    pub float: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub db: String,
    pub name: String,
    /// Stored columns (generated ones are left out; invisible ones are in).
    pub columns: Vec<Col>,
    /// First primary-key column when it is an integer: PK-range splitting.
    pub split: Option<String>,
    pub data_length: u64,
}

impl Table {
    pub fn key(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| {
                if c.float {
                    format!("CAST({} AS DOUBLE)", ident(&c.name))
                } else {
                    ident(&c.name)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn insert_prefix(&self) -> Vec<u8> {
        let cols: Vec<String> = self.columns.iter().map(|c| ident(&c.name)).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ",
            ident(&self.name),
            cols.join(",")
        )
        .into_bytes()
    }
}

/// Base tables and their stored columns, for `dbs` (minus `exclude`).
pub async fn tables(conn: &mut Conn, dbs: &[String], exclude: &[String]) -> Result<Vec<Table>> {
    if dbs.is_empty() {
        return Ok(vec![]);
    }
    let list = dbs
        .iter()
        .map(|d| string_literal(d))
        .collect::<Vec<_>>()
        .join(",");
    let t = rows(
        conn,
        "listing tables",
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(DATA_LENGTH,0) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA IN ({list}) AND TABLE_TYPE IN ('BASE TABLE','SYSTEM VERSIONED') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ),
    )
    .await?;
    let cols = rows(
        conn,
        "listing columns",
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA IN ({list}) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
        ),
    )
    .await?;
    let pk = rows(
        conn,
        "listing primary keys",
        &format!(
            "SELECT s.TABLE_SCHEMA, s.TABLE_NAME, s.COLUMN_NAME, c.DATA_TYPE FROM information_schema.STATISTICS s \
             JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME \
             WHERE s.TABLE_SCHEMA IN ({list}) AND s.INDEX_NAME = 'PRIMARY' AND s.SEQ_IN_INDEX = 1"
        ),
    )
    .await?;
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut by_table: HashMap<(String, String), Vec<Col>> = HashMap::new();
    for r in &cols {
        let extra = s(&r[4]).to_ascii_uppercase();
        if extra.contains("VIRTUAL GENERATED")
            || extra.contains("STORED GENERATED")
            || extra.contains("PERSISTENT GENERATED")
        {
            continue;
        }
        by_table.entry((s(&r[0]), s(&r[1]))).or_default().push(Col {
            name: s(&r[2]),
            float: s(&r[3]).eq_ignore_ascii_case("float"),
        });
    }
    let mut splits: HashMap<(String, String), String> = HashMap::new();
    for r in &pk {
        let ty = s(&r[3]).to_ascii_lowercase();
        if ["tinyint", "smallint", "mediumint", "int", "bigint"].contains(&ty.as_str()) {
            splits.insert((s(&r[0]), s(&r[1])), s(&r[2]));
        }
    }
    let mut out = Vec::new();
    for r in t {
        let (db, name) = (s(&r[0]), s(&r[1]));
        if excluded(exclude, &db, &name) {
            continue;
        }
        let key = (db.clone(), name.clone());
        out.push(Table {
            columns: by_table.remove(&key).unwrap_or_default(),
            split: splits.remove(&key),
            data_length: s(&r[2]).parse().unwrap_or(0),
            db,
            name,
        });
    }
    Ok(out)
}

/// `exclude-tables` entries are `db.table` or `table` (any database).
pub fn excluded(exclude: &[String], db: &str, table: &str) -> bool {
    exclude.iter().any(|e| match e.split_once('.') {
        Some((d, t)) => d == db && t == table,
        None => e == table,
    })
}

/// One piece of the output, in order.
#[derive(Debug, Clone)]
pub enum Item {
    Text(Bytes),
    Schema {
        db: String,
    },
    Data {
        table: usize,
        part: usize,
        lo: Option<i128>,
        hi: Option<i128>,
    },
    Routines {
        db: String,
    },
    Views,
    Triggers {
        db: String,
    },
    Events {
        db: String,
    },
}

/// Splits big tables into primary-key ranges of about `PART_BYTES` each.
/// Ranges are open at both ends, so rows outside min..max (inserted after
/// planning) are still dumped.
pub async fn plan_data(conn: &mut Conn, tables: &[Table]) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let parts = (t.data_length / PART_BYTES).clamp(1, 100_000);
        let mut bounds = None;
        if let (Some(col), true) = (&t.split, parts > 1) {
            let r = rows(
                conn,
                &format!("reading key range of {}", t.key()),
                &format!(
                    "SELECT MIN({c}), MAX({c}) FROM {}.{}",
                    ident(&t.db),
                    ident(&t.name),
                    c = ident(col)
                ),
            )
            .await?;
            if let Some(r) = r.first() {
                if let (Some(Ok(lo)), Some(Ok(hi))) = (
                    r[0].as_deref().map(str::parse::<i128>),
                    r[1].as_deref().map(str::parse::<i128>),
                ) {
                    if hi > lo {
                        bounds = Some((lo, hi));
                    }
                }
            }
        }
        match bounds {
            None => items.push(Item::Data {
                table: i,
                part: 0,
                lo: None,
                hi: None,
            }),
            Some((lo, hi)) => {
                let parts = (parts as i128).min(hi - lo);
                let step = ((hi - lo) / parts).max(1);
                for p in 0..parts {
                    let a = (p > 0).then(|| lo + p * step);
                    let b = (p + 1 < parts).then(|| lo + (p + 1) * step);
                    items.push(Item::Data {
                        table: i,
                        part: p as usize,
                        lo: a,
                        hi: b,
                    });
                }
            }
        }
    }
    Ok(items)
}

/// How a column's text value becomes a literal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Raw,
    /// DECIMAL: trailing fractional zeros dropped (`1.500000` → `1.5`),
    /// the same value in fewer bytes.
    Decimal,
    Quoted,
    /// DATETIME/TIME/TIMESTAMP with fractional seconds, zeros dropped
    /// (`…:40.000000` → `…:40`): the same value.
    Temporal,
    Hex,
}

/// `v` without trailing zeros after a decimal point (and without the point
/// when nothing is left after it).
fn trim_fraction(v: &[u8]) -> &[u8] {
    if !v.contains(&b'.') {
        return v;
    }
    let mut end = v.len();
    while end > 0 && v[end - 1] == b'0' {
        end -= 1;
    }
    if end > 0 && v[end - 1] == b'.' {
        end -= 1;
    }
    &v[..end]
}

pub fn kinds(cols: &[Column]) -> Vec<Kind> {
    use ColumnType::*;
    cols.iter()
        .map(|c| match c.column_type() {
            MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_YEAR => Kind::Raw,
            MYSQL_TYPE_BIT | MYSQL_TYPE_GEOMETRY => Kind::Hex,
            MYSQL_TYPE_DATE
            | MYSQL_TYPE_NEWDATE
            | MYSQL_TYPE_TIME
            | MYSQL_TYPE_TIME2
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_JSON => Kind::Quoted,
            _ if c
                .flags()
                .intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG) =>
            {
                Kind::Quoted
            }
            // The binary charset: BINARY, VARBINARY, BLOB.
            _ if c.character_set() == 63 => Kind::Hex,
            _ => Kind::Quoted,
        })
        .collect()
}

/// Appends `(v1,v2,…)`.
pub fn push_row(out: &mut Vec<u8>, kinds: &[Kind], row: &mysql_async::Row) {
    out.push(b'(');
    for (i, k) in kinds.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match row.as_ref(i) {
            None | Some(Value::NULL) => out.extend_from_slice(b"NULL"),
            Some(Value::Bytes(b)) => match k {
                Kind::Raw => out.extend_from_slice(b),
                Kind::Decimal => out.extend_from_slice(trim_fraction(b)),
                Kind::Quoted => push_quoted(out, b),
                Kind::Temporal => {
                    out.push(b'\'');
                    out.extend_from_slice(trim_fraction(b));
                    out.push(b'\'');
                }
                Kind::Hex => push_hex(out, b),
            },
            Some(v) => out.extend_from_slice(v.as_sql(false).as_bytes()),
        }
    }
    out.push(b')');
}

/// Per-table results: exact row count and the order-independent digest of
/// the formatted rows (a restore test recomputes both).
#[derive(Default, Debug, Clone, Copy)]
pub struct TableStats {
    pub rows: u64,
    pub digest: u64,
}

/// Shared by the workers of one dump.
pub struct Shared {
    pub items: Vec<Item>,
    pub tables: Vec<Table>,
    pub views: Vec<(String, String)>,
    pub routines: Vec<(String, String, String)>,
    pub triggers: Vec<(String, String)>,
    pub events: Vec<(String, String)>,
    next: AtomicUsize,
    senders: Vec<Mutex<Option<mpsc::Sender<Bytes>>>>,
    done: Vec<AtomicBool>,
    pub stats: Mutex<HashMap<usize, TableStats>>,
    pub failed: CancellationToken,
    /// Items taken but not yet read by the output: bounds the look-ahead
    /// (and so the memory) whatever the number of items.
    pub window: tokio::sync::Semaphore,
    pub error: Mutex<Option<Error>>,
    /// The consumer went away (store failure or interrupt): stop quietly,
    /// the backup reports the store's error.
    pub abandoned: AtomicBool,
}

pub struct Objects {
    pub views: Vec<(String, String)>,
    pub routines: Vec<(String, String, String)>,
    pub triggers: Vec<(String, String)>,
    pub events: Vec<(String, String)>,
}

impl Shared {
    pub fn new(
        items: Vec<Item>,
        tables: Vec<Table>,
        o: Objects,
        lookahead: usize,
    ) -> (Arc<Shared>, Vec<mpsc::Receiver<Bytes>>) {
        let slots = (PART_BYTES as usize / CHUNK) + 4;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in &items {
            let (tx, rx) = mpsc::channel(slots);
            senders.push(Mutex::new(Some(tx)));
            receivers.push(rx);
        }
        let done = items.iter().map(|_| AtomicBool::new(false)).collect();
        (
            Arc::new(Shared {
                items,
                tables,
                views: o.views,
                routines: o.routines,
                triggers: o.triggers,
                events: o.events,
                next: AtomicUsize::new(0),
                senders,
                done,
                stats: Mutex::new(HashMap::new()),
                failed: CancellationToken::new(),
                window: tokio::sync::Semaphore::new(lookahead),
                error: Mutex::new(None),
                abandoned: AtomicBool::new(false),
            }),
            receivers,
        )
    }

    pub fn is_done(&self, i: usize) -> bool {
        self.done[i].load(Ordering::Acquire)
    }

    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.cancel();
    }

    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap().take()
    }

    pub fn table_stats(&self) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
        let stats = self.stats.lock().unwrap();
        let mut out: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
        for (i, t) in self.tables.iter().enumerate() {
            let s = stats.get(&i).copied().unwrap_or_default();
            out.entry(t.db.clone()).or_default().insert(
                t.name.clone(),
                json!({"rows": s.rows, "digest": format!("{:016x}", s.digest)}),
            );
        }
        out
    }
}

/// Why an item stopped early.
enum Stop {
    Failed(Error),
    Abandoned,
}

/// Buffers output for one item and sends it in `CHUNK`s.
struct Out<'a> {
    tx: &'a mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    failed: &'a CancellationToken,
}

impl Out<'_> {
    async fn flush(&mut self) -> std::result::Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK + (16 << 10)),
        ));
        tokio::select! {
            r = self.tx.send(data) => r.map_err(|_| Stop::Abandoned),
            _ = self.failed.cancelled() => Err(Stop::Abandoned),
        }
    }
    async fn maybe_flush(&mut self) -> std::result::Result<(), Stop> {
        if self.buf.len() >= CHUNK {
            self.flush().await
        } else {
            Ok(())
        }
    }
    fn text(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }
}

/// A worker: takes items in order until none is left.
pub async fn worker(shared: Arc<Shared>, mut conn: Conn) -> Result<Conn> {
    loop {
        tokio::select! {
            p = shared.window.acquire() => match p {
                Ok(p) => p.forget(),
                Err(_) => return Ok(conn),
            },
            _ = shared.failed.cancelled() => return Ok(conn),
        }
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        if i >= shared.items.len() {
            return Ok(conn);
        }
        let tx = shared.senders[i]
            .lock()
            .unwrap()
            .take()
            .expect("each item is taken once");
        let mut out = Out {
            tx: &tx,
            buf: Vec::with_capacity(CHUNK + (16 << 10)),
            failed: &shared.failed,
        };
        let res = match produce(&shared, &mut conn, i, &mut out).await {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => shared.done[i].store(true, Ordering::Release),
            Err(Stop::Abandoned) => {
                if !shared.failed.is_cancelled() {
                    shared.abandoned.store(true, Ordering::SeqCst);
                }
                shared.failed.cancel();
                return Ok(conn);
            }
            Err(Stop::Failed(e)) => {
                shared.fail(e);
                return Ok(conn);
            }
        }
    }
}

fn src_err(what: String, e: mysql_async::Error) -> Stop {
    Stop::Failed(Error::source_err(what, explain(&e)))
}

async fn produce(
    shared: &Shared,
    conn: &mut Conn,
    i: usize,
    out: &mut Out<'_>,
) -> std::result::Result<(), Stop> {
    let marker = |kind: &str, v: serde_json::Value| format!("\n{}{kind} {v}\n", super::sql::MARKER);
    match &shared.items[i] {
        Item::Text(b) => out.buf.extend_from_slice(b),
        Item::Schema { db } => {
            out.text(&marker("schema", json!({"db": db})));
            let r = q_rows(conn, &format!("reading database {db}"), &format!(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                string_literal(db)
            )).await?;
            let (cs, co) = r
                .first()
                .map(|r| {
                    (
                        r[0].clone().unwrap_or_default(),
                        r[1].clone().unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            out.text(&format!(
                "CREATE DATABASE /*!32312 IF NOT EXISTS*/ {} /*!40100 DEFAULT CHARACTER SET {cs} COLLATE {co} */;\nUSE {};\n",
                ident(db), ident(db)
            ));
            for t in shared.tables.iter().filter(|t| &t.db == db) {
                let r = q_rows(
                    conn,
                    &format!("reading the definition of {}", t.key()),
                    &format!("SHOW CREATE TABLE {}.{}", ident(&t.db), ident(&t.name)),
                )
                .await?;
                let create = r
                    .first()
                    .and_then(|r| r.get(1).cloned().flatten())
                    .ok_or_else(|| {
                        Stop::Failed(Error::source_err(
                            t.key(),
                            "SHOW CREATE TABLE returned nothing",
                        ))
                    })?;
                out.text(&format!(
                    "\nDROP TABLE IF EXISTS {};\n{create};\n",
                    ident(&t.name)
                ));
                out.maybe_flush().await?;
            }
        }
        Item::Data {
            table,
            part,
            lo,
            hi,
        } => {
            let t = &shared.tables[*table];
            out.text(&marker(
                "data",
                json!({"db": t.db, "table": t.name, "part": part}),
            ));
            out.text(&format!("USE {};\n", ident(&t.db)));
            let mut sql = format!(
                "SELECT /*!40001 SQL_NO_CACHE */ {} FROM {}.{}",
                t.select_list(),
                ident(&t.db),
                ident(&t.name)
            );
            if let Some(col) = &t.split {
                let c = ident(col);
                match (lo, hi) {
                    (Some(a), Some(b)) => sql.push_str(&format!(" WHERE {c} >= {a} AND {c} < {b}")),
                    (Some(a), None) => sql.push_str(&format!(" WHERE {c} >= {a}")),
                    (None, Some(b)) => sql.push_str(&format!(" WHERE {c} < {b}")),
                    (None, None) => {}
                }
            }
            let what = format!("dumping {}", t.key());
            if t.columns.is_empty() {
                return Ok(());
            }
            let prefix = t.insert_prefix();
            let mut stats = TableStats::default();
            {
                let mut res = conn
                    .query_iter(sql)
                    .await
                    .map_err(|e| src_err(what.clone(), e))?;
                let kinds = kinds(res.columns_ref());
                let mut in_stmt = 0usize;
                loop {
                    let row = match res.next().await {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(e) => return Err(src_err(what.clone(), e)),
                    };
                    if in_stmt == 0 {
                        out.buf.extend_from_slice(&prefix);
                    } else {
                        out.buf.push(b',');
                    }
                    let start = out.buf.len();
                    push_row(&mut out.buf, &kinds, &row);
                    let len = out.buf.len() - start;
                    stats.rows += 1;
                    stats.digest = stats.digest.wrapping_add(row_hash(&out.buf[start..]));
                    in_stmt += len + 1;
                    if in_stmt + prefix.len() >= STATEMENT_BYTES {
                        out.buf.extend_from_slice(b";\n");
                        in_stmt = 0;
                        out.maybe_flush().await?;
                    }
                }
                if in_stmt > 0 {
                    out.buf.extend_from_slice(b";\n");
                }
            }
            let mut all = shared.stats.lock().unwrap();
            let s = all.entry(*table).or_default();
            s.rows += stats.rows;
            s.digest = s.digest.wrapping_add(stats.digest);
        }
        Item::Routines { db } => {
            out.text(&marker("post", json!({"db": db, "what": "routines"})));
            out.text(&format!("USE {};\n", ident(db)));
            use_db(conn, db).await?;
            for (_, name, ty) in shared.routines.iter().filter(|r| &r.0 == db) {
                let r = q_rows(
                    conn,
                    &format!("reading {ty} {db}.{name}"),
                    &format!("SHOW CREATE {ty} {}", ident(name)),
                )
                .await?;
                let row = r.first().cloned().unwrap_or_default();
                let body = row.get(2).cloned().flatten().ok_or_else(|| Stop::Failed(Error::source_err(
                    format!("{ty} {db}.{name}"),
                    "missing privilege: the server hides the routine's body (grant SHOW CREATE ROUTINE or SELECT on mysql.proc)",
                )))?;
                let mode = row.get(1).cloned().flatten().unwrap_or_default();
                out.text(&format!("DROP {ty} IF EXISTS {};\n", ident(name)));
                object(out, &mode, None, &body);
            }
        }
        Item::Views => {
            for (db, name) in order_views(conn, &shared.views).await? {
                out.text(&marker(
                    "post",
                    json!({"db": db, "what": "view", "name": name.0}),
                ));
                out.text(&format!(
                    "USE {};\nDROP VIEW IF EXISTS {};\n",
                    ident(&db),
                    ident(&name.0)
                ));
                out.text(&format!("{};\n", name.1));
                out.maybe_flush().await?;
            }
        }
        Item::Triggers { db } => {
            out.text(&marker("post", json!({"db": db, "what": "triggers"})));
            out.text(&format!("USE {};\n", ident(db)));
            use_db(conn, db).await?;
            for (_, name) in shared.triggers.iter().filter(|r| &r.0 == db) {
                let r = q_rows(
                    conn,
                    &format!("reading trigger {db}.{name}"),
                    &format!("SHOW CREATE TRIGGER {}", ident(name)),
                )
                .await?;
                let row = r.first().cloned().unwrap_or_default();
                let body = row.get(2).cloned().flatten().unwrap_or_default();
                let mode = row.get(1).cloned().flatten().unwrap_or_default();
                out.text(&format!("DROP TRIGGER IF EXISTS {};\n", ident(name)));
                object(out, &mode, None, &body);
            }
        }
        Item::Events { db } => {
            out.text(&marker("post", json!({"db": db, "what": "events"})));
            out.text(&format!("USE {};\n", ident(db)));
            use_db(conn, db).await?;
            for (_, name) in shared.events.iter().filter(|r| &r.0 == db) {
                let r = q_rows(
                    conn,
                    &format!("reading event {db}.{name}"),
                    &format!("SHOW CREATE EVENT {}", ident(name)),
                )
                .await?;
                let row = r.first().cloned().unwrap_or_default();
                let body = row.get(3).cloned().flatten().unwrap_or_default();
                let mode = row.get(1).cloned().flatten().unwrap_or_default();
                let tz = row.get(2).cloned().flatten();
                out.text(&format!("DROP EVENT IF EXISTS {};\n", ident(name)));
                object(out, &mode, tz.as_deref(), &body);
            }
        }
    }
    Ok(())
}

/// A routine, trigger or event, created under its own SQL mode (and time
/// zone), between `DELIMITER ;;` lines as mysqldump writes them.
fn object(out: &mut Out<'_>, mode: &str, tz: Option<&str>, body: &str) {
    out.text(&format!(
        "SET SESSION sql_mode = {};\n",
        string_literal(mode)
    ));
    if let Some(tz) = tz {
        out.text(&format!(
            "SET SESSION time_zone = {};\n",
            string_literal(tz)
        ));
    }
    out.text(&format!(
        "DELIMITER ;;\n{body} ;;\nDELIMITER ;\nSET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n"
    ));
    if tz.is_some() {
        out.text("SET SESSION time_zone = '+00:00';\n");
    }
}

async fn use_db(conn: &mut Conn, db: &str) -> std::result::Result<(), Stop> {
    exec(
        conn,
        &format!("using database {db}"),
        &format!("USE {}", ident(db)),
    )
    .await
    .map_err(Stop::Failed)
}

async fn q_rows(
    conn: &mut Conn,
    what: &str,
    sql: &str,
) -> std::result::Result<Vec<Vec<Option<String>>>, Stop> {
    rows(conn, what, sql).await.map_err(Stop::Failed)
}

type ViewDef = (String, (String, String));

/// Views with their definitions (read relative to their own database, so
/// they carry no database name), ordered so each comes after the views it uses.
async fn order_views(
    conn: &mut Conn,
    views: &[(String, String)],
) -> std::result::Result<Vec<ViewDef>, Stop> {
    let mut defs: Vec<ViewDef> = Vec::new();
    for (db, name) in views {
        use_db(conn, db).await?;
        let r = q_rows(
            conn,
            &format!("reading view {db}.{name}"),
            &format!("SHOW CREATE VIEW {}", ident(name)),
        )
        .await?;
        let body = r
            .first()
            .and_then(|r| r.get(1).cloned().flatten())
            .unwrap_or_default();
        defs.push((db.clone(), (name.clone(), body)));
    }
    Ok(topo(defs))
}

/// Kahn's algorithm over "definition mentions `name`" edges; a cycle (a
/// false match) falls back to name order.
pub fn topo(defs: Vec<ViewDef>) -> Vec<ViewDef> {
    let n = defs.len();
    let uses = |a: usize, b: usize| -> bool {
        if a == b {
            return false;
        }
        let (db_b, (name_b, _)) = &defs[b];
        let body = &defs[a].1 .1;
        let q = format!("{}.{}", ident(db_b), ident(name_b));
        body.contains(&q) || (defs[a].0 == *db_b && body.contains(&format!(" {}", ident(name_b))))
    };
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&a| !placed[a] && (0..n).all(|b| placed[b] || !uses(a, b)));
        let pick = next.unwrap_or_else(|| (0..n).find(|&a| !placed[a]).unwrap());
        placed[pick] = true;
        order.push(pick);
    }
    let mut slots: Vec<Option<ViewDef>> = defs.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().unwrap())
        .collect()
}

/// Row count and digest of one table as it is now (restore tests).
pub async fn table_digest(conn: &mut Conn, t: &Table) -> Result<TableStats> {
    let mut stats = TableStats::default();
    if t.columns.is_empty() {
        return Ok(stats);
    }
    let what = format!("reading {}", t.key());
    let mut res = conn
        .query_iter(format!(
            "SELECT {} FROM {}.{}",
            t.select_list(),
            ident(&t.db),
            ident(&t.name)
        ))
        .await
        .map_err(|e| Error::source_err(what.clone(), explain(&e)))?;
    let kinds = kinds(res.columns_ref());
    let mut buf = Vec::with_capacity(4096);
    while let Some(row) = res
        .next()
        .await
        .map_err(|e| Error::source_err(what.clone(), explain(&e)))?
    {
        buf.clear();
        push_row(&mut buf, &kinds, &row);
        stats.rows += 1;
        stats.digest = stats.digest.wrapping_add(row_hash(&buf));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_lose_only_trailing_zeros() {
        assert_eq!(trim_fraction(b"1.500000"), b"1.5");
        assert_eq!(trim_fraction(b"-20.000"), b"-20");
        assert_eq!(trim_fraction(b"100"), b"100");
        assert_eq!(
            trim_fraction(b"0.000000000000000001"),
            b"0.000000000000000001"
        );
        assert_eq!(
            trim_fraction(b"2025-01-01 00:16:40.000000"),
            b"2025-01-01 00:16:40"
        );
        assert_eq!(trim_fraction(b"-838:59:59.120"), b"-838:59:59.12");
    }

    #[test]
    fn views_come_after_the_views_they_use() {
        let v = |db: &str, n: &str, body: &str| (db.to_string(), (n.to_string(), body.to_string()));
        let out = topo(vec![
            v(
                "a",
                "top",
                "VIEW `top` AS select `mid`.`x` AS `x` from `mid`",
            ),
            v("a", "mid", "VIEW `mid` AS select `x` from `b`.`base`"),
            v("b", "base", "VIEW `base` AS select 1 AS `x`"),
        ]);
        let names: Vec<_> = out.iter().map(|d| d.1 .0.as_str()).collect();
        assert_eq!(names, ["base", "mid", "top"]);
        assert!(excluded(&["x.t".into(), "logs".into()], "x", "t"));
        assert!(excluded(&["x.t".into(), "logs".into()], "y", "logs"));
        assert!(!excluded(&["x.t".into()], "y", "t"));
    }
}
