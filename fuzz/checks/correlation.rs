//! What the `correlation` fuzz target checks, in one place: the libFuzzer target and the stable
//! corpus replay (tests/fuzz_corpus.rs) include this file with `#[path]`.
//!
//! One input is a sequence of operations on one `wsm::connection::correlation::Correlator`, run
//! against a model of what SPEC §5 ("Send (correlated)") allows:
//!
//! ```text
//! op byte % 7:
//!   0 register                      a new request (at most 64 per input)
//!   1 cancel    k                   request k; k past the last one cancels an id never registered
//!   2 text      len(u16 LE) bytes   a text frame; marker bytes 0xF5-0xF9 followed by k are replaced
//!                                   by request k's id: F5 as sent (lowercase, hyphenated),
//!                                   F6 uppercase, F7 without hyphens, F8 braced, F9 every character
//!                                   \u-escaped (JSON-equal to F5); invalid UTF-8 becomes U+FFFD
//!   3 binary    p len bytes         a binary frame; even p: request p/2's 16 id bytes first
//!   4 echo text k len payload       `wrap(id_k, payload, text)` fed back to `match_text`
//!   5 echo bin  k len payload       `wrap(id_k, payload, binary)` fed back to `match_binary`
//!   6 clear
//! ```
//!
//! The properties: nothing panics; a text frame matches exactly when it is a JSON object with one
//! top-level `"id"` whose string value equals a pending request's id as sent (SPEC: "whose top-level
//! "id" equals it"), a binary frame exactly when it is at least 16 bytes long and starts with a
//! pending request's id bytes; the matched request's waiter then receives exactly the whole text
//! frame, or the binary frame minus its prefix, and no other waiter receives anything; an echo of a
//! pending request's own wrapped message always matches it; an echo of a cancelled or answered
//! request never matches; cancelled and cleared waiters see their sender dropped; `pending()` always
//! equals the number of requests still waiting.
#![allow(dead_code)] // each includer uses a different part

use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::oneshot::Receiver;
use uuid::Uuid;
use wsm::connection::correlation::{wrap, Correlator};

pub const OP_REGISTER: u8 = 0;
pub const OP_CANCEL: u8 = 1;
pub const OP_TEXT: u8 = 2;
pub const OP_BINARY: u8 = 3;
pub const OP_ECHO_TEXT: u8 = 4;
pub const OP_ECHO_BINARY: u8 = 5;
pub const OP_CLEAR: u8 = 6;
const OPS: u8 = 7;
/// Marker bytes (never valid in UTF-8) that text frames replace with a request's id.
pub const ID_AS_SENT: u8 = 0xF5;
pub const ID_UPPERCASE: u8 = 0xF6;
pub const ID_SIMPLE: u8 = 0xF7;
pub const ID_BRACED: u8 = 0xF8;
pub const ID_ESCAPED: u8 = 0xF9;
const MAX_REQUESTS: usize = 64;

/// Where one registered request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    /// Answered: its one frame has been received and checked.
    Answered,
    /// Cancelled or cleared: its sender must be gone.
    Dropped,
}

struct Request {
    id: Uuid,
    rx: Receiver<Bytes>,
    state: State,
}

/// A byte reader over the fuzz input; every read past the end gives zeroes or nothing.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn chunk(&mut self) -> &'a [u8] {
        let lo = self.byte().unwrap_or(0);
        let hi = self.byte().unwrap_or(0);
        let len = usize::from(u16::from_le_bytes([lo, hi])).min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        chunk
    }
}

/// Builders of inputs (for seeds and regression cases), the inverse of what [`run`] reads.
pub mod ops {
    use super::*;

    pub fn register() -> Vec<u8> {
        vec![OP_REGISTER]
    }
    pub fn cancel(k: u8) -> Vec<u8> {
        vec![OP_CANCEL, k]
    }
    pub fn text(template: &[u8]) -> Vec<u8> {
        with_chunk(vec![OP_TEXT], template)
    }
    /// `prefix_of`: the request whose id starts the frame, or `None` for raw bytes only.
    pub fn binary(prefix_of: Option<u8>, bytes: &[u8]) -> Vec<u8> {
        let p = prefix_of.map_or(1, |k| k.wrapping_mul(2));
        with_chunk(vec![OP_BINARY, p], bytes)
    }
    pub fn echo_text(k: u8, payload: &[u8]) -> Vec<u8> {
        with_chunk(vec![OP_ECHO_TEXT, k], payload)
    }
    pub fn echo_binary(k: u8, payload: &[u8]) -> Vec<u8> {
        with_chunk(vec![OP_ECHO_BINARY, k], payload)
    }
    pub fn clear() -> Vec<u8> {
        vec![OP_CLEAR]
    }
    /// A text template with request `k`'s id in the form `marker` at each `@`.
    pub fn template(text: &str, marker: u8, k: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for b in text.bytes() {
            if b == b'@' {
                out.extend_from_slice(&[marker, k]);
            } else {
                out.push(b);
            }
        }
        out
    }

    fn with_chunk(mut head: Vec<u8>, bytes: &[u8]) -> Vec<u8> {
        let len = u16::try_from(bytes.len()).expect("a chunk fits in 64 KiB");
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(bytes);
        head
    }
}

/// Runs one input's operations against a fresh correlator; `Err` says which operation broke what.
pub fn run(data: &[u8]) -> Result<(), String> {
    let correlator = Correlator::default();
    let mut requests: Vec<Request> = Vec::new();
    let mut input = Input(data);
    let mut step = 0usize;
    while let Some(op) = input.byte() {
        step += 1;
        let fail = |what: String| format!("operation {step} ({}): {what}", op_name(op));
        match op % OPS {
            OP_REGISTER => {
                if requests.len() < MAX_REQUESTS {
                    let (id, rx) = correlator.register();
                    if requests.iter().any(|r| r.id == id) {
                        return Err(fail(format!("register returned a used id {id}")));
                    }
                    requests.push(Request {
                        id,
                        rx,
                        state: State::Pending,
                    });
                }
            }
            OP_CANCEL => {
                let k = usize::from(input.byte().unwrap_or(0));
                match requests.get_mut(k) {
                    Some(request) => {
                        correlator.cancel(&request.id);
                        if request.state == State::Pending {
                            request.state = State::Dropped;
                        }
                    }
                    None => correlator.cancel(&Uuid::new_v4()),
                }
            }
            OP_TEXT => {
                let template = input.chunk();
                let frame = render(template, &requests);
                let expected = pending_index(&requests, text_id(&frame).as_deref());
                let matched = correlator.match_text(&frame);
                settle(&mut requests, matched, expected, frame.as_bytes())
                    .map_err(|e| fail(format!("text frame {}: {e}", shown(frame.as_bytes()))))?;
            }
            OP_BINARY => {
                let p = input.byte().unwrap_or(1);
                let bytes = input.chunk();
                let mut frame = Vec::with_capacity(16 + bytes.len());
                if p % 2 == 0 && !requests.is_empty() {
                    let k = usize::from(p / 2) % requests.len();
                    frame.extend_from_slice(requests[k].id.as_bytes());
                }
                frame.extend_from_slice(bytes);
                let expected = frame
                    .get(..16)
                    .and_then(|prefix| Uuid::from_slice(prefix).ok())
                    .and_then(|id| requests.iter().position(|r| r.id == id))
                    .filter(|&k| requests[k].state == State::Pending);
                let frame = Bytes::from(frame);
                let matched = correlator.match_binary(&frame);
                let response = frame.get(16..).unwrap_or_default();
                settle(&mut requests, matched, expected, response)
                    .map_err(|e| fail(format!("binary frame {}: {e}", shown(&frame))))?;
            }
            OP_ECHO_TEXT | OP_ECHO_BINARY => {
                let k = input.byte().unwrap_or(0);
                let payload = input.chunk();
                if requests.is_empty() {
                    continue;
                }
                let k = usize::from(k) % requests.len();
                let id = requests[k].id;
                let expected = (requests[k].state == State::Pending).then_some(k);
                if op % OPS == OP_ECHO_TEXT {
                    let wrapped = wrap(id, payload, true);
                    let Ok(frame) = std::str::from_utf8(&wrapped) else {
                        return Err(fail(format!(
                            "wrap of {} is not UTF-8, so it cannot travel as a text frame",
                            shown(payload)
                        )));
                    };
                    if text_id(frame).as_deref() != Some(id.hyphenated().to_string().as_str()) {
                        return Err(fail(format!(
                            "wrap of {} does not carry its id at the top level: {}",
                            shown(payload),
                            shown(&wrapped)
                        )));
                    }
                    let matched = correlator.match_text(frame);
                    settle(&mut requests, matched, expected, &wrapped).map_err(|e| {
                        fail(format!("echo of request {k}'s {}: {e}", shown(&wrapped)))
                    })?;
                } else {
                    let wrapped = wrap(id, payload, false);
                    if wrapped.get(..16) != Some(id.as_bytes().as_slice())
                        || &wrapped[16..] != payload
                    {
                        return Err(fail(format!(
                            "binary wrap of {} is not id + payload",
                            shown(payload)
                        )));
                    }
                    let matched = correlator.match_binary(&wrapped);
                    settle(&mut requests, matched, expected, payload).map_err(|e| {
                        fail(format!(
                            "binary echo of request {k}'s {}: {e}",
                            shown(payload)
                        ))
                    })?;
                }
            }
            _ => {
                correlator.clear();
                for request in &mut requests {
                    if request.state == State::Pending {
                        request.state = State::Dropped;
                    }
                }
            }
        }
        verify(&correlator, &mut requests).map_err(fail)?;
    }
    Ok(())
}

fn op_name(op: u8) -> &'static str {
    match op % OPS {
        OP_REGISTER => "register",
        OP_CANCEL => "cancel",
        OP_TEXT => "text frame",
        OP_BINARY => "binary frame",
        OP_ECHO_TEXT => "text echo",
        OP_ECHO_BINARY => "binary echo",
        _ => "clear",
    }
}

/// Checks one match result against the model and, if it matched, the waiter's bytes.
fn settle(
    requests: &mut [Request],
    matched: bool,
    expected: Option<usize>,
    response: &[u8],
) -> Result<(), String> {
    match (matched, expected) {
        (false, None) => Ok(()),
        (true, None) => Err("matched, but it answers no pending request".into()),
        (false, Some(k)) => Err(format!(
            "not matched, but it answers pending request {k} ({})",
            requests[k].id
        )),
        (true, Some(k)) => {
            let request = &mut requests[k];
            request.state = State::Answered;
            match request.rx.try_recv() {
                Ok(got) if got == response => Ok(()),
                Ok(got) => Err(format!(
                    "request {k} received {}, expected {}",
                    shown(&got),
                    shown(response)
                )),
                Err(e) => Err(format!("request {k} received nothing: {e}")),
            }
        }
    }
}

/// After every operation: `pending()` agrees with the model, and every waiter is where it should be.
fn verify(correlator: &Correlator, requests: &mut [Request]) -> Result<(), String> {
    let pending = requests
        .iter()
        .filter(|r| r.state == State::Pending)
        .count();
    if correlator.pending() != pending {
        return Err(format!(
            "pending() is {}, but {pending} requests wait",
            correlator.pending()
        ));
    }
    for (k, request) in requests.iter_mut().enumerate() {
        let got = request.rx.try_recv();
        let ok = match request.state {
            State::Pending => got == Err(TryRecvError::Empty),
            State::Answered | State::Dropped => got == Err(TryRecvError::Closed),
        };
        if !ok {
            return Err(format!(
                "request {k} ({:?}) saw {:?}",
                request.state,
                got.map(|b| shown(&b))
            ));
        }
    }
    Ok(())
}

/// The first request that is pending and whose id, as sent, is `id`.
fn pending_index(requests: &[Request], id: Option<&str>) -> Option<usize> {
    let id = id?;
    requests
        .iter()
        .position(|r| r.state == State::Pending && r.id.hyphenated().to_string() == id)
}

/// A text frame from a template: markers become request ids, then bytes become UTF-8 (lossily, as
/// a text frame can only carry UTF-8).
fn render(template: &[u8], requests: &[Request]) -> String {
    let mut out = Vec::with_capacity(template.len() + 64);
    let mut bytes = template.iter().copied();
    while let Some(b) = bytes.next() {
        if !(ID_AS_SENT..=ID_ESCAPED).contains(&b) {
            out.push(b);
            continue;
        }
        let k = bytes.next().unwrap_or(0);
        let id = match requests.len() {
            0 => Uuid::nil(),
            n => requests[usize::from(k) % n].id,
        };
        let text = match b {
            ID_AS_SENT => id.hyphenated().to_string(),
            ID_UPPERCASE => id.hyphenated().to_string().to_uppercase(),
            ID_SIMPLE => id.simple().to_string(),
            ID_BRACED => id.braced().to_string(),
            _ => id
                .hyphenated()
                .to_string()
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect(),
        };
        out.extend_from_slice(text.as_bytes());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The frame's top-level `"id"`: `Some` only for a JSON object with exactly one `"id"` key (after
/// unescaping) whose value is a string. A frame with two `"id"`s names no request.
pub fn text_id(frame: &str) -> Option<String> {
    struct TopLevel(Vec<Option<String>>);
    impl<'de> Deserialize<'de> for TopLevel {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = TopLevel;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                    let mut ids = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        if key == "id" {
                            let value: Value = map.next_value()?;
                            ids.push(value.as_str().map(str::to_owned));
                        } else {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    Ok(TopLevel(ids))
                }
            }
            d.deserialize_map(V)
        }
    }
    let TopLevel(ids) = serde_json::from_str(frame).ok()?;
    match ids.as_slice() {
        [Some(id)] => Some(id.clone()),
        _ => None,
    }
}

fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 160;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{text:?}… ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}
