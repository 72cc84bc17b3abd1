//! What a backup holds: `Manifest.kind`. The sources that produce and
//! restore each kind are listed once in `backup::source::kinds`, whose
//! `sources!` list must name every variant here (an exhaustive match there
//! fails to compile otherwise).
use serde::{Deserialize, Serialize};

/// What a backup holds; `Manifest.kind`, serialised as its name (`files`,
/// `mysql`, `redis`; a manifest of another kind does not parse, by name).
/// The order is the `sources!` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "files")]
    Files,
    #[serde(rename = "mysql")]
    Mysql,
    #[serde(rename = "redis")]
    Redis,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[Kind::Files, Kind::Mysql, Kind::Redis];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Files => "files",
            Kind::Mysql => "mysql",
            Kind::Redis => "redis",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == s)
    }

    /// The kind names as a sentence: `files, mysql or redis`.
    pub fn names_sentence() -> String {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifests and policies name kinds by these exact strings.
    #[test]
    fn kinds_serialise_as_their_names() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["files", "mysql", "redis"]);
        for k in Kind::ALL {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), *k);
            assert_eq!(Kind::from_name(k.name()), Some(*k));
        }
        assert!(serde_json::from_str::<Kind>("\"postgres\"").is_err());
        assert_eq!(Kind::from_name("Files"), None);
    }
}
