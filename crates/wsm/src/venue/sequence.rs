//! Venue gaps (SPEC 9): with `sequence.prev`, each frame names the value of the frame before it
//! (Binance futures `pu`, HTX `prevSeqNum`); a frame whose prev is not the last value seen for its
//! key means the venue skipped something. Publishing goes on; the gap is announced and counted.

use std::collections::HashMap;

use serde_json::Value;

use super::options::SequenceRule;
use super::pointer::Pointer;

/// Keys (symbols, streams) tracked per leg; beyond this, new keys are not checked.
const MAX_KEYS: usize = 65_536;

pub(crate) struct Gaps {
    value: Pointer,
    key: Option<Pointer>,
    prev: Pointer,
    last: HashMap<String, Value>,
    full_warned: bool,
}

/// One gap: the last value seen for the key, and what the new frame says came before it.
#[derive(Debug, PartialEq)]
pub(crate) struct Gap {
    pub key: String,
    pub last: Value,
    pub prev: Value,
    pub value: Value,
}

impl Gaps {
    /// `None` without `prev` (nothing to check).
    pub(crate) fn new(rule: &SequenceRule) -> Option<Gaps> {
        let prev = Pointer::parse("sequence.prev", rule.prev.as_deref()?).ok()?;
        Some(Gaps {
            value: Pointer::parse("sequence.value", &rule.value).ok()?,
            key: rule
                .key
                .as_deref()
                .and_then(|k| Pointer::parse("sequence.key", k).ok()),
            prev,
            last: HashMap::new(),
            full_warned: false,
        })
    }

    /// Whether the frame's bytes may carry a sequence value at all (skips parsing the rest).
    pub(crate) fn may_match(&self, bytes: &[u8]) -> bool {
        self.value.may_match(bytes)
    }

    pub(crate) fn observe(&mut self, frame: &Value, connection: &str) -> Option<Gap> {
        let value = self.value.get(frame)?.clone();
        let key = match &self.key {
            Some(k) => match k.get(frame)? {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            None => String::new(),
        };
        let prev = self.prev.get(frame).cloned();
        let known = self.last.len();
        let gap = match (self.last.get_mut(&key), prev) {
            (Some(last), Some(prev)) => {
                let gap = (prev != *last).then(|| Gap {
                    key: key.clone(),
                    last: last.clone(),
                    prev,
                    value: value.clone(),
                });
                *last = value;
                gap
            }
            (Some(last), None) => {
                *last = value;
                None
            }
            (None, _) if known < MAX_KEYS => {
                self.last.insert(key, value);
                None
            }
            (None, _) => {
                if !self.full_warned {
                    self.full_warned = true;
                    tracing::warn!(connection, keys = MAX_KEYS, "venue gap detection tracks no more sequence keys on this connection; frames of further keys are published unchecked");
                }
                None
            }
        };
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prev_that_is_not_the_last_value_is_a_gap_per_key() {
        let rule = SequenceRule {
            value: "/u".into(),
            key: Some("/s".into()),
            prev: Some("/pu".into()),
        };
        let mut gaps = Gaps::new(&rule).unwrap();
        let f = |s: &str, pu: u64, u: u64| serde_json::json!({"s": s, "pu": pu, "u": u});
        assert_eq!(gaps.observe(&f("A", 0, 10), "c"), None);
        assert_eq!(gaps.observe(&f("B", 0, 50), "c"), None);
        assert_eq!(gaps.observe(&f("A", 10, 11), "c"), None);
        let gap = gaps.observe(&f("A", 13, 14), "c").unwrap();
        assert_eq!(
            (gap.key.as_str(), gap.last, gap.prev),
            ("A", 11.into(), 13.into())
        );
        assert_eq!(gaps.observe(&f("B", 50, 51), "c"), None);
        assert!(Gaps::new(&SequenceRule {
            value: "/u".into(),
            key: None,
            prev: None
        })
        .is_none());
    }
}
