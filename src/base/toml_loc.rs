//! Finding the line of a key in a TOML file, for errors raised after serde
//! has parsed it (range checks, cross-key rules): file:line:key everywhere.
//! Lines come from `toml_edit`'s spans, so dotted keys, inline tables,
//! quoted keys and headers with comments are found as TOML reads them.
use toml_edit::{ImDocument, Item, TableLike, Value};

/// A TOML text and, parsed the first time a line is asked for, its
/// `toml_edit` document, whose spans say where each key and table is.
pub struct Spans<'a> {
    text: &'a str,
    doc: std::cell::OnceCell<Option<ImDocument<&'a str>>>,
}

/// One step of the path from the root to a table: a key, or the `n`-th
/// table of an array (`[[job]]` headers or `job = [{ … }, …]`).
#[derive(Debug, Clone, Copy)]
pub enum Step<'k> {
    Key(&'k str),
    Index(usize),
}

impl<'a> Spans<'a> {
    pub fn new(text: &'a str) -> Self {
        Spans {
            text,
            doc: std::cell::OnceCell::new(),
        }
    }

    /// Line (1-based) of `key` in the `index`-th `[[array]]` table, or of
    /// that table's header when the key is absent from it.
    pub fn in_array(&self, array: &str, index: usize, key: Option<&str>) -> Option<usize> {
        self.find(&[Step::Key(array), Step::Index(index)], key)
    }

    /// Line of `key` in the table `[name]`, or of its header.
    pub fn in_table(&self, name: &str, key: Option<&str>) -> Option<usize> {
        self.find(&[Step::Key(name)], key)
    }

    /// Line of a top-level key.
    pub fn top(&self, key: &str) -> Option<usize> {
        self.find(&[], Some(key))
    }

    /// Line of `key` in the table at `path`, else of where that table is
    /// defined (its header, or its key for an inline or dotted table);
    /// None when the table is not in the text (or the text is not TOML).
    pub fn find(&self, path: &[Step<'_>], key: Option<&str>) -> Option<usize> {
        let doc = self
            .doc
            .get_or_init(|| ImDocument::parse(self.text).ok())
            .as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut at = None;
        for step in path {
            let (next, span) = match (*step, node) {
                (Step::Key(k), _) => {
                    let (key, item) = node.table()?.get_key_value(k)?;
                    (Node::Item(item), key.span().or_else(|| item.span()))
                }
                (Step::Index(i), Node::Item(Item::ArrayOfTables(a))) => {
                    let t = a.get(i)?;
                    (Node::Table(t), t.span())
                }
                (Step::Index(i), Node::Item(Item::Value(Value::Array(a)))) => {
                    let v = a.get(i)?;
                    (Node::Table(v.as_inline_table()?), v.span())
                }
                (Step::Index(_), _) => return None,
            };
            node = next;
            at = span.map(|s| self.line_at(s.start)).or(at);
        }
        let found = key.and_then(|k| node.table()?.get_key_value(k));
        match found {
            Some((k, v)) => k
                .span()
                .or_else(|| v.span())
                .map(|s| self.line_at(s.start))
                .or(at),
            None => at,
        }
    }

    /// Line (1-based) of a byte offset.
    pub fn line_at(&self, offset: usize) -> usize {
        line_at(self.text, offset)
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Where a walk down the document is: an item (which may be an array),
/// or a table (an array's entry, which toml_edit gives out as a table).
#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Table(&'d dyn TableLike),
}

impl<'d> Node<'d> {
    fn table(self) -> Option<&'d dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
        }
    }
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
    err.span().map(|r| line_at(text, r.start))
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

    /// A policy-like text with what a line scanner misreads: a header
    /// followed by a comment, a comment holding `[`, a multi-line string
    /// holding a header, dotted keys, inline tables, quoted keys.
    const TEXT: &str = r#"name = "top"
[store] # see [docs]
kind = "local"
"path" = "r"

[[job]]
name = "a"
keep.last = 3
keep.daily = 2

# [[job]] was here; [store] too
[[job]]
name = "b"
binlog = { keep = "2d", flush = "5s" }
[job.tls]
enabled = true

[[ job ]] # the third
name = "c"
script = """
[[job]]
keep = 1
"""
"quoted-key" = 1
a.b.c = 2
"#;

    #[test]
    fn keys_of_the_third_array_table_are_found_past_strings_and_comments() {
        let s = Spans::new(TEXT);
        assert_eq!(s.in_array("job", 2, None), Some(18));
        assert_eq!(s.in_array("job", 2, Some("name")), Some(19));
        // Not the `keep = 1` inside the multi-line string: the header line.
        assert_eq!(s.in_array("job", 2, Some("keep")), Some(18));
        assert_eq!(s.in_array("job", 2, Some("quoted-key")), Some(24));
        assert_eq!(s.in_array("job", 2, Some("a")), Some(25));
        assert_eq!(s.in_array("job", 3, None), None);
        // The second [[job]] is not the commented one.
        assert_eq!(s.in_array("job", 1, None), Some(12));
    }

    #[test]
    fn dotted_inline_and_sub_tables_are_found_at_their_keys() {
        let s = Spans::new(TEXT);
        assert_eq!(s.in_array("job", 0, Some("keep")), Some(8));
        assert_eq!(s.in_array("job", 1, Some("binlog")), Some(14));
        assert_eq!(s.in_array("job", 1, Some("tls")), Some(15));
        assert_eq!(
            s.find(
                &[Step::Key("job"), Step::Index(1), Step::Key("tls")],
                Some("enabled")
            ),
            Some(16)
        );
        assert_eq!(
            s.find(
                &[Step::Key("job"), Step::Index(0), Step::Key("keep")],
                Some("daily")
            ),
            Some(9)
        );
    }

    #[test]
    fn tables_with_comments_quoted_keys_and_top_keys() {
        let s = Spans::new(TEXT);
        assert_eq!(s.in_table("store", None), Some(2));
        assert_eq!(s.in_table("store", Some("kind")), Some(3));
        assert_eq!(s.in_table("store", Some("path")), Some(4));
        assert_eq!(s.in_table("store", Some("bucket")), Some(2));
        assert_eq!(s.in_table("daemon", Some("jitter")), None);
        assert_eq!(s.top("name"), Some(1));
        assert_eq!(Spans::new("a = [").top("a"), None);
    }

    #[test]
    fn inline_arrays_of_tables_are_found_by_index() {
        let s =
            Spans::new("channel = [\n  { name = \"a\" },\n  { name = \"b\", url = \"x\" },\n]\n");
        assert_eq!(s.in_array("channel", 1, Some("url")), Some(3));
        assert_eq!(s.in_array("channel", 1, Some("kind")), Some(3));
        assert_eq!(s.in_array("channel", 0, None), Some(2));
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
