//! A YAML document as a tree of nodes that remember where they are.
//!
//! serde-saphyr deserializes into this tree through `Spanned<T>` (which records the line,
//! column and character span of every node, keys included); validation then walks the tree
//! and can point at any key or value. The policy and the Alertmanager configuration both read
//! their YAML this way, each with its own [`Settings`].

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::options::AliasLimits;
use serde_saphyr::{Budget, DuplicateKeyPolicy, Options, Spanned};

/// Aliases may share blocks between entries (a policy's port lists, Alertmanager's
/// `http_config`s), but not expand into a billion laughs.
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// How one kind of document is parsed.
pub(crate) struct Settings {
    /// What a key given twice in one mapping does.
    pub duplicate_keys: DuplicateKeyPolicy,
    /// Only `true`/`false` are booleans (otherwise YAML 1.1's `yes`, `on`, ... are too).
    pub strict_booleans: bool,
    /// Nesting deeper than this is rejected by the parser's budget (which also keeps the
    /// recursive tree building far from the stack's end).
    pub max_depth: usize,
    /// The parser's node budget; `None` keeps serde-saphyr's default.
    pub max_nodes: Option<usize>,
    /// The parser's event budget; `None` keeps serde-saphyr's default.
    pub max_events: Option<usize>,
    /// Parser messages reworded for the reader: a message starting with the first string
    /// becomes the second.
    pub rewords: &'static [(&'static str, &'static str)],
}

/// A YAML node with its position.
#[derive(Debug)]
pub(crate) struct Node {
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
/// source text via [`Node::offset`]/[`Node::len`] (or [`Node::text`]) when the exact
/// spelling matters.
#[derive(Debug)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; with [`DuplicateKeyPolicy::LastWins`] duplicate keys are
    /// kept (the policy's validator reports them).
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

    /// The value of `key` in a mapping (`None` for other nodes and absent keys; the last
    /// entry when a key is given twice).
    pub fn get(&self, key: &str) -> Option<&Node> {
        let Kind::Map(entries) = &self.kind else {
            return None;
        };
        entries
            .iter()
            .rev()
            .find(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == key))
            .map(|(_, v)| v)
    }

    /// A present, non-null value of `key`.
    pub fn value(&self, key: &str) -> Option<&Node> {
        self.get(key).filter(|n| !matches!(n.kind, Kind::Null))
    }

    /// The node's text in `document` (its character span); `None` when empty or out of range.
    /// For an alias node the span may be the alias itself (`*name`).
    pub fn source<'d>(&self, document: &'d str) -> Option<&'d str> {
        let start = char_to_byte(document, self.offset)?;
        let end = start + char_to_byte(document.get(start..)?, self.len)?;
        document.get(start..end).filter(|s| !s.is_empty())
    }

    /// A scalar's text as yaml.v2 would store it in a string field: the string itself, or
    /// the source spelling of a number or boolean. `None` for null and containers.
    pub fn text(&self, document: &str) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {
                self.source(document).map(str::to_owned)
            }
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }
}

/// The byte offset of the `chars`-th character of `text` (its end when `chars` is its length).
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
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The first control character other than tab, line feed and carriage return, with its
/// position. YAML parsers disagree on them (a NUL ends the text for C-string readers, so a
/// policy or an alertmanager.yml would be read shorter than it is), so both documents refuse
/// them outright.
pub(crate) fn control_character(text: &str) -> Option<SyntaxError> {
    let at = text.find(|c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))?;
    let c = text[at..].chars().next()?;
    let before = &text[..at];
    Some(SyntaxError {
        line: before.matches('\n').count() + 1,
        column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
        message: format!(
            "control character U+{:04X} is not allowed (only tab, line feed and carriage return \
             are)",
            u32::from(c)
        ),
    })
}

/// Parses one YAML document. An empty document is [`Kind::Null`]. Control characters are
/// refused first ([`control_character`]).
pub(crate) fn parse(text: &str, settings: &Settings) -> Result<Node, SyntaxError> {
    if let Some(e) = control_character(text) {
        return Err(e);
    }
    let defaults = Budget::default();
    let options = Options {
        duplicate_keys: settings.duplicate_keys,
        strict_booleans: settings.strict_booleans,
        with_snippet: false,
        crop_radius: 0,
        budget: Some(Budget {
            max_depth: settings.max_depth,
            max_nodes: settings.max_nodes.unwrap_or(defaults.max_nodes),
            max_events: settings.max_events.unwrap_or(defaults.max_events),
            ..defaults
        }),
        alias_limits: AliasLimits {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            ..AliasLimits::default()
        },
        ..Options::default()
    };
    let budget = options.budget.clone().unwrap_or_default();
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let e = e.without_snippet();
        let (line, column) = match e.location() {
            Some(l) if l.line() > 0 => (to_usize(l.line()), to_usize(l.column()).max(1)),
            _ => (1, 1),
        };
        let message = match e {
            serde_saphyr::Error::Budget { breach, .. } => budget_words(breach, &budget),
            // The parser's own limit for flow collections, met only beyond `max_depth`.
            serde_saphyr::Error::Message { msg, .. } if msg.starts_with("recursion limit") => {
                format!("nested deeper than {} levels", budget.max_depth)
            }
            serde_saphyr::Error::Message { msg, .. } if msg.starts_with("alias replay") => format!(
                "aliases expand to more than {} YAML events (an alias bomb?)",
                MAX_REPLAYED_EVENTS
            ),
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
        let message = match settings
            .rewords
            .iter()
            .find(|(prefix, _)| message.starts_with(prefix))
        {
            Some((_, reworded)) => (*reworded).to_owned(),
            None => message,
        };
        SyntaxError {
            line,
            column,
            message,
        }
    })
}

/// A budget breach as a sentence ("nested deeper than 32 levels"), not Rust debug output.
fn budget_words(breach: &BudgetBreach, budget: &Budget) -> String {
    match breach {
        BudgetBreach::Depth { .. } => format!("nested deeper than {} levels", budget.max_depth),
        BudgetBreach::Nodes { .. } => format!("more than {} YAML nodes", budget.max_nodes),
        BudgetBreach::Events { .. } => format!("more than {} YAML events", budget.max_events),
        BudgetBreach::Aliases { .. } => format!("more than {} aliases", budget.max_aliases),
        BudgetBreach::Anchors { .. } => format!("more than {} anchors", budget.max_anchors),
        BudgetBreach::Documents { .. } => {
            format!("more than {} YAML documents", budget.max_documents)
        }
        BudgetBreach::ScalarBytes { .. } => format!(
            "more than {} bytes of values in all",
            budget.max_total_scalar_bytes
        ),
        BudgetBreach::MergeKeys { .. } => {
            format!("more than {} merge keys (`<<`)", budget.max_merge_keys)
        }
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
            "{aliases} aliases for {anchors} anchors: more than {} aliases per anchor (an alias \
             bomb?)",
            budget.alias_anchor_ratio_multiplier
        ),
        BudgetBreach::InputBytes { .. } => "the document is too large".to_owned(),
        BudgetBreach::SequenceUnbalanced => "unbalanced structure (truncated input?)".to_owned(),
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

    /// Beyond `i128` a number is kept as the nearest float (still a number; its exact
    /// spelling stays available through [`Node::text`]). serde-saphyr 0.0.16's
    /// `deserialize_any` hands over at most 64-bit integers, so this is for completeness.
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        Ok(i128::try_from(v).map_or(Kind::Float(v as f64), Kind::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, mut v: String) -> Result<Kind, E> {
        // The parser hands over its scratch buffer (128 bytes for a 14-byte CIDR).
        v.shrink_to_fit();
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
        // A large policy is 10^5 small lists and mappings: without this each keeps the spare
        // capacity of its first growth (four entries for one), several times the tree's size.
        items.shrink_to_fit();
        Ok(Kind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        entries.shrink_to_fit();
        Ok(Kind::Map(entries))
    }
}
