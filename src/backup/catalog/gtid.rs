//! MariaDB GTIDs and GTID positions, as manifests record them (a base
//! backup's snapshot position, a segment's range) and as the archiver,
//! replay and promotion compare them.
use std::collections::BTreeMap;
use std::fmt;

/// A GTID or GTID position that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidError {
    #[error("{0:?} is not a MariaDB GTID (domain-server-sequence, e.g. 0-1-42)")]
    NotAGtid(String),
    #[error("{pos:?} names domain {domain} twice")]
    DomainTwice { pos: String, domain: u32 },
}

/// One MariaDB GTID: domain-server-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl std::str::FromStr for Gtid {
    type Err = GtidError;
    fn from_str(s: &str) -> Result<Self, GtidError> {
        let p: Vec<&str> = s.trim().split('-').collect();
        let bad = || GtidError::NotAGtid(s.to_owned());
        if p.len() != 3 {
            return Err(bad());
        }
        Ok(Gtid {
            domain: p[0].parse().map_err(|_| bad())?,
            server: p[1].parse().map_err(|_| bad())?,
            seq: p[2].parse().map_err(|_| bad())?,
        })
    }
}

/// A GTID position: the last GTID per domain (`@@gtid_binlog_pos` shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(pub BTreeMap<u32, Gtid>);

impl GtidState {
    pub fn parse(s: &str) -> Result<Self, GtidError> {
        let mut m = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: Gtid = part.parse()?;
            if m.insert(g.domain, g).is_some() {
                return Err(GtidError::DomainTwice {
                    pos: s.to_owned(),
                    domain: g.domain,
                });
            }
        }
        Ok(GtidState(m))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn seq(&self, domain: u32) -> u64 {
        self.0.get(&domain).map(|g| g.seq).unwrap_or(0)
    }
    pub fn apply(&mut self, g: Gtid) {
        self.0.insert(g.domain, g);
    }
    /// True when every domain of `self` is at or before `other`'s.
    pub fn le(&self, other: &GtidState) -> bool {
        self.0.values().all(|g| g.seq <= other.seq(g.domain))
    }
    /// True when `g` is already contained in this position.
    pub fn contains(&self, g: &Gtid) -> bool {
        g.seq <= self.seq(g.domain)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(|g| g.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl serde::Serialize for GtidState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for GtidState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GtidState::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_states_parse_compare_and_print() {
        let a = GtidState::parse("0-1-5, 1-2-7").unwrap();
        assert_eq!(a.to_string(), "0-1-5,1-2-7");
        let b = GtidState::parse("0-3-9,1-2-7").unwrap();
        assert!(a.le(&b) && !b.le(&a));
        assert!(GtidState::parse("").unwrap().le(&a));
        assert!(GtidState::parse("0-1-5,0-1-6").is_err());
        assert!(GtidState::parse("0-1").is_err());
        assert!(a.contains(&"1-9-7".parse().unwrap()));
        assert!(!a.contains(&"2-1-1".parse().unwrap()));
    }
}
