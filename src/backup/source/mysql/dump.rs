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

use super::conn::{exec, raw_rows, rows, MysqlError};
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
    pub engine: String,
    /// The engine supports transactions (`information_schema.ENGINES`):
    /// only those tables are read at the snapshot.
    pub transactional: bool,
}

/// Engines whose rows live elsewhere (MERGE: in the underlying tables,
/// FEDERATED: on another server): their data is not dumped, as mysqldump
/// does, since restoring it would write the rows twice or remotely.
pub const NO_DATA_ENGINES: [&str; 3] = ["MRG_MYISAM", "FEDERATED", "MRG_ISAM"];

impl Table {
    pub fn key(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
    /// Whether its rows are dumped (see `NO_DATA_ENGINES`).
    pub fn has_data(&self) -> bool {
        !NO_DATA_ENGINES.contains(&self.engine.to_ascii_uppercase().as_str())
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
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, COALESCE(t.DATA_LENGTH,0), COALESCE(t.ENGINE,''), COALESCE(e.TRANSACTIONS,'NO') \
             FROM information_schema.TABLES t LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
             WHERE t.TABLE_SCHEMA IN ({list}) AND t.TABLE_TYPE IN ('BASE TABLE','SYSTEM VERSIONED') \
             ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME"
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
            engine: s(&r[3]),
            transactional: s(&r[4]).eq_ignore_ascii_case("YES"),
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
///
/// Tables are dumped largest first (by the server's DATA_LENGTH estimate):
/// the restore loads each table whole on one connection, so the longest
/// loads start first and the others fill in around them (and the dump's
/// connections, taking ranges in order, end together the same way).
pub async fn plan_data(conn: &mut Conn, tables: &[Table]) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut order: Vec<usize> = (0..tables.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(tables[i].data_length), i));
    for i in order {
        let t = &tables[i];
        if !t.has_data() {
            continue;
        }
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
    pub objects: Objects,
    next: AtomicUsize,
    senders: Vec<Mutex<Option<mpsc::Sender<Bytes>>>>,
    done: Vec<AtomicBool>,
    pub stats: Mutex<HashMap<usize, TableStats>>,
    /// Fingerprints of the objects as dumped, by database and `KIND name`
    /// (the manifest's `definitions`; a restore test recomputes them).
    pub defs: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    pub failed: CancellationToken,
    /// Items taken but not yet read by the output: bounds the look-ahead
    /// (and so the memory) whatever the number of items.
    pub window: tokio::sync::Semaphore,
    pub error: Mutex<Option<Error>>,
    /// The consumer went away (store failure or interrupt): stop quietly,
    /// the backup reports the store's error.
    pub abandoned: AtomicBool,
}

/// A view, routine, trigger, event or sequence, with the session context
/// it was created under (from `information_schema`), which the dump
/// re-establishes around it as mysqldump does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Obj {
    pub db: String,
    pub name: String,
    /// `VIEW`, `PROCEDURE`, `FUNCTION`, `TRIGGER`, `EVENT` or `SEQUENCE`.
    pub kind: String,
    pub cs_client: String,
    pub collation: String,
    pub db_collation: String,
    pub sql_mode: String,
    pub time_zone: String,
}

impl Obj {
    pub fn label(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub views: Vec<Obj>,
    pub routines: Vec<Obj>,
    pub triggers: Vec<Obj>,
    pub events: Vec<Obj>,
    pub sequences: Vec<Obj>,
}

impl Objects {
    pub fn counts(&self) -> serde_json::Value {
        json!({"views": self.views.len(), "routines": self.routines.len(), "triggers": self.triggers.len(),
               "events": self.events.len(), "sequences": self.sequences.len()})
    }
}

/// Table types of `information_schema.TABLES` the dump handles; any other
/// fails the backup by name rather than vanishing from it.
/// Routine types the dump handles (a PACKAGE BODY comes after its PACKAGE).
const ROUTINE_TYPES: [&str; 4] = ["PROCEDURE", "FUNCTION", "PACKAGE", "PACKAGE BODY"];

const KNOWN_TABLE_TYPES: [&str; 4] = ["BASE TABLE", "SYSTEM VERSIONED", "VIEW", "SEQUENCE"];

/// Every view, routine, trigger, event and sequence of `dbs` (minus
/// `exclude`), with its creation context. An object kind this dumper does
/// not know (an Oracle-mode PACKAGE, a new table type) is an error naming it.
pub async fn list_objects(conn: &mut Conn, dbs: &[String], exclude: &[String]) -> Result<Objects> {
    let mut o = Objects::default();
    if dbs.is_empty() {
        return Ok(o);
    }
    let list = dbs
        .iter()
        .map(|d| string_literal(d))
        .collect::<Vec<_>>()
        .join(",");
    refuse_unknown_tables(conn, &list, exclude).await?;
    o.sequences = list_sequences(conn, &list, exclude).await?;
    o.views = list_views(conn, &list, exclude).await?;
    o.routines = list_routines(conn, &list).await?;
    o.triggers = list_triggers(conn, &list, exclude).await?;
    o.events = list_events(conn, &list).await?;
    Ok(o)
}

/// A text column of an information_schema row (NULL: empty).
fn col(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// Fails naming every table of a type the dump does not handle.
async fn refuse_unknown_tables(conn: &mut Conn, list: &str, exclude: &[String]) -> Result<()> {
    let unknown: Vec<String> = rows(
        conn,
        "listing table types",
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA IN ({list}) AND TABLE_TYPE NOT IN ({}) ORDER BY 1, 2",
            KNOWN_TABLE_TYPES.map(string_literal).join(",")
        ),
    )
    .await?
    .iter()
    .filter(|r| !excluded(exclude, &col(&r[0]), &col(&r[1])))
    .map(|r| format!("{}.{} ({})", col(&r[0]), col(&r[1]), col(&r[2])))
    .collect();
    if !unknown.is_empty() {
        return Err(Error::source_err(
            "mysql dump",
            format!(
                "cannot dump object(s) of a kind cexdr does not know: {}; exclude them with exclude-tables or report it",
                unknown.join(", ")
            ),
        ));
    }
    Ok(())
}

async fn list_sequences(conn: &mut Conn, list: &str, exclude: &[String]) -> Result<Vec<Obj>> {
    Ok(rows(
        conn,
        "listing sequences",
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA IN ({list}) AND TABLE_TYPE = 'SEQUENCE' ORDER BY 1, 2"
        ),
    )
    .await?
    .iter()
    .filter(|r| !excluded(exclude, &col(&r[0]), &col(&r[1])))
    .map(|r| Obj {
        db: col(&r[0]),
        name: col(&r[1]),
        kind: "SEQUENCE".into(),
        ..Obj::default()
    })
    .collect())
}

async fn list_views(conn: &mut Conn, list: &str, exclude: &[String]) -> Result<Vec<Obj>> {
    Ok(rows(
        conn,
        "listing views",
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.VIEWS \
             WHERE TABLE_SCHEMA IN ({list}) ORDER BY 1, 2"
        ),
    )
    .await?
    .iter()
    .filter(|r| !excluded(exclude, &col(&r[0]), &col(&r[1])))
    .map(|r| Obj {
        db: col(&r[0]),
        name: col(&r[1]),
        kind: "VIEW".into(),
        cs_client: col(&r[2]),
        collation: col(&r[3]),
        ..Obj::default()
    })
    .collect())
}

/// Routines are not excluded by table name; one of a type the dump does not
/// handle fails the backup.
async fn list_routines(conn: &mut Conn, list: &str) -> Result<Vec<Obj>> {
    let routines = rows(
        conn,
        "listing routines",
        &format!(
            "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE \
             FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ({list}) \
             ORDER BY 1, FIELD(ROUTINE_TYPE, 'PROCEDURE', 'FUNCTION', 'PACKAGE', 'PACKAGE BODY'), 2"
        ),
    )
    .await?;
    let odd: Vec<String> = routines
        .iter()
        .filter(|r| !ROUTINE_TYPES.contains(&col(&r[2]).as_str()))
        .map(|r| format!("{} {}.{}", col(&r[2]), col(&r[0]), col(&r[1])))
        .collect();
    if !odd.is_empty() {
        return Err(Error::source_err(
            "mysql dump",
            format!(
                "cannot dump routine(s) of a kind cexdr does not know: {}",
                odd.join(", ")
            ),
        ));
    }
    Ok(routines
        .iter()
        .map(|r| Obj {
            db: col(&r[0]),
            name: col(&r[1]),
            kind: col(&r[2]),
            cs_client: col(&r[3]),
            collation: col(&r[4]),
            db_collation: col(&r[5]),
            sql_mode: col(&r[6]),
            ..Obj::default()
        })
        .collect())
}

/// Triggers, excluded with their table.
async fn list_triggers(conn: &mut Conn, list: &str, exclude: &[String]) -> Result<Vec<Obj>> {
    Ok(rows(
        conn,
        "listing triggers",
        &format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE \
             FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({list}) \
             ORDER BY TRIGGER_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER"
        ),
    )
    .await?
    .iter()
    .filter(|r| !excluded(exclude, &col(&r[0]), &col(&r[2])))
    .map(|r| Obj {
        db: col(&r[0]),
        name: col(&r[1]),
        kind: "TRIGGER".into(),
        cs_client: col(&r[3]),
        collation: col(&r[4]),
        db_collation: col(&r[5]),
        sql_mode: col(&r[6]),
        ..Obj::default()
    })
    .collect())
}

async fn list_events(conn: &mut Conn, list: &str) -> Result<Vec<Obj>> {
    Ok(rows(
        conn,
        "listing events",
        &format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, TIME_ZONE \
             FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({list}) ORDER BY 1, 2"
        ),
    )
    .await?
    .iter()
    .map(|r| Obj {
        db: col(&r[0]),
        name: col(&r[1]),
        kind: "EVENT".into(),
        cs_client: col(&r[2]),
        collation: col(&r[3]),
        db_collation: col(&r[4]),
        sql_mode: col(&r[5]),
        time_zone: col(&r[6]),
    })
    .collect())
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
                objects: o,
                next: AtomicUsize::new(0),
                senders,
                done,
                stats: Mutex::new(HashMap::new()),
                defs: Mutex::new(BTreeMap::new()),
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
        for (i, t) in self.tables.iter().enumerate().filter(|(_, t)| t.has_data()) {
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
    Stop::Failed(Error::source_from(what, MysqlError(e)))
}

fn marker(kind: &str, v: serde_json::Value) -> String {
    format!("\n{}{kind} {v}\n", super::sql::MARKER)
}

async fn produce(
    shared: &Shared,
    conn: &mut Conn,
    i: usize,
    out: &mut Out<'_>,
) -> std::result::Result<(), Stop> {
    match &shared.items[i] {
        Item::Text(b) => out.buf.extend_from_slice(b),
        Item::Schema { db } => schema(shared, conn, db, out).await?,
        Item::Data {
            table,
            part,
            lo,
            hi,
        } => data(shared, conn, *table, *part, (*lo, *hi), out).await?,
        Item::Routines { db } => {
            db_objects(shared, conn, db, "routines", &shared.objects.routines, out).await?
        }
        Item::Views => {
            for (o, body) in order_views(conn, &shared.objects.views).await? {
                out.text(&marker(
                    "post",
                    json!({"db": o.db, "what": "view", "name": o.name}),
                ));
                record(shared, &o, &body);
                out.text(&format!("USE {};\n", ident(&o.db)));
                write_object(&mut out.buf, &o, "", &body);
                out.maybe_flush().await?;
            }
        }
        Item::Triggers { db } => {
            db_objects(shared, conn, db, "triggers", &shared.objects.triggers, out).await?
        }
        Item::Events { db } => {
            db_objects(shared, conn, db, "events", &shared.objects.events, out).await?
        }
    }
    Ok(())
}

/// A database's schema section: CREATE DATABASE, its sequences, then its
/// tables' definitions.
async fn schema(
    shared: &Shared,
    conn: &mut Conn,
    db: &str,
    out: &mut Out<'_>,
) -> std::result::Result<(), Stop> {
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
    // Sequences first: a table's DEFAULT NEXT VALUE FOR names one.
    let seqs: Vec<&Obj> = shared
        .objects
        .sequences
        .iter()
        .filter(|o| o.db == db)
        .collect();
    if !seqs.is_empty() {
        use_db(conn, db).await?;
    }
    for o in seqs {
        let body = show_create(conn, o).await.map_err(Stop::Failed)?;
        record(shared, o, &body);
        out.text("\n");
        write_object(&mut out.buf, o, "", &body);
    }
    for t in shared.tables.iter().filter(|t| t.db == db) {
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
    Ok(())
}

/// One data section: the rows of `table` in its primary-key range
/// `[lo, hi)`, as multi-row INSERTs, counted and digested.
async fn data(
    shared: &Shared,
    conn: &mut Conn,
    table: usize,
    part: usize,
    (lo, hi): (Option<i128>, Option<i128>),
    out: &mut Out<'_>,
) -> std::result::Result<(), Stop> {
    let t = &shared.tables[table];
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
    let s = all.entry(table).or_default();
    s.rows += stats.rows;
    s.digest = s.digest.wrapping_add(stats.digest);
    Ok(())
}

/// A post section of one database's routines, triggers or events (`what`),
/// each created with the database's collation of now.
async fn db_objects(
    shared: &Shared,
    conn: &mut Conn,
    db: &str,
    what: &str,
    list: &[Obj],
    out: &mut Out<'_>,
) -> std::result::Result<(), Stop> {
    out.text(&marker("post", json!({"db": db, "what": what})));
    out.text(&format!("USE {};\n", ident(db)));
    use_db(conn, db).await?;
    let now = db_collation(conn, db).await?;
    for o in list.iter().filter(|r| r.db == db) {
        let body = show_create(conn, o).await.map_err(Stop::Failed)?;
        record(shared, o, &body);
        write_object(&mut out.buf, o, &now, &body);
        out.maybe_flush().await?;
    }
    Ok(())
}

/// Remembers the fingerprint of an object as dumped.
fn record(shared: &Shared, o: &Obj, body: &[u8]) {
    shared
        .defs
        .lock()
        .unwrap()
        .entry(o.db.clone())
        .or_default()
        .insert(o.label(), fingerprint(o, body));
}

/// What a restore must reproduce of an object: its context and its
/// definition's bytes as the server shows them (the database name is not
/// part of it, so a renamed restore compares equal).
pub fn fingerprint(o: &Obj, body: &[u8]) -> String {
    let mut b = Vec::with_capacity(body.len() + 128);
    for f in [
        &o.kind,
        &o.cs_client,
        &o.collation,
        &o.db_collation,
        &o.sql_mode,
        &o.time_zone,
    ] {
        b.extend_from_slice(f.as_bytes());
        b.push(0);
    }
    b.extend_from_slice(body);
    format!("{:016x}", row_hash(&b))
}

/// The database's current default collation.
async fn db_collation(conn: &mut Conn, db: &str) -> std::result::Result<String, Stop> {
    let r = q_rows(
        conn,
        &format!("reading database {db}"),
        &format!(
            "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            string_literal(db)
        ),
    )
    .await?;
    Ok(r.first().and_then(|r| r[0].clone()).unwrap_or_default())
}

/// `SHOW CREATE` of an object as raw bytes (`character_set_results =
/// binary`, as mysqldump reads them): the definition stays in the
/// character set it was written in, which the dump then declares with
/// `SET character_set_client`. For a sequence: the `CREATE SEQUENCE` and a
/// `DO SETVAL` of its current position. Run after `USE` of its database.
pub async fn show_create(conn: &mut Conn, o: &Obj) -> Result<Vec<u8>> {
    let what = format!("reading {} {}.{}", o.kind, o.db, o.name);
    let col = match o.kind.as_str() {
        "VIEW" | "SEQUENCE" => 1,
        "EVENT" => 3,
        _ => 2,
    };
    exec(conn, &what, "SET SESSION character_set_results = binary").await?;
    let r = raw_rows(
        conn,
        &what,
        &format!("SHOW CREATE {} {}", o.kind, ident(&o.name)),
    )
    .await;
    exec(conn, &what, "SET SESSION character_set_results = utf8mb4").await?;
    let row = r?.into_iter().next().unwrap_or_default();
    let mut body = match row.into_iter().nth(col).flatten() {
        Some(b) => b,
        None if ROUTINE_TYPES.contains(&o.kind.as_str()) => {
            return Err(Error::source_err(
                format!("{} {}.{}", o.kind, o.db, o.name),
                "missing privilege: the server hides the routine's body (grant SHOW CREATE ROUTINE or SELECT on mysql.proc)",
            ))
        }
        None => {
            return Err(Error::source_err(what, "SHOW CREATE returned nothing"));
        }
    };
    if o.kind == "SEQUENCE" {
        // The stored position, as mysqldump restores it: values cached by
        // running sessions are skipped, as after a server restart.
        let r = rows(
            conn,
            &what,
            &format!(
                "SELECT next_not_cached_value, cycle_count FROM {}",
                ident(&o.name)
            ),
        )
        .await?;
        let (next, round) = r
            .first()
            .map(|r| {
                (
                    r[0].clone().unwrap_or_default(),
                    r[1].clone().unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        if next.parse::<i128>().is_err() || round.parse::<u64>().is_err() {
            return Err(Error::source_err(
                what,
                format!("unexpected sequence position {next:?}, round {round:?}"),
            ));
        }
        body.extend_from_slice(
            format!(";\nDO SETVAL({}, {next}, 0, {round})", ident(&o.name)).as_bytes(),
        );
    }
    Ok(body)
}

/// A name from the server's catalog used unquoted (charsets, collations).
fn plain(name: &str) -> &str {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        name
    } else {
        "utf8mb4"
    }
}

/// An object between the session settings it was created under, as
/// mysqldump writes them: client character set and collation, SQL mode,
/// time zone (events), and the database collation it recorded when that
/// differs from the database's current one. Routines, triggers and events
/// go between `DELIMITER ;;` lines; the dump's own settings come back after.
/// The object's `DROP … IF EXISTS` comes first (`--force` restores).
pub fn write_object(out: &mut Vec<u8>, o: &Obj, db_now: &str, body: &[u8]) {
    let mut t = String::new();
    let ctx = !o.cs_client.is_empty();
    if ctx {
        t.push_str(&format!(
            "SET character_set_client = {cs}, character_set_results = {cs}, collation_connection = {};\n",
            plain(&o.collation),
            cs = plain(&o.cs_client)
        ));
    }
    let routine = !matches!(o.kind.as_str(), "VIEW" | "SEQUENCE");
    let switch_db =
        routine && !o.db_collation.is_empty() && !db_now.is_empty() && o.db_collation != db_now;
    if routine {
        t.push_str(&format!(
            "SET SESSION sql_mode = {};\n",
            string_literal(&o.sql_mode)
        ));
        if !o.time_zone.is_empty() {
            t.push_str(&format!(
                "SET SESSION time_zone = {};\n",
                string_literal(&o.time_zone)
            ));
        }
        if switch_db {
            t.push_str(&format!(
                "ALTER DATABASE COLLATE {};\n",
                plain(&o.db_collation)
            ));
        }
    }
    // After the SQL mode: DROP PACKAGE parses only in Oracle mode.
    t.push_str(&format!("DROP {} IF EXISTS {};\n", o.kind, ident(&o.name)));
    if routine {
        t.push_str("DELIMITER ;;\n");
    }
    out.extend_from_slice(t.as_bytes());
    out.extend_from_slice(body);
    let mut t = String::new();
    if routine {
        t.push_str(" ;;\nDELIMITER ;\n");
        if switch_db {
            t.push_str(&format!("ALTER DATABASE COLLATE {};\n", plain(db_now)));
        }
        t.push_str("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n");
        if !o.time_zone.is_empty() {
            t.push_str("SET SESSION time_zone = '+00:00';\n");
        }
    } else {
        t.push_str(";\n");
    }
    if ctx {
        t.push_str("SET NAMES utf8mb4;\n");
    }
    out.extend_from_slice(t.as_bytes());
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
    views: &[Obj],
) -> std::result::Result<Vec<(Obj, Vec<u8>)>, Stop> {
    let mut defs: Vec<ViewDef> = Vec::new();
    let mut bodies: HashMap<(String, String), (Obj, Vec<u8>)> = HashMap::new();
    for o in views {
        use_db(conn, &o.db).await?;
        let body = show_create(conn, o).await.map_err(Stop::Failed)?;
        defs.push((
            o.db.clone(),
            (o.name.clone(), String::from_utf8_lossy(&body).into_owned()),
        ));
        bodies.insert((o.db.clone(), o.name.clone()), (o.clone(), body));
    }
    Ok(topo(defs)
        .into_iter()
        .filter_map(|(db, (name, _))| bodies.remove(&(db, name)))
        .collect())
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
        .map_err(|e| Error::source_from(what.clone(), MysqlError(e)))?;
    let kinds = kinds(res.columns_ref());
    let mut buf = Vec::with_capacity(4096);
    while let Some(row) = res
        .next()
        .await
        .map_err(|e| Error::source_from(what.clone(), MysqlError(e)))?
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
    fn objects_are_written_inside_their_creation_context() {
        let f = Obj {
            db: "d".into(),
            name: "f".into(),
            kind: "FUNCTION".into(),
            cs_client: "latin1".into(),
            collation: "latin1_swedish_ci".into(),
            db_collation: "utf8mb4_bin".into(),
            sql_mode: "ANSI_QUOTES".into(),
            time_zone: String::new(),
        };
        let mut out = Vec::new();
        write_object(
            &mut out,
            &f,
            "utf8mb4_general_ci",
            b"CREATE FUNCTION f() RETURNS INT RETURN '\xe9'",
        );
        assert_eq!(
            out,
            b"SET character_set_client = latin1, character_set_results = latin1, collation_connection = latin1_swedish_ci;\n\
SET SESSION sql_mode = 'ANSI_QUOTES';\n\
ALTER DATABASE COLLATE utf8mb4_bin;\n\
DROP FUNCTION IF EXISTS `f`;\n\
DELIMITER ;;\n\
CREATE FUNCTION f() RETURNS INT RETURN '\xe9' ;;\n\
DELIMITER ;\n\
ALTER DATABASE COLLATE utf8mb4_general_ci;\n\
SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n\
SET NAMES utf8mb4;\n"
                .to_vec()
        );
        let seq = Obj {
            name: "s".into(),
            kind: "SEQUENCE".into(),
            ..Obj::default()
        };
        let mut out = Vec::new();
        write_object(
            &mut out,
            &seq,
            "",
            b"CREATE SEQUENCE `s` start with 1;\nDO SETVAL(`s`, 9, 0, 0)",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DROP SEQUENCE IF EXISTS `s`;\nCREATE SEQUENCE `s` start with 1;\nDO SETVAL(`s`, 9, 0, 0);\n"
        );
        // The context is part of the fingerprint, the database name is not.
        let mut g = f.clone();
        g.db = "other".into();
        assert_eq!(fingerprint(&f, b"x"), fingerprint(&g, b"x"));
        g.cs_client = "utf8mb4".into();
        assert_ne!(fingerprint(&f, b"x"), fingerprint(&g, b"x"));
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
