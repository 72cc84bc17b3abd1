//! Sizes as users write them (`8MiB`), with checked arithmetic.

/// Why a size was not understood; each names the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("size {0:?}: expected a number")]
    NotANumber(String),
    #[error("size {0:?}: unit must be B, KiB, MiB or GiB")]
    Unit(String),
    #[error("size {0:?} is out of range")]
    OutOfRange(String),
}

/// `8MiB`, `64KiB`, `1GiB`, `5000000`.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| SizeError::NotANumber(s.to_owned()))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(SizeError::Unit(s.to_owned())),
    };
    n.checked_mul(mul)
        .ok_or_else(|| SizeError::OutOfRange(s.to_owned()))
}

/// `1.5 GiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn out_of_range_is_an_error() {
        assert!(super::parse_size("18446744073709551615GiB").is_err());
        assert_eq!(super::parse_size("8MiB").unwrap(), 8 << 20);
    }
}
