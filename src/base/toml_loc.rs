//! Finding the line of a key in a TOML file, for errors raised after serde
//! has parsed it (range checks, cross-key rules): file:line:key everywhere.

/// Line (1-based) of `key` inside the `index`-th table whose header line is
/// `header` (`[[job]]`, `[store]`), or of the header when the key is absent.
/// Sub-tables whose header starts with `[{nested}.` stay inside the table.
pub fn in_section(
    text: &str,
    header: &str,
    nested: Option<&str>,
    index: usize,
    key: Option<&str>,
) -> Option<usize> {
    let nested = nested.map(|n| format!("[{n}."));
    let mut seen = 0usize;
    let mut inside = false;
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            if t == header {
                inside = seen == index;
                if inside {
                    header_line = Some(i + 1);
                }
                seen += 1;
            } else if !nested.as_deref().is_some_and(|n| t.starts_with(n)) {
                inside = false;
            }
            continue;
        }
        if inside {
            if let Some(k) = key {
                let k_quoted = format!("\"{k}\"");
                for cand in [k, k_quoted.as_str()] {
                    if let Some(rest) = t.strip_prefix(cand) {
                        if rest.trim_start().starts_with('=') {
                            return Some(i + 1);
                        }
                    }
                }
            }
        }
    }
    header_line
}

/// Line of the `index`-th `[[table]]`, or of `key` inside it.
pub fn locate(text: &str, table: &str, index: usize, key: Option<&str>) -> Option<usize> {
    in_section(text, &format!("[[{table}]]"), Some(table), index, key)
}

/// Pulls the key out of serde messages such as "unknown field `x`".
pub fn key_in_message(msg: &str) -> Option<String> {
    let start = msg.find('`')?;
    let rest = &msg[start + 1..];
    let end = rest.find('`')?;
    let key = &rest[..end];
    if msg.contains("unknown variant") {
        return Some("kind".into());
    }
    Some(key.to_owned())
}

/// Line of a TOML parse error.
pub fn toml_line(text: &str, err: &toml::de::Error) -> Option<usize> {
    err.span()
        .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1)
}
