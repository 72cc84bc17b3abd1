//! Retention: which backups of one job to keep. A pure function of the
//! backups, the rules and the clock (passed in), so that it can be shown as
//! a plan before anything is deleted and covered by golden tests.
//!
//! Semantics follow restic's `forget`: backups are walked newest first; a
//! count rule (`last`, `hourly` … `yearly`) keeps the newest backup of each
//! of its next N distinct periods (UTC hour, day, ISO week, month, year);
//! `within` keeps every backup younger than the duration. A backup is kept
//! if any rule keeps it. Two guards come on top: the newest backup of the
//! job and its newest verified backup are never removed. A job without
//! rules keeps everything.
//!
//! Unlike restic, `within` is measured from `now`, not from the newest
//! backup: "keep what is younger than 7 days" is what the policy says. The
//! newest-backup guard keeps a job that stopped backing up from losing its
//! last copy.
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::base::parse_duration;

/// Retention rules (restic semantics: a backup is kept if any rule keeps it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<String>,
}

impl Keep {
    pub fn is_empty(&self) -> bool {
        *self == Keep::default()
    }
}

/// One backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub time: DateTime<Utc>,
}

/// The verdict on one backup, with every rule that keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept (`last`, `daily`, `within 7d`, `newest`,
    /// `newest verified`, `no rules`), or why it goes (`matches no rule`).
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket a backup falls into; `index` makes every backup its own
    /// bucket for `last`.
    fn bucket(self, t: DateTime<Utc>, index: usize) -> i64 {
        let (y, m, d, h) = (
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
        );
        match self {
            Period::Last => index as i64,
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }
}

/// Plans retention for the backups of ONE job (any order). `newest_verified`
/// is the id of the job's newest backup whose latest verification passed.
/// Decisions come back newest first.
pub fn plan(
    backups: &[Snapshot],
    keep: &Keep,
    now: DateTime<Utc>,
    newest_verified: Option<&str>,
) -> Vec<Decision> {
    let mut sorted: Vec<&Snapshot> = backups.iter().collect();
    // Newest first; ties broken by id so the plan is deterministic.
    sorted.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));

    let within = keep
        .within
        .as_deref()
        .and_then(|w| parse_duration(w).ok().map(|d| (w, d)));
    let mut rules: Vec<(Period, u32, Option<i64>)> = [
        (Period::Last, keep.last),
        (Period::Hourly, keep.hourly),
        (Period::Daily, keep.daily),
        (Period::Weekly, keep.weekly),
        (Period::Monthly, keep.monthly),
        (Period::Yearly, keep.yearly),
    ]
    .into_iter()
    .filter_map(|(p, n)| n.map(|n| (p, n, None)))
    .collect();
    let no_rules = rules.is_empty() && within.is_none();

    let mut out = Vec::with_capacity(sorted.len());
    for (i, s) in sorted.iter().enumerate() {
        let mut reasons = Vec::new();
        if i == 0 {
            reasons.push("newest".to_owned());
        }
        if newest_verified == Some(s.id.as_str()) {
            reasons.push("newest verified".to_owned());
        }
        if no_rules {
            reasons.push("no rules".to_owned());
        }
        for (period, left, last) in rules.iter_mut() {
            if *left == 0 {
                continue;
            }
            let b = period.bucket(s.time, i);
            if *last != Some(b) {
                *last = Some(b);
                *left -= 1;
                reasons.push(period.name().to_owned());
            }
        }
        if let Some((text, d)) = within {
            // A backup from the future (clock skew) is "within" too.
            let age = now.signed_duration_since(s.time);
            if age.num_milliseconds() < d.as_millis() as i64 {
                reasons.push(format!("within {text}"));
            }
        }
        let keep = !reasons.is_empty();
        if !keep {
            reasons.push("matches no rule".to_owned());
        }
        out.push(Decision {
            id: s.id.clone(),
            time: s.time,
            keep,
            reasons,
        });
    }
    out
}

/// A kept backup keeps every backup it needs (an incremental's full and
/// earlier incrementals: `needs` lists each backup's chain). A backup kept
/// this way says by which.
pub fn keep_needed(decisions: &mut [Decision], needs: &[(String, Vec<String>)]) {
    for (id, deps) in needs {
        if !decisions.iter().any(|d| &d.id == id && d.keep) {
            continue;
        }
        for dep in deps {
            if let Some(d) = decisions.iter_mut().find(|d| &d.id == dep) {
                if !d.keep {
                    d.keep = true;
                    d.reasons.clear();
                }
                d.reasons.push(format!("needed by {id}"));
            }
        }
    }
}

/// The plan as a fixed-width table (the golden tests compare this text).
pub fn render(decisions: &[Decision]) -> String {
    let mut out = String::new();
    for d in decisions {
        out.push_str(&format!(
            "{}  {:<6}  {}\n",
            d.time.format("%Y-%m-%dT%H:%M:%SZ"),
            if d.keep { "keep" } else { "remove" },
            d.reasons.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: &str) -> Snapshot {
        Snapshot {
            id: t.into(),
            time: t.parse().unwrap(),
        }
    }

    #[test]
    fn a_kept_incremental_keeps_its_chain() {
        let snaps = [
            snap("2026-01-01T00:00:00Z"),
            snap("2026-01-01T01:00:00Z"),
            snap("2026-01-01T02:00:00Z"),
            snap("2026-01-01T03:00:00Z"),
        ];
        let keep = Keep {
            last: Some(1),
            ..Keep::default()
        };
        let mut p = plan(&snaps, &keep, "2026-01-02T00:00:00Z".parse().unwrap(), None);
        // 03:00 is an incremental of 02:00, itself of the full 00:00; 01:00
        // is an unrelated full.
        let needs = [(
            "2026-01-01T03:00:00Z".to_owned(),
            vec![
                "2026-01-01T00:00:00Z".to_owned(),
                "2026-01-01T02:00:00Z".to_owned(),
            ],
        )];
        keep_needed(&mut p, &needs);
        assert_eq!(
            render(&p),
            "2026-01-01T03:00:00Z  keep    newest, last\n\
             2026-01-01T02:00:00Z  keep    needed by 2026-01-01T03:00:00Z\n\
             2026-01-01T01:00:00Z  remove  matches no rule\n\
             2026-01-01T00:00:00Z  keep    needed by 2026-01-01T03:00:00Z\n"
        );
    }

    #[test]
    fn empty_input_gives_an_empty_plan() {
        assert!(plan(&[], &Keep::default(), Utc::now(), None).is_empty());
    }

    #[test]
    fn the_newest_is_kept_even_when_every_rule_has_passed_it() {
        let keep = Keep {
            within: Some("1d".into()),
            ..Keep::default()
        };
        let now = "2026-11-25T00:00:00Z".parse().unwrap();
        let p = plan(
            &[snap("2026-01-01T00:00:00Z"), snap("2026-01-02T00:00:00Z")],
            &keep,
            now,
            None,
        );
        assert_eq!(p[0].reasons, ["newest"]);
        assert!(!p[1].keep);
    }
}
