//! SQL text: identifier quoting, value literals, and a statement splitter
//! that reads a dump the way the `mariadb` client does (quotes, comments,
//! `DELIMITER`), so `cexdr restore` executes exactly what the stock client would.
use std::ops::ControlFlow::{self, Break, Continue};

/// `name` as a backquoted identifier (backquotes doubled).
pub fn ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    for c in name.chars() {
        if c == '`' {
            s.push('`');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// `value` as a single-quoted string literal (for SET statements and
/// `WHERE` clauses built from catalog names).
pub fn string_literal(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len() + 2);
    push_quoted(&mut out, value.as_bytes());
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

/// Bytes that must be escaped inside a quoted literal, as mysqldump does
/// (`mysql_real_escape_string`): NUL, newline, CR, quote, backslash, ^Z.
/// Escaping newlines keeps every INSERT on one line.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    t[0] = b'0';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\'' as usize] = b'\'';
    t[b'\\' as usize] = b'\\';
    t[0x1a] = b'Z';
    t[b'"' as usize] = b'"';
    t
};

/// Appends `'…'` with the escapes above; copies runs of plain bytes at once.
pub fn push_quoted(out: &mut Vec<u8>, v: &[u8]) {
    out.reserve(v.len() + 2);
    out.push(b'\'');
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e != 0 {
            out.extend_from_slice(&v[start..i]);
            out.push(b'\\');
            out.push(e);
            start = i + 1;
        }
    }
    out.extend_from_slice(&v[start..]);
    out.push(b'\'');
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `0x…` (or `''` for an empty value: `0x` alone is not a literal).
pub fn push_hex(out: &mut Vec<u8>, v: &[u8]) {
    if v.is_empty() {
        out.extend_from_slice(b"''");
        return;
    }
    out.reserve(2 + v.len() * 2);
    out.extend_from_slice(b"0x");
    for &b in v {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// A cheap 64-bit hash of one formatted row; rows are combined by wrapping
/// addition so the table digest does not depend on row order.
pub fn row_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    h ^= h >> 32;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^ (h >> 32)
}

/// One piece of a dump, as the stock client would see it.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A statement without its delimiter.
    Statement(Vec<u8>),
    /// A `-- cexdr:` marker comment (text after the prefix).
    Marker(String),
}

pub const MARKER: &str = "-- cexdr:";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Between statements: skipping blanks and whole-line comments.
    Start,
    Normal,
    Quote(u8),
    /// After a backslash inside a '…' or "…" string.
    Escape(u8),
    LineComment,
    BlockComment,
}

/// The input ended in the middle of a string or comment: the dump is cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the dump ends inside a {0:?}")]
pub struct Unterminated(State);

/// Splits a byte stream into statements, incrementally: feed chunks, take
/// the pieces that are complete. Understands quotes, backslash escapes,
/// `--`/`#`/`/* */` comments and the client's `DELIMITER` command.
pub struct Splitter {
    buf: Vec<u8>,
    /// Where scanning resumes in `buf`.
    pos: usize,
    /// Start of the statement being read.
    start: usize,
    state: State,
    delimiter: Vec<u8>,
    /// Decides from a marker whether the section after it is skipped
    /// unread (a restore lane passes over other lanes' tables).
    skip: Option<SkipFn>,
    skipping: bool,
}

pub type SkipFn = Box<dyn Fn(&str) -> bool + Send + Sync>;

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            buf: Vec::new(),
            pos: 0,
            start: 0,
            state: State::Start,
            delimiter: b";".to_vec(),
            skip: None,
            skipping: false,
        }
    }
}

impl Splitter {
    /// A splitter that jumps over the sections `skip` selects, straight to
    /// the next marker line. Only for sections whose statements never span
    /// lines that start with a marker (data sections: newlines are escaped).
    pub fn skipping(skip: SkipFn) -> Self {
        Splitter {
            skip: Some(skip),
            ..Splitter::default()
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete piece, or `None` until more data is fed.
    pub fn next_piece(&mut self) -> Option<Piece> {
        let r = self.scan();
        if self.start > (1 << 20) && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        r
    }

    /// Called at the end of the input: a trailing statement without
    /// delimiter is returned (as the client executes it), junk is an error.
    pub fn finish(&mut self) -> Result<Option<Piece>, Unterminated> {
        match self.state {
            State::Start => {
                let rest = String::from_utf8_lossy(&self.buf[self.start..])
                    .trim()
                    .to_owned();
                self.start = self.buf.len();
                if rest.is_empty() || rest.starts_with("--") || rest.starts_with('#') {
                    Ok(None)
                } else {
                    Ok(Some(Piece::Statement(rest.into_bytes())))
                }
            }
            State::Normal => {
                let s = self.buf[self.start..].to_vec();
                self.start = self.buf.len();
                self.state = State::Start;
                if s.iter().all(|b| b.is_ascii_whitespace()) {
                    Ok(None)
                } else {
                    Ok(Some(Piece::Statement(s)))
                }
            }
            State::LineComment => Ok(None),
            other => Err(Unterminated(other)),
        }
    }

    fn scan(&mut self) -> Option<Piece> {
        let mut i = self.pos;
        loop {
            let step = match self.state {
                State::Start if self.skipping => self.skip_section(i),
                State::Start => self.line_start(i),
                State::Normal => self.normal(i),
                State::Quote(q) => self.quote(q, i),
                State::Escape(q) => {
                    if i >= self.buf.len() {
                        self.pos = self.buf.len();
                        return None;
                    }
                    self.state = State::Quote(q);
                    Continue(i + 1)
                }
                State::LineComment => self.line_comment(i),
                State::BlockComment => self.block_comment(i),
            };
            match step {
                Continue(next) => i = next,
                Break(piece) => return piece,
            }
        }
    }

    /// A skipped section: straight to the next marker line.
    #[inline]
    fn skip_section(&mut self, mut i: usize) -> Step {
        let buf = &self.buf;
        let n = buf.len();
        let needle = b"\n-- cexdr:";
        if buf[i..].starts_with(&needle[1..]) {
            self.skipping = false;
            return Continue(i);
        }
        match memchr::memmem::find(&buf[i..], needle) {
            Some(k) => {
                i += k + 1;
                self.skipping = false;
                Continue(i)
            }
            None => {
                let keep = n.saturating_sub(needle.len()).max(i);
                self.start = keep;
                self.pos = keep;
                Break(None)
            }
        }
    }

    /// Between statements: skips blank space; recognises whole-line
    /// comments, markers and DELIMITER lines; else a statement starts.
    #[inline]
    fn line_start(&mut self, mut i: usize) -> Step {
        let buf = &self.buf;
        let n = buf.len();
        while i < n && buf[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == n {
            self.start = i;
            self.pos = i;
            return Break(None);
        }
        let Some(eol) = memchr::memchr(b'\n', &buf[i..]).map(|e| i + e) else {
            // Need the whole line to decide.
            self.start = i;
            self.pos = i;
            return Break(None);
        };
        let line = &buf[i..eol];
        if line.starts_with(b"--") && (line.len() == 2 || line[2].is_ascii_whitespace()) {
            let marker = line
                .strip_prefix(MARKER.as_bytes())
                .map(|m| String::from_utf8_lossy(m).trim_end().to_owned());
            i = eol + 1;
            self.start = i;
            self.pos = i;
            if let Some(m) = marker {
                self.skipping = self.skip.as_ref().map(|f| f(&m)).unwrap_or(false);
                return Break(Some(Piece::Marker(m)));
            }
            return Continue(i);
        }
        if line.starts_with(b"#") {
            return Continue(eol + 1);
        }
        if line.len() > 10 && line[..10].eq_ignore_ascii_case(b"DELIMITER ") {
            let d = String::from_utf8_lossy(&line[10..])
                .trim()
                .as_bytes()
                .to_vec();
            if !d.is_empty() {
                self.delimiter = d;
            }
            return Continue(eol + 1);
        }
        self.start = i;
        self.state = State::Normal;
        Continue(i)
    }

    /// Inside a statement: up to its delimiter (the statement is done), or
    /// to the next quote or comment.
    #[inline]
    fn normal(&mut self, mut i: usize) -> Step {
        let buf = &self.buf;
        let n = buf.len();
        let d0 = self.delimiter[0];
        while i < n {
            let b = buf[i];
            if b == d0 {
                let d = &self.delimiter;
                if i + d.len() > n {
                    self.pos = i;
                    return Break(None);
                }
                if &buf[i..i + d.len()] == d.as_slice() {
                    let stmt = buf[self.start..i].to_vec();
                    i += d.len();
                    self.pos = i;
                    self.start = i;
                    self.state = State::Start;
                    return Break(Some(Piece::Statement(stmt)));
                }
            }
            match b {
                b'\'' | b'"' | b'`' => {
                    self.state = State::Quote(b);
                    i += 1;
                    break;
                }
                b'#' => {
                    self.state = State::LineComment;
                    i += 1;
                    break;
                }
                b'-' | b'/' => {
                    if i + 2 >= n {
                        self.pos = i;
                        return Break(None);
                    }
                    if b == b'-' && buf[i + 1] == b'-' && buf[i + 2].is_ascii_whitespace() {
                        self.state = State::LineComment;
                        i += 2;
                        break;
                    }
                    // `/*!…*/` is executable but its quotes and
                    // delimiters never matter in our dumps; the
                    // client treats it like a comment for splitting.
                    if b == b'/' && buf[i + 1] == b'*' {
                        self.state = State::BlockComment;
                        i += 2;
                        break;
                    }
                    i += 1;
                }
                _ => i += 1,
            }
        }
        if i >= n && matches!(self.state, State::Normal) {
            self.pos = n;
            return Break(None);
        }
        Continue(i)
    }

    /// Inside a quoted string or name: jumps to the next quote or backslash.
    #[inline]
    fn quote(&mut self, q: u8, mut i: usize) -> Step {
        let buf = &self.buf;
        let rest = &buf[i..];
        let hit = if q == b'`' {
            memchr::memchr(q, rest)
        } else {
            memchr::memchr2(q, b'\\', rest)
        };
        match hit {
            None => {
                self.pos = buf.len();
                Break(None)
            }
            Some(k) => {
                i += k;
                if buf[i] == b'\\' {
                    self.state = State::Escape(q);
                } else {
                    // A doubled quote re-enters the same state.
                    self.state = State::Normal;
                }
                Continue(i + 1)
            }
        }
    }

    #[inline]
    fn line_comment(&mut self, i: usize) -> Step {
        match memchr::memchr(b'\n', &self.buf[i..]) {
            None => {
                self.pos = self.buf.len();
                Break(None)
            }
            Some(k) => {
                let i = i + k + 1;
                self.state = if self.start == i {
                    State::Start
                } else {
                    State::Normal
                };
                Continue(i)
            }
        }
    }

    #[inline]
    fn block_comment(&mut self, i: usize) -> Step {
        match memchr::memmem::find(&self.buf[i..], b"*/") {
            None => {
                self.pos = self.buf.len().saturating_sub(1).max(i);
                Break(None)
            }
            Some(k) => {
                self.state = State::Normal;
                Continue(i + k + 2)
            }
        }
    }
}

/// One step of `Splitter::scan`: go on at this offset, or stop with a
/// piece (`None`: more input is needed first).
type Step = ControlFlow<Option<Piece>, usize>;

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, chunk: usize) -> Vec<Piece> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for c in text.as_bytes().chunks(chunk) {
            s.feed(c);
            while let Some(p) = s.next_piece() {
                out.push(p);
            }
        }
        if let Some(p) = s.finish().unwrap() {
            out.push(p);
        }
        out
    }

    fn st(s: &str) -> Piece {
        Piece::Statement(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_like_the_client_at_any_chunk_size() {
        let text = "-- header\n/*!40101 SET NAMES utf8mb4 */;\n-- cexdr:data {\"db\":\"a\"}\n\
INSERT INTO `t;x` VALUES ('a;b\\';c','it''s;'),(\"q;\\\\\");\n\
# hash comment\nSELECT 1 -- trailing; comment\n, 2;\n\
DELIMITER ;;\nCREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END ;;\nDELIMITER ;\n\
SELECT /* ; */ 3;\nSELECT 4";
        let want = vec![
            st("/*!40101 SET NAMES utf8mb4 */"),
            Piece::Marker("data {\"db\":\"a\"}".into()),
            st("INSERT INTO `t;x` VALUES ('a;b\\';c','it''s;'),(\"q;\\\\\")"),
            st("SELECT 1 -- trailing; comment\n, 2"),
            st("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END "),
            st("SELECT /* ; */ 3"),
            st("SELECT 4"),
        ];
        for chunk in [1, 2, 3, 7, 64, 10_000] {
            assert_eq!(split(text, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn skipped_sections_yield_only_markers() {
        let text = "-- cexdr:header {}\nSET NAMES utf8mb4;\n-- cexdr:data {\"t\":\"a\"}\nINSERT INTO a VALUES ('x;y');\nINSERT INTO a VALUES (2);\n\n-- cexdr:data {\"t\":\"b\"}\nINSERT INTO b VALUES (3);\n-- cexdr:end\n";
        for chunk in [1, 3, 10, 1000] {
            let mut s = Splitter::skipping(Box::new(|m: &str| m.contains("\"a\"")));
            let mut out = Vec::new();
            for c in text.as_bytes().chunks(chunk) {
                s.feed(c);
                while let Some(p) = s.next_piece() {
                    out.push(p);
                }
            }
            assert_eq!(s.finish().unwrap(), None);
            assert_eq!(
                out,
                vec![
                    Piece::Marker("header {}".into()),
                    st("SET NAMES utf8mb4"),
                    Piece::Marker("data {\"t\":\"a\"}".into()),
                    Piece::Marker("data {\"t\":\"b\"}".into()),
                    st("INSERT INTO b VALUES (3)"),
                    Piece::Marker("end".into()),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn literals() {
        let mut v = Vec::new();
        push_quoted(&mut v, b"a'b\\c\n\r\0\x1a\"z");
        assert_eq!(v, b"'a\\'b\\\\c\\n\\r\\0\\Z\\\"z'");
        v.clear();
        push_hex(&mut v, &[0, 0xab, 0xff]);
        assert_eq!(v, b"0x00ABFF");
        v.clear();
        push_hex(&mut v, b"");
        assert_eq!(v, b"''");
        assert_eq!(ident("a`b"), "`a``b`");
        assert_ne!(row_hash(b"(1,2)"), row_hash(b"(1,3)"));
    }
}
