//! Venue protocols (SPEC 9): what real exchanges demand of a feed connection beyond WebSocket
//! itself. Text keepalives and their pongs, answers to the venue's own pings, pacing of every client
//! message, decompression of binary frames, planned-disconnect notices and venue sequence gaps.
//!
//! Split as config vs. runtime: [`options`] is what a Connect request, a profile or a stored record
//! says (validated once, at Connect); [`Venue`] is the per-leg state the socket task consults. With
//! no option set the socket task holds no `Venue` at all, so a plain feed pays one branch per frame.

/// Largest keepalive message, reply template, matched text or JSON pointer (bytes): rules are
/// small, and a rule is matched against every frame.
pub const MAX_TEXT: usize = 4096;

mod decompress;
pub mod options;
mod pacing;
mod pointer;
pub mod profiles;
mod runtime;
mod sequence;

pub use options::{
    Decompress, Keepalive, Matcher, OutboundRate, ReplyRule, SequenceRule, VenueOptions,
};
pub use profiles::{ProfileError, Profiles};
pub(crate) use runtime::{Inbound, Venue};
pub(crate) use sequence::Gap;
