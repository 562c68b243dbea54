//! The arbiter (SPEC 8): one per connection, between its legs and its publish queue. Two legs
//! deliver the same venue frames; the arbiter lets each through once, from whichever leg was first,
//! and tells the socket task when a new leg has been seen to overlap an old one (so the old may
//! close without losing anything).
//!
//! Identity: with a `sequence` rule, a frame is its (key, value); it is published only if the
//! value is above the last published for its key. Anything else (acks, heartbeats, venues without
//! ids, values that are not numbers) is its fingerprint, a 64-bit hash of its bytes, matched
//! against what the other leg published within a bounded window.
//!
//! With one leg and no change under way the socket task does not call the arbiter at all: frames
//! pass unchanged and cost nothing. Memory is bounded: [`MAX_PRINTS`] fingerprints, [`MAX_KEYS`]
//! keys of at most [`MAX_KEY_LEN`] bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use bytes::Bytes;

use tokio::time::Instant;

use crate::jsonscan::{self as scan, Steps};

/// Fingerprints remembered (the overlap window in frames).
pub const MAX_PRINTS: usize = 4096;
/// How long a fingerprint is remembered (the overlap window in time).
pub const PRINT_WINDOW: Duration = Duration::from_secs(5);
/// Sequence keys remembered; frames of further keys are identified by fingerprint.
pub const MAX_KEYS: usize = 16_384;
/// Longest sequence key kept; longer keys are identified by fingerprint.
pub const MAX_KEY_LEN: usize = 256;
/// Most bytes a joining leg's held frames may take; older ones are forgotten first (the other
/// leg publishes them meanwhile).
pub const MAX_HELD_BYTES: usize = 16 << 20;
/// The pseudo-key under which fingerprinted frames count towards an overlap.
const PRINTS_KEY: &str = "";

/// A leg's slot: 0 or 1.
pub type Slot = u8;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Publish,
    /// Already published from the other leg (or older than what was).
    Duplicate,
    /// A joining leg's frame, kept until the leg is seen to be in step ([`Arbiter::release`]).
    Held,
}

/// A frame's venue identity, for `gap` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueId {
    pub key: String,
    pub value: u64,
}

#[derive(Debug, Default)]
struct Key {
    published: u64,
    /// The last value each leg delivered: a leg that goes below its own last value restarted
    /// its sequence (a venue reset), which is not a duplicate.
    legs: [Option<u64>; 2],
    /// A reset seen on this leg and not yet on the other: the other's frames for this key are of
    /// the old numbering and are dropped until it resets too.
    reset_by: Option<Slot>,
}

/// A new leg watched for its overlap with an old one.
#[derive(Debug)]
struct Overlap {
    old: Slot,
    /// Keys the old leg published since the new leg came up, with no duplicate seen yet.
    pending: HashSet<String>,
    proven: HashSet<String>,
    duplicates: u64,
}

/// A joining leg's frames, held until it is seen to be in step with the other leg. Published at
/// once, a joining leg's first frames could run ahead of what the other leg has delivered yet:
/// the frames in between, arriving later on the other leg, would then be out of order (or, with
/// sequence values, taken for duplicates). Held, they are published after the other leg's, from
/// the first one it did not deliver.
struct Hold {
    slot: Slot,
    frames: VecDeque<Held>,
    bytes: usize,
    /// The first held value per key, and the held fingerprints (with their counts).
    first: HashMap<String, u64>,
    prints: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
}

struct Held {
    payload: Bytes,
    text: bool,
    print: u64,
}

impl Hold {
    fn new(slot: Slot) -> Hold {
        Hold {
            slot,
            frames: VecDeque::new(),
            bytes: 0,
            first: HashMap::new(),
            prints: HashMap::default(),
        }
    }

    fn push(&mut self, payload: &Bytes, text: bool, print: u64, id: Option<&VenueId>) {
        if payload.len() > MAX_HELD_BYTES {
            return;
        }
        while self.frames.len() >= MAX_PRINTS || self.bytes + payload.len() > MAX_HELD_BYTES {
            let Some(old) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= old.payload.len();
            if let Some(n) = self.prints.get_mut(&old.print) {
                *n -= 1;
                if *n == 0 {
                    self.prints.remove(&old.print);
                }
            }
        }
        if let Some(id) = id {
            if !self.first.contains_key(&id.key) && self.first.len() < MAX_KEYS {
                self.first.insert(id.key.clone(), id.value);
            }
        }
        *self.prints.entry(print).or_insert(0) += 1;
        self.bytes += payload.len();
        self.frames.push_back(Held {
            payload: payload.clone(),
            text,
            print,
        });
    }

    /// Whether the other leg's published frame is among (or, by value, behind) what is held.
    fn covers(&self, print: u64, id: Option<&VenueId>) -> bool {
        match id {
            Some(id) => self
                .first
                .get(&id.key)
                .is_some_and(|first| *first <= id.value),
            None => self.prints.contains_key(&print),
        }
    }
}

/// Passes hashes through: fingerprints are already uniform 64-bit hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Prints {
    /// Per fingerprint: published by leg 0 (+1 each) minus by leg 1 (−1 each), not yet matched by
    /// the other leg. A frame from leg 0 whose balance is negative was published from leg 1.
    balance: HashMap<u64, i32, BuildHasherDefault<IdHasher>>,
    /// Published fingerprints, oldest first, for the window.
    ring: VecDeque<(u64, Instant, Slot)>,
}

impl Prints {
    fn admit(&mut self, print: u64, slot: Slot, now: Instant) -> Verdict {
        self.expire(now);
        let sign = sign(slot);
        let balance = self.balance.entry(print).or_insert(0);
        let owed = *balance * sign < 0;
        *balance += sign;
        if *balance == 0 {
            self.balance.remove(&print);
        }
        if owed {
            return Verdict::Duplicate;
        }
        self.ring.push_back((print, now, slot));
        Verdict::Publish
    }

    /// Whether the other leg published `print` and `slot` has not delivered it yet.
    fn owed_to(&self, print: u64, slot: Slot) -> bool {
        self.balance
            .get(&print)
            .is_some_and(|balance| *balance * sign(slot) < 0)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(print, at, slot)) = self.ring.front() {
            if self.ring.len() < MAX_PRINTS && now.saturating_duration_since(at) <= PRINT_WINDOW {
                break;
            }
            self.ring.pop_front();
            let sign = sign(slot);
            if let Some(balance) = self.balance.get_mut(&print) {
                if *balance * sign > 0 {
                    *balance -= sign;
                }
                if *balance == 0 {
                    self.balance.remove(&print);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.balance.clear();
        self.ring.clear();
    }
}

fn sign(slot: Slot) -> i32 {
    if slot == 0 {
        1
    } else {
        -1
    }
}

/// The `sequence` rule's pointers, as scan steps (checked by `Pointer::parse` first).
struct Ids {
    value: Steps,
    key: Option<Steps>,
}

pub struct Arbiter {
    ids: Option<Ids>,
    keys: HashMap<String, Key>,
    key_bytes: usize,
    prints: Prints,
    live: [bool; 2],
    overlap: Option<Overlap>,
    hold: Option<Hold>,
    /// Frames dropped as duplicates, and sequence resets followed, since the start.
    pub duplicates: u64,
    pub resets: u64,
}

impl std::fmt::Debug for Arbiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arbiter")
            .field("keys", &self.keys.len())
            .field("prints", &self.prints.ring.len())
            .field("live", &self.live)
            .finish()
    }
}

impl Arbiter {
    /// `sequence`: the JSON pointers of the value and the key (`sequence.value`, `sequence.key`,
    /// validated at Connect); `None` identifies every frame by fingerprint.
    pub fn new(sequence: Option<(&str, Option<&str>)>) -> Arbiter {
        let ids = sequence.map(|(value, key)| Ids {
            value: Steps::of(value),
            key: key.map(Steps::of),
        });
        Arbiter {
            ids,
            keys: HashMap::new(),
            key_bytes: 0,
            prints: Prints::default(),
            live: [false; 2],
            overlap: None,
            hold: None,
            duplicates: 0,
            resets: 0,
        }
    }

    /// A leg started delivering. When another leg is live, the new one is watched until the two
    /// are seen to overlap ([`Arbiter::overlap_proven`]).
    pub fn leg_up(&mut self, slot: Slot) {
        let slot = slot.min(1);
        self.live[usize::from(slot)] = true;
        let other = 1 - slot;
        if self.live[usize::from(other)] {
            self.overlap = Some(Overlap {
                old: other,
                pending: HashSet::new(),
                proven: HashSet::new(),
                duplicates: 0,
            });
            self.hold = Some(Hold::new(slot));
        }
    }

    /// Ends the hold of a joining leg (it is in step, it takes over, or the other leg is gone):
    /// its held frames that the other leg did not deliver, in order, to publish now.
    pub fn release(&mut self, now: Instant) -> Vec<(Bytes, bool)> {
        let Some(hold) = self.hold.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for held in hold.frames {
            if self.admit(hold.slot, &held.payload, held.text, now) == Verdict::Publish {
                out.push((held.payload, held.text));
            }
        }
        out
    }

    /// A leg is gone: what it delivered no longer says anything about what it will deliver.
    pub fn leg_down(&mut self, slot: Slot) {
        let slot = slot.min(1);
        self.live[usize::from(slot)] = false;
        for key in self.keys.values_mut() {
            key.legs[usize::from(slot)] = None;
            key.reset_by = None;
        }
        self.overlap = None;
        if self.hold.as_ref().is_some_and(|h| h.slot == slot) {
            self.hold = None;
        }
        if !self.live.iter().any(|l| *l) {
            self.prints.clear();
        }
    }

    /// Whether a watched new leg has been seen to deliver what the old one did, on every key the
    /// old one published meanwhile. `None` with nothing watched.
    pub fn overlap_proven(&self) -> Option<bool> {
        let o = self.overlap.as_ref()?;
        Some(!o.proven.is_empty() && o.pending.is_empty())
    }

    /// Starts the watch over (a new leg whose paced greeting just finished: only what it
    /// delivers from now on, fully subscribed, proves the overlap); the duplicates so far. What
    /// it holds stays held.
    pub fn restart_overlap(&mut self) -> u64 {
        let Some(o) = &mut self.overlap else {
            return 0;
        };
        o.pending.clear();
        o.proven.clear();
        std::mem::take(&mut o.duplicates)
    }

    /// Ends the watch; the duplicates suppressed during it.
    pub fn end_overlap(&mut self) -> u64 {
        self.overlap.take().map(|o| o.duplicates).unwrap_or(0)
    }

    /// Decides one frame from leg `slot`.
    pub fn admit(&mut self, slot: Slot, payload: &Bytes, text: bool, now: Instant) -> Verdict {
        let slot = slot.min(1);
        let id = if text { self.id_of(payload) } else { None };
        let id = id.filter(|id| self.keys.contains_key(&id.key) || self.keys.len() < MAX_KEYS);
        let print = match id {
            Some(_) => 0,
            None => fingerprint(payload, text),
        };
        let joining = self.hold.as_ref().is_some_and(|h| h.slot == slot);
        let verdict = if joining {
            self.admit_joining(slot, payload, text, print, id.as_ref(), now)
        } else {
            let verdict = match &id {
                Some(id) => self.admit_id(slot, id),
                None => self.prints.admit(print, slot, now),
            };
            if verdict == Verdict::Publish {
                if let Some(hold) = &self.hold {
                    if hold.covers(print, id.as_ref()) {
                        // The joining leg holds this frame: it is in step here.
                        self.proven(id.as_ref().map(|i| i.key.as_str()), false);
                    }
                }
            }
            verdict
        };
        if verdict == Verdict::Duplicate {
            self.duplicates += 1;
            self.proven(id.as_ref().map(|i| i.key.as_str()), true);
        }
        if verdict == Verdict::Publish {
            if let Some(o) = &mut self.overlap {
                let key = id.as_ref().map_or(PRINTS_KEY, |i| i.key.as_str());
                if slot == o.old
                    && !o.proven.contains(key)
                    && !o.pending.contains(key)
                    && o.pending.len() < MAX_KEYS
                {
                    o.pending.insert(key.to_owned());
                }
            }
        }
        verdict
    }

    /// A joining leg's frame: a duplicate if the other leg already published it, else held.
    fn admit_joining(
        &mut self,
        slot: Slot,
        payload: &Bytes,
        text: bool,
        print: u64,
        id: Option<&VenueId>,
        now: Instant,
    ) -> Verdict {
        let behind = match id {
            Some(id) => self
                .keys
                .get(&id.key)
                .is_some_and(|k| id.value <= k.published),
            None => self.prints.owed_to(print, slot),
        };
        if behind {
            if id.is_none() {
                // Consumes the other leg's copy, as a duplicate does.
                self.prints.admit(print, slot, now);
            }
            return Verdict::Duplicate;
        }
        if let Some(hold) = &mut self.hold {
            hold.push(payload, text, print, id);
        }
        Verdict::Held
    }

    /// A key (`None`: fingerprints) where the legs were seen to overlap; `duplicate`: by a frame
    /// dropped as one (counted), not by a held frame the other leg delivered.
    fn proven(&mut self, key: Option<&str>, duplicate: bool) {
        let Some(o) = &mut self.overlap else {
            return;
        };
        let key = key.unwrap_or(PRINTS_KEY);
        if duplicate {
            o.duplicates += 1;
        }
        if !o.proven.contains(key) {
            o.proven.insert(key.to_owned());
        }
        o.pending.remove(key);
    }

    fn admit_id(&mut self, slot: Slot, id: &VenueId) -> Verdict {
        let other_live = self.live[usize::from(1 - slot)];
        let key = match self.keys.get_mut(&id.key) {
            Some(key) => key,
            None => {
                self.key_bytes += id.key.len();
                self.keys.insert(
                    id.key.clone(),
                    Key {
                        published: id.value,
                        legs: leg_values(slot, id.value),
                        reset_by: None,
                    },
                );
                return Verdict::Publish;
            }
        };
        let mine = &mut key.legs[usize::from(slot)];
        let went_back = mine.is_some_and(|last| id.value < last);
        *mine = Some(id.value);
        if went_back {
            if key.reset_by.is_some_and(|by| by != slot) {
                // The other leg reset first; this one now follows the new numbering.
                key.reset_by = None;
            } else {
                // A venue reset, first seen here: follow it.
                key.reset_by = other_live.then_some(slot);
                key.published = id.value;
                self.resets += 1;
                return Verdict::Publish;
            }
        } else if key.reset_by.is_some_and(|by| by != slot) {
            // Still the old numbering on this leg.
            return Verdict::Duplicate;
        }
        if id.value > key.published {
            key.published = id.value;
            Verdict::Publish
        } else {
            Verdict::Duplicate
        }
    }

    /// The frame's (key, value) under the `sequence` rule, if it has a numeric one. Found by a
    /// scan of the bytes, not a parse into a tree (`venue::scan`).
    pub fn id_of(&self, payload: &[u8]) -> Option<VenueId> {
        let ids = self.ids.as_ref()?;
        let value = scan::as_u64(ids.value.find(payload)?)?;
        let key = match &ids.key {
            None => String::new(),
            Some(k) => match k.find(payload) {
                Some(raw) if raw.len() <= MAX_KEY_LEN + 2 => scan::as_key(raw)?,
                Some(_) => return None,
                None => String::new(),
            },
        };
        (key.len() <= MAX_KEY_LEN).then_some(VenueId { key, value })
    }

    /// Forgets everything: one leg serves on alone, and the next change starts from its trigger.
    /// A rotated connection would otherwise keep its last window (up to ~160 KiB) for good.
    pub fn forget(&mut self) {
        self.prints.clear();
        self.keys.clear();
        self.key_bytes = 0;
        self.hold = None;
        self.overlap = None;
    }

    /// Bytes held, approximately (what `/metrics` shows as `wsm_arbiter_bytes`).
    pub fn memory(&self) -> usize {
        const PRINT: usize = 24 + 16;
        const KEY: usize = 64;
        let held = self.hold.as_ref().map_or(0, |h| {
            h.bytes + h.frames.len() * PRINT + h.first.len() * KEY
        });
        self.prints.ring.len() * PRINT + self.keys.len() * KEY + self.key_bytes + held
    }
}

fn leg_values(slot: Slot, value: u64) -> [Option<u64>; 2] {
    let mut legs = [None; 2];
    legs[usize::from(slot)] = Some(value);
    legs
}

/// The fingerprint of a frame: its bytes and whether it was text.
pub fn fingerprint(payload: &[u8], text: bool) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(payload, u64::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequenced() -> Arbiter {
        Arbiter::new(Some(("/u", Some("/s"))))
    }

    fn frame(s: &str, u: impl std::fmt::Display) -> String {
        format!(r#"{{"s":"{s}","u":{u}}}"#)
    }

    /// Two legs in step: the second has joined and been released, as the socket task does once
    /// their overlap is proven.
    fn both(a: &mut Arbiter) {
        a.leg_up(0);
        a.leg_up(1);
        a.release(Instant::now());
        a.end_overlap();
    }

    fn b(s: impl AsRef<[u8]>) -> Bytes {
        Bytes::copy_from_slice(s.as_ref())
    }

    #[test]
    fn a_frame_on_both_legs_is_published_once_from_the_first() {
        let mut a = sequenced();
        both(&mut a);
        let now = Instant::now();
        let mut published = Vec::new();
        // Leg 1 lags leg 0 by two frames.
        for u in 1..=10u64 {
            for (slot, v) in [(0, u), (1, u.saturating_sub(2))] {
                if v == 0 {
                    continue;
                }
                if a.admit(slot, &b(frame("A", v)), true, now) == Verdict::Publish {
                    published.push(v);
                }
            }
        }
        assert_eq!(published, (1..=10).collect::<Vec<_>>());
        assert_eq!(a.duplicates, 8);
    }

    #[test]
    fn keys_are_independent() {
        let mut a = sequenced();
        both(&mut a);
        let now = Instant::now();
        assert_eq!(a.admit(0, &b(frame("A", 5)), true, now), Verdict::Publish);
        assert_eq!(a.admit(1, &b(frame("B", 3)), true, now), Verdict::Publish);
        assert_eq!(a.admit(1, &b(frame("A", 5)), true, now), Verdict::Duplicate);
        assert_eq!(a.admit(0, &b(frame("B", 3)), true, now), Verdict::Duplicate);
    }

    #[test]
    fn a_venue_reset_is_followed_and_not_published_twice() {
        let mut a = sequenced();
        both(&mut a);
        let now = Instant::now();
        for u in [100, 101] {
            a.admit(0, &b(frame("A", u)), true, now);
            a.admit(1, &b(frame("A", u)), true, now);
        }
        // The venue restarts at 1: leg 0 sees it first.
        assert_eq!(a.admit(0, &b(frame("A", 1)), true, now), Verdict::Publish);
        // Leg 1 still delivers the old numbering once more: dropped.
        assert_eq!(
            a.admit(1, &b(frame("A", 102)), true, now),
            Verdict::Duplicate
        );
        assert_eq!(a.admit(1, &b(frame("A", 1)), true, now), Verdict::Duplicate);
        assert_eq!(a.admit(0, &b(frame("A", 2)), true, now), Verdict::Publish);
        assert_eq!(a.admit(1, &b(frame("A", 2)), true, now), Verdict::Duplicate);
        assert_eq!(a.admit(1, &b(frame("A", 3)), true, now), Verdict::Publish);
        assert_eq!(a.resets, 1);
    }

    #[test]
    fn values_that_are_not_numbers_fall_back_to_fingerprints() {
        let mut a = sequenced();
        both(&mut a);
        let now = Instant::now();
        let f = r#"{"s":"A","u":"abc"}"#;
        assert_eq!(a.id_of(f.as_bytes()), None);
        assert_eq!(a.admit(0, &b(f), true, now), Verdict::Publish);
        assert_eq!(a.admit(1, &b(f), true, now), Verdict::Duplicate);
        // Numeric strings are values.
        assert_eq!(
            a.id_of(br#"{"s":"A","u":"42"}"#),
            Some(VenueId {
                key: "A".into(),
                value: 42
            })
        );
    }

    #[test]
    fn fingerprints_match_identical_frames_as_a_multiset() {
        let mut a = Arbiter::new(None);
        both(&mut a);
        let now = Instant::now();
        let mut out = 0;
        // Two legitimately identical heartbeats per leg, interleaved differently.
        for (slot, f) in [
            (0, "hb"),
            (0, "hb"),
            (1, "hb"),
            (1, "x"),
            (1, "hb"),
            (0, "x"),
        ] {
            if a.admit(slot, &b(f), true, now) == Verdict::Publish {
                out += 1;
            }
        }
        assert_eq!(out, 3, "hb twice and x once");
    }

    #[test]
    fn fingerprints_expire_after_the_window() {
        let mut a = Arbiter::new(None);
        both(&mut a);
        let t0 = Instant::now();
        assert_eq!(a.admit(0, &b("f"), true, t0), Verdict::Publish);
        let late = t0 + PRINT_WINDOW + Duration::from_millis(1);
        assert_eq!(a.admit(1, &b("f"), true, late), Verdict::Publish);
        for i in 0..(MAX_PRINTS as u32 * 2) {
            a.admit(0, &b(i.to_le_bytes()), false, late);
        }
        assert!(a.prints.ring.len() <= MAX_PRINTS);
        assert!(a.memory() < 1 << 20, "{}", a.memory());
    }

    #[test]
    fn an_overlap_is_proven_per_key_the_old_leg_published() {
        let mut a = sequenced();
        a.leg_up(0);
        let now = Instant::now();
        a.admit(0, &b(frame("A", 1)), true, now);
        a.leg_up(1);
        assert_eq!(a.overlap_proven(), Some(false));
        a.admit(0, &b(frame("A", 2)), true, now);
        a.admit(0, &b(frame("B", 1)), true, now);
        let dup = a.admit(1, &b(frame("A", 2)), true, now);
        assert_eq!(dup, Verdict::Duplicate);
        assert_eq!(
            a.overlap_proven(),
            Some(false),
            "B not yet seen on the new leg"
        );
        // The new leg is ahead on B: held, not published before the old leg's B 2.
        assert_eq!(a.admit(1, &b(frame("B", 2)), true, now), Verdict::Held);
        assert_eq!(a.admit(1, &b(frame("B", 3)), true, now), Verdict::Held);
        assert_eq!(a.admit(0, &b(frame("B", 2)), true, now), Verdict::Publish);
        assert_eq!(a.overlap_proven(), Some(true));
        // Released: what the old leg did not deliver, in order.
        let released: Vec<Bytes> = a.release(now).into_iter().map(|(p, _)| p).collect();
        assert_eq!(released, [b(frame("B", 3))]);
        assert_eq!(a.end_overlap(), 2);
        assert_eq!(a.overlap_proven(), None);
    }

    #[test]
    fn a_joining_leg_ahead_by_fingerprint_is_held_and_released_in_order() {
        let mut a = Arbiter::new(None);
        a.leg_up(0);
        let now = Instant::now();
        assert_eq!(a.admit(0, &b("f1"), true, now), Verdict::Publish);
        a.leg_up(1);
        // The new leg starts at f3, before the old leg delivered f2 and f3.
        for f in ["f3", "f4", "f5"] {
            assert_eq!(a.admit(1, &b(f), true, now), Verdict::Held);
        }
        assert_eq!(a.admit(0, &b("f2"), true, now), Verdict::Publish);
        assert_eq!(a.overlap_proven(), Some(false));
        assert_eq!(a.admit(0, &b("f3"), true, now), Verdict::Publish);
        assert_eq!(a.overlap_proven(), Some(true));
        let released: Vec<Bytes> = a.release(now).into_iter().map(|(p, _)| p).collect();
        assert_eq!(released, [b("f4"), b("f5")]);
        // In step from here: the old leg's late copies are duplicates.
        assert_eq!(a.admit(0, &b("f4"), true, now), Verdict::Duplicate);
    }

    #[test]
    fn forgetting_gives_the_memory_back() {
        let mut a = sequenced();
        both(&mut a);
        let now = Instant::now();
        for u in 1..=100 {
            a.admit(0, &b(frame("A", u)), true, now);
            a.admit(0, &b(format!("hb{u}")), true, now);
        }
        assert!(a.memory() > 0);
        a.forget();
        assert_eq!(a.memory(), 0);
    }

    #[test]
    fn a_sixteen_mib_frame_is_fingerprinted() {
        let mut a = sequenced();
        both(&mut a);
        let big = Bytes::from(vec![b'x'; 16 << 20]);
        let now = Instant::now();
        assert_eq!(a.admit(0, &big, true, now), Verdict::Publish);
        assert_eq!(a.admit(1, &big, true, now), Verdict::Duplicate);
    }
}
