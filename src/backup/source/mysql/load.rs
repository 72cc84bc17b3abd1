//! Restore fast path: the dump's multi-row INSERTs of one table are turned
//! into one `LOAD DATA LOCAL INFILE` stream (tab-separated, the same
//! backslash escapes), which the server parses about twice as fast as SQL
//! value lists. Anything that does not parse exactly as cexdr writes it is
//! executed as the original statement instead.

/// The parsed head of `INSERT INTO `t` (`a`,`b`) VALUES `.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Head {
    /// The table and column list, verbatim (`` `t` (`a`,`b`) ``).
    pub text: Vec<u8>,
    pub table: Vec<u8>,
    pub columns: Vec<Vec<u8>>,
}

fn ident_end(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'`') {
        return None;
    }
    let mut j = i + 1;
    loop {
        let k = j + memchr::memchr(b'`', &s[j..])?;
        if s.get(k + 1) == Some(&b'`') {
            j = k + 2;
        } else {
            return Some(k + 1);
        }
    }
}

/// Splits an INSERT into its head and the byte offset of its first row.
pub fn head(stmt: &[u8]) -> Option<(Head, usize)> {
    let rest = stmt.strip_prefix(b"INSERT INTO ")?;
    let base = stmt.len() - rest.len();
    let t_end = ident_end(stmt, base)?;
    let table = stmt[base..t_end].to_vec();
    if stmt.get(t_end..t_end + 2)? != b" (" {
        return None;
    }
    let mut i = t_end + 2;
    let mut columns = Vec::new();
    loop {
        let e = ident_end(stmt, i)?;
        columns.push(stmt[i..e].to_vec());
        match stmt.get(e)? {
            b',' => i = e + 1,
            b')' => {
                i = e + 1;
                break;
            }
            _ => return None,
        }
    }
    let values = stmt.get(i..)?.strip_prefix(b" VALUES ")?;
    let first = stmt.len() - values.len();
    Some((
        Head {
            text: stmt[base..i].to_vec(),
            table,
            columns,
        },
        first,
    ))
}

/// What a column's values were written as (NULL and `''` say nothing: an
/// empty binary string is written `''`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Col {
    #[default]
    Unseen,
    /// Hex literals (`0x…`): loaded through UNHEX.
    Hex,
    /// Non-empty quoted strings.
    Text,
}

impl Col {
    /// Whether rows whose column was `self` can go into a LOAD DATA opened
    /// for `open` (whose UNHEX columns are fixed).
    pub fn fits(self, open: Col) -> bool {
        self == Col::Unseen || (self == Col::Hex) == (open == Col::Hex)
    }
}

/// Appends the rows starting at `at` as tab-separated lines; marks what
/// each column holds. Returns the row count, or None if the text is not
/// exactly in cexdr's format or a column would hold both hex literals and
/// quoted strings (then nothing useful was appended).
pub fn rows(
    stmt: &[u8],
    at: usize,
    ncols: usize,
    out: &mut Vec<u8>,
    hex: &mut [Col],
) -> Option<u64> {
    let s = stmt;
    let n = s.len();
    let mut i = at;
    let mut count = 0u64;
    loop {
        if s.get(i) != Some(&b'(') {
            return None;
        }
        i += 1;
        for (col, is_hex) in hex.iter_mut().enumerate().take(ncols) {
            if col > 0 {
                out.push(b'\t');
            }
            match *s.get(i)? {
                b'\'' => {
                    i += 1;
                    if s.get(i) != Some(&b'\'') || s.get(i + 1) == Some(&b'\'') {
                        match *is_hex {
                            Col::Hex => return None,
                            _ => *is_hex = Col::Text,
                        }
                    }
                    // Copy up to the closing quote; our escapes mean the
                    // same in LOAD DATA, a raw tab must be escaped.
                    loop {
                        let k = i + memchr::memchr3(b'\\', b'\'', b'\t', &s[i..])?;
                        out.extend_from_slice(&s[i..k]);
                        match s[k] {
                            b'\\' => {
                                let e = *s.get(k + 1)?;
                                out.push(b'\\');
                                out.push(e);
                                i = k + 2;
                            }
                            b'\t' => {
                                out.extend_from_slice(b"\\t");
                                i = k + 1;
                            }
                            _ => {
                                if s.get(k + 1) == Some(&b'\'') {
                                    out.push(b'\'');
                                    i = k + 2;
                                } else {
                                    i = k + 1;
                                    break;
                                }
                            }
                        }
                    }
                }
                _ => {
                    let k = i + memchr::memchr2(b',', b')', &s[i..])?;
                    let v = &s[i..k];
                    if v == b"NULL" {
                        out.extend_from_slice(b"\\N");
                    } else if let Some(h) = v.strip_prefix(b"0x") {
                        match *is_hex {
                            Col::Text => return None,
                            _ => *is_hex = Col::Hex,
                        }
                        out.extend_from_slice(h);
                    } else if v
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
                        && !v.is_empty()
                    {
                        out.extend_from_slice(v);
                    } else {
                        return None;
                    }
                    i = k;
                }
            }
            let want = if col + 1 == ncols { b')' } else { b',' };
            if s.get(i) != Some(&want) {
                return None;
            }
            i += 1;
        }
        out.push(b'\n');
        count += 1;
        match s.get(i) {
            Some(b',') => i += 1,
            None if i == n => return Some(count),
            _ => return None,
        }
    }
}

/// The LOAD DATA statement for `head`, with hex columns decoded by UNHEX.
pub fn load_statement(head: &Head, hex: &[Col]) -> String {
    let mut cols = Vec::new();
    let mut sets = Vec::new();
    for (i, c) in head.columns.iter().enumerate() {
        let c = String::from_utf8_lossy(c);
        if hex[i] == Col::Hex {
            cols.push(format!("@cexdr_h{i}"));
            sets.push(format!("{c} = UNHEX(@cexdr_h{i})"));
        } else {
            cols.push(c.into_owned());
        }
    }
    let mut sql = format!(
        "LOAD DATA LOCAL INFILE 'cexdr-restore' INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        String::from_utf8_lossy(&head.table),
        cols.join(",")
    );
    if !sets.is_empty() {
        sql.push_str(" SET ");
        sql.push_str(&sets.join(", "));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_become_tab_separated_rows() {
        let stmt = b"INSERT INTO `t``x` (`a`,`b c`,`d`,`e`) VALUES (1,'x\\'y\\\\z\\n\tq',0x00FF,NULL),(-2.5e3,'it''s','',NULL)";
        let (h, at) = head(stmt).unwrap();
        assert_eq!(h.table, b"`t``x`");
        assert_eq!(
            h.columns,
            vec![
                b"`a`".to_vec(),
                b"`b c`".to_vec(),
                b"`d`".to_vec(),
                b"`e`".to_vec()
            ]
        );
        let mut out = Vec::new();
        let mut hex = vec![Col::default(); 4];
        assert_eq!(rows(stmt, at, 4, &mut out, &mut hex), Some(2));
        assert_eq!(
            out,
            b"1\tx\\'y\\\\z\\n\\tq\t00FF\t\\N\n-2.5e3\tit's\t\t\\N\n".to_vec()
        );
        assert_eq!(hex, [Col::Unseen, Col::Text, Col::Hex, Col::Unseen]);
        let sql = load_statement(&h, &hex);
        assert!(
            sql.ends_with("(`a`,`b c`,@cexdr_h2,`e`) SET `d` = UNHEX(@cexdr_h2)"),
            "{sql}"
        );
        // A column of hex literals and quoted strings cannot go through one
        // UNHEX: refused, whichever comes first.
        let one = |stmt: &[u8]| {
            let (_, at) = head(stmt).unwrap();
            let mut hex = vec![Col::default(); 1];
            rows(stmt, at, 1, &mut Vec::new(), &mut hex).map(|n| (n, hex[0]))
        };
        assert_eq!(one(b"INSERT INTO `t` (`a`) VALUES (0x41),('B')"), None);
        assert_eq!(one(b"INSERT INTO `t` (`a`) VALUES ('B'),(0x41)"), None);
        assert_eq!(one(b"INSERT INTO `t` (`a`) VALUES ('''B'),(0x41)"), None);
        assert_eq!(
            one(b"INSERT INTO `t` (`a`) VALUES (0x41),(''),(NULL)"),
            Some((3, Col::Hex))
        );
        assert_eq!(
            one(b"INSERT INTO `t` (`a`) VALUES (''),(NULL)"),
            Some((2, Col::Unseen))
        );
        assert!(Col::Unseen.fits(Col::Hex) && Col::Text.fits(Col::Unseen));
        assert!(!Col::Hex.fits(Col::Unseen) && !Col::Text.fits(Col::Hex));
        // Not our format: refused, the statement runs as it is.
        let mut hex = vec![Col::default(); 1];
        assert_eq!(
            rows(
                b"INSERT INTO `t` (`a`) VALUES (NOW())",
                28,
                1,
                &mut Vec::new(),
                &mut hex
            ),
            None
        );
        assert!(head(b"INSERT INTO t VALUES (1)").is_none());
    }
}
