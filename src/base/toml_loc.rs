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

/// The key an error of deserialising a parsed `toml::Value` is about: the
/// first component of the key path toml appends (`in `binlog.keep``), else
/// the key a serde message names (`unknown field `x``).
pub fn key_of_value_error(e: &toml::de::Error) -> Option<String> {
    let text = e.to_string();
    let path = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'));
    match path {
        Some(p) => p.split('.').next().map(str::to_owned),
        None => key_in_message(e.message()),
    }
}

/// The keys (as renamed) a struct's derived `Deserialize` reads, asked of
/// the impl itself, so that a key list never drifts from its struct.
/// Empty for a type that is not a plain struct.
pub fn struct_keys<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("keys read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut keys));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Keys {
        flush_interval: Option<String>,
        keep: Option<u32>,
    }

    #[test]
    fn struct_keys_are_the_renamed_fields() {
        assert_eq!(struct_keys::<Keys>(), ["flush-interval", "keep"]);
        assert!(struct_keys::<u32>().is_empty());
    }

    #[test]
    fn value_errors_name_their_top_key() {
        let t: toml::Table = toml::from_str("keep = \"x\"").unwrap();
        let e = toml::Value::Table(t).try_into::<Keys>().unwrap_err();
        assert_eq!(key_of_value_error(&e).as_deref(), Some("keep"));
        let t: toml::Table = toml::from_str("kep = 1").unwrap();
        let e = toml::Value::Table(t).try_into::<Keys>().unwrap_err();
        assert_eq!(key_of_value_error(&e).as_deref(), Some("kep"));
    }
}
