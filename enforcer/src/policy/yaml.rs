//! A YAML document as a tree of nodes that remember where they are.
//!
//! serde-saphyr deserializes into this tree through `Spanned<T>` (which records the line,
//! column and character span of every node, keys included); validation then walks the tree
//! and can point at any key or value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::AliasLimits;
use serde_saphyr::{Budget, DuplicateKeyPolicy, Options, Spanned};

/// Nesting deeper than this is rejected by the parser's budget; a policy needs four levels,
/// and the limit keeps the recursive tree building far from the stack's end.
const MAX_DEPTH: usize = 32;
/// Room for large generated blocklists (a `cidr` entry is three nodes, four events).
const MAX_NODES: usize = 2_000_000;
const MAX_EVENTS: usize = 5_000_000;
/// Aliases may share a port list between entries, but not expand into a billion laughs.
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

/// A node's value. Plain scalars are typed by YAML's rules (`80` is an integer); keep the
/// source text via [`Node::offset`]/[`Node::len`] when the exact spelling matters.
#[derive(Debug)]
pub(super) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; duplicate keys are kept (the validator reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// "a string", "a list", ... for messages.
    pub fn found(&self) -> &'static str {
        match self.kind {
            Kind::Null => "nothing",
            Kind::Bool(_) => "true/false",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
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
        // The validator reports duplicates itself, with both positions.
        duplicate_keys: DuplicateKeyPolicy::LastWins,
        // `yes`/`on` stay strings, so `mode: yes` is "unknown mode" rather than a type error.
        strict_booleans: true,
        with_snippet: false,
        crop_radius: 0,
        budget: Some(Budget {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: MAX_EVENTS,
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
        SyntaxError {
            line,
            column,
            message: user_message(message),
        }
    })
}

/// Rewords the parser messages that speak of serde-saphyr's API rather than the document.
fn user_message(message: String) -> String {
    if message.starts_with("multiple YAML documents") {
        "a policy is one YAML document; remove the `---` separator".to_owned()
    } else if message.starts_with("Recursive references") {
        "an alias refers to a node that contains it".to_owned()
    } else {
        message
    }
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

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Kind, E> {
        Ok(Kind::Str(String::from_utf8_lossy(v).into_owned()))
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
