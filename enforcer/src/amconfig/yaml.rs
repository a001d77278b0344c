//! An Alertmanager configuration as a tree of YAML nodes that remember where they are.
//!
//! The same technique as the policy parser (serde-saphyr's `Spanned<T>` records the line,
//! column and character span of every node), kept separate because the policy's tree is
//! private to it and Alertmanager's YAML has other needs: duplicate keys are errors (as in
//! Alertmanager's strict yaml.v2), merge keys (`<<`) and anchors are common.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::AliasLimits;
use serde_saphyr::{Budget, DuplicateKeyPolicy, Options, Spanned};

/// Nesting deeper than this is rejected; Alertmanager's deepest paths (routes of routes)
/// stay far below it, and the limit keeps the recursive tree building off the stack's end.
const MAX_DEPTH: usize = 64;
/// Aliases may share `http_config` blocks between receivers, not expand into a billion laughs.
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// A YAML node with its position.
#[derive(Debug)]
pub(super) struct Node {
    pub kind: Kind,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Offset of the node's text in the document, in characters.
    pub offset: usize,
    /// Length of the node's text, in characters (0 for containers).
    pub len: usize,
}

/// A node's value. Plain scalars are typed by YAML's rules; [`Node::text`] gives the source
/// spelling, which is what Alertmanager's yaml.v2 stores into a string field.
#[derive(Debug)]
pub(super) enum Kind {
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in document order.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug)]
pub(super) enum Scalar {
    Str(String),
    /// A number or boolean; its source text is what counts.
    Other,
}

impl Node {
    /// "a string", "a list", ... for messages.
    pub fn found(&self) -> &'static str {
        match self.kind {
            Kind::Null => "nothing",
            Kind::Scalar(Scalar::Str(_)) => "a string",
            Kind::Scalar(Scalar::Other) => "a number or boolean",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The value of `key` in a mapping (`None` for other nodes and absent keys).
    pub fn get(&self, key: &str) -> Option<&Node> {
        let Kind::Map(entries) = &self.kind else {
            return None;
        };
        entries
            .iter()
            .rev()
            .find(|(k, _)| matches!(&k.kind, Kind::Scalar(Scalar::Str(s)) if s == key))
            .map(|(_, v)| v)
    }

    /// A present, non-null value of `key`.
    pub fn value(&self, key: &str) -> Option<&Node> {
        self.get(key).filter(|n| !matches!(n.kind, Kind::Null))
    }

    /// A scalar's text as yaml.v2 would store it in a string field: the string itself, or
    /// the source spelling of a number or boolean. `None` for null and containers.
    pub fn text(&self, document: &str) -> Option<String> {
        match &self.kind {
            Kind::Scalar(Scalar::Str(s)) => Some(s.clone()),
            Kind::Scalar(Scalar::Other) => source(document, self.offset, self.len),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }
}

/// The text at a character span of the document.
fn source(document: &str, offset: usize, len: usize) -> Option<String> {
    let start = char_to_byte(document, offset)?;
    let end = start + char_to_byte(document.get(start..)?, len)?;
    document
        .get(start..end)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn char_to_byte(text: &str, chars: usize) -> Option<usize> {
    if text.is_ascii() {
        return (chars <= text.len()).then_some(chars);
    }
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .nth(chars)
}

/// A YAML syntax error with its position (1-based; 1:1 when the parser gives none).
pub(super) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses one YAML document. An empty document is [`Kind::Null`].
pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let options = Options {
        duplicate_keys: DuplicateKeyPolicy::Error,
        with_snippet: false,
        crop_radius: 0,
        budget: Some(Budget {
            max_depth: MAX_DEPTH,
            ..Budget::default()
        }),
        alias_limits: AliasLimits {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            ..AliasLimits::default()
        },
        ..Options::default()
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let e = e.without_snippet();
        let (line, column) = match e.location() {
            Some(l) if l.line() > 0 => (to_usize(l.line()), to_usize(l.column()).max(1)),
            _ => (1, 1),
        };
        let message = match e {
            serde_saphyr::Error::Message { msg, .. }
            | serde_saphyr::Error::HookError { msg, .. } => msg.clone(),
            other => {
                let full = other.to_string();
                let suffix = format!(" at line {line}, column {column}");
                full.strip_suffix(&suffix)
                    .map(str::to_owned)
                    .unwrap_or(full)
            }
        };
        let message = if message.starts_with("multiple YAML documents") {
            "an Alertmanager configuration is one YAML document; remove the `---` separator"
                .to_owned()
        } else {
            message
        };
        SyntaxError {
            line,
            column,
            message,
        }
    })
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Kind>::deserialize(deserializer)?;
        let at = spanned.referenced;
        Ok(Node {
            kind: spanned.value,
            line: to_usize(at.line()).max(1),
            column: to_usize(at.column()).max(1),
            offset: at.span().offset(),
            len: at.span().len(),
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Kind, D::Error> {
        Kind::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Other))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Other))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Other))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Other))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Other))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Other))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Str(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Str(v)))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Kind, E> {
        Ok(Kind::Scalar(Scalar::Str(
            String::from_utf8_lossy(v).into_owned(),
        )))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Kind::Map(entries))
    }
}
