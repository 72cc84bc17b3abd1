//! `fence-mysql`: best effort `SET GLOBAL read_only = ON` (and
//! `super_read_only` where the server has it) on the old primary, so that it
//! cannot take writes if it comes back. An unreachable server is recorded,
//! never fatal: it is usually unreachable because the site is down.
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, MysqlTarget, Step};
use crate::base::Dur;
use crate::error::Result;
use crate::failover::runbook::Runbook;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    pub mysql: Vec<MysqlTarget>,
    /// Per server (default 5s).
    pub connect_timeout: Option<Dur>,
}

impl Spec {
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.mysql.is_empty() {
            return Err(("mysql", "name the old primary's MySQL server(s)".into()));
        }
        for m in &self.mysql {
            m.validate(false)?;
        }
        Ok(())
    }

    pub fn describe(&self) -> Vec<String> {
        self.mysql
            .iter()
            .map(|m| {
                format!(
                    "SET GLOBAL read_only = ON (and super_read_only) on {}, best effort",
                    m.label()
                )
            })
            .collect()
    }

    fn timeout(&self) -> Duration {
        self.connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5))
    }
}

async fn has_super_read_only(
    c: &mut mysql_async::Conn,
) -> std::result::Result<bool, mysql_async::Error> {
    let rows: Vec<(String, String)> = c
        .query("SHOW GLOBAL VARIABLES LIKE 'super_read_only'")
        .await?;
    Ok(!rows.is_empty())
}

async fn fence_one(m: &MysqlTarget, t: Duration) -> Value {
    let mut c = match m.connect(t).await {
        Ok(c) => c,
        Err(e) => {
            return json!({ "server": m.label(), "fenced": false, "reachable": false, "error": e })
        }
    };
    let r: std::result::Result<bool, mysql_async::Error> = async {
        c.query_drop("SET GLOBAL read_only = ON").await?;
        let sro = has_super_read_only(&mut c).await?;
        if sro {
            c.query_drop("SET GLOBAL super_read_only = ON").await?;
        }
        Ok(sro)
    }
    .await;
    let _ = c.disconnect().await;
    match r {
        Ok(sro) => {
            json!({ "server": m.label(), "fenced": true, "reachable": true, "super_read_only": sro })
        }
        Err(e) => {
            json!({ "server": m.label(), "fenced": false, "reachable": true, "error": crate::error::one_line(&e) })
        }
    }
}

pub struct Fence(pub Spec);

#[async_trait]
impl Step for Fence {
    async fn preview(&self, _step: &str, _rb: &Runbook) -> Result<Value> {
        let mut out = Vec::new();
        for m in &self.0.mysql {
            let v = match m.connect(self.0.timeout()).await {
                Err(e) => json!({ "server": m.label(), "reachable": false, "error": e }),
                Ok(mut c) => {
                    let ro: std::result::Result<Option<i64>, _> =
                        c.query_first("SELECT @@global.read_only").await;
                    let _ = c.disconnect().await;
                    match ro {
                        Ok(ro) => {
                            json!({ "server": m.label(), "reachable": true, "read_only": ro == Some(1), "would": "SET GLOBAL read_only = ON" })
                        }
                        Err(e) => {
                            json!({ "server": m.label(), "reachable": true, "error": crate::error::one_line(&e) })
                        }
                    }
                }
            };
            out.push(v);
        }
        Ok(json!({ "servers": out }))
    }

    async fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value> {
        let mut out = Vec::new();
        for m in &self.0.mysql {
            let v = fence_one(m, self.0.timeout()).await;
            if v["fenced"] != json!(true) {
                tracing::warn!(step = ctx.step, server = %m.label(), error = %v["error"], "could not fence; going on");
            }
            out.push(v);
        }
        Ok(json!({ "servers": out }))
    }
}
