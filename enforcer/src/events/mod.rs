//! Ring-buffer records → checked, typed events → JSON lines.
//!
//! Every record the kernel writes starts with an [`EventHeader`] (kind, version, length,
//! timestamp, cgroup id). [`decode`] is the one decoder: it checks the header against what the
//! record type declares ([`Record`]) and only then reads the payload, by value. What a line
//! says is a serde view struct ([`DenyView`], [`LostView`]); [`emit`] writes it to stdout as
//! one JSON line. The `#[repr(C)]` types of `enforcer-common` stay free of formatting.
//! Identical denials are folded into one line per window by an [`Aggregator`].
//!
//! Events import only earlier stages (policy, kernel); what they need from the agent (the name
//! an address was answered for) comes in through [`AddressNames`].
use enforcer_common::{DenyEvent, EVENT_VERSION, EventHeader, event_kind, hook};

pub mod aggregate;
pub mod api;
mod deny;
pub mod learned;
mod line;

pub use aggregate::Aggregator;
pub use deny::{AddressNames, DenyView, LostView, RuleBook};
pub use line::emit;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {len} bytes is shorter than the {need}-byte event")]
    Short { len: usize, need: usize },
    #[error("event version {found}, this agent reads version {expected}")]
    Version { found: u16, expected: u16 },
    #[error("unknown event kind {kind}")]
    Kind { kind: u16 },
    #[error("event of kind {kind} says it is {len} bytes long, this agent reads {need}")]
    Length { kind: u16, len: u32, need: usize },
    #[error("unknown hook code {hook}")]
    Hook { hook: u8 },
}

/// A record type of a ring buffer: a `#[repr(C)]` struct of plain integers that starts with
/// an [`EventHeader`].
pub trait Record: aya::Pod {
    /// The header kinds this type is written with.
    const KINDS: &'static [u16];
    /// The layout version the kernel writes.
    const VERSION: u16;
    fn header(&self) -> &EventHeader;
    /// Checks of the payload beyond the header (codes that must be known).
    fn check(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Record for DenyEvent {
    const KINDS: &'static [u16] = &[event_kind::DENIED, event_kind::WOULD_DENY];
    const VERSION: u16 = EVENT_VERSION;
    fn header(&self) -> &EventHeader {
        &self.header
    }
    fn check(&self) -> Result<(), DecodeError> {
        match hook::name(self.hook) {
            Some(_) => Ok(()),
            None => Err(DecodeError::Hook { hook: self.hook }),
        }
    }
}

/// Reads one ring-buffer record as a `T`: the record must hold a whole `T`, and its header the
/// kind, version and length `T` declares.
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes (checked above), read unaligned;
    // `T: Pod` is plain integers, for which any bit pattern is a valid value.
    let record: T = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let header = record.header();
    if header.version != T::VERSION {
        return Err(DecodeError::Version {
            found: header.version,
            expected: T::VERSION,
        });
    }
    if !T::KINDS.contains(&header.kind) {
        return Err(DecodeError::Kind { kind: header.kind });
    }
    if header.len as usize != need {
        return Err(DecodeError::Length {
            kind: header.kind,
            len: header.len,
            need,
        });
    }
    record.check()?;
    Ok(record)
}

#[cfg(test)]
mod tests;
