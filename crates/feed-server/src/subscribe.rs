//! Binance-style stream subscriptions: `{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[...],"id":N}`
//! answered with `{"result":null,"id":N}`, plus `LIST_SUBSCRIPTIONS`. The id is echoed verbatim.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct MethodCall {
    method: String,
    #[serde(default)]
    params: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<Box<RawValue>>,
}

/// The streams one connection has subscribed to, in subscription order, without duplicates.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    names: Vec<String>,
}

/// The outcome of one method call.
pub(crate) struct Answer {
    /// The reply text frame.
    pub reply: String,
    /// Whether the subscription list changed.
    pub changed: bool,
}

impl Subscriptions {
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Handles `text` if it is a method call (a JSON object with a string `method`);
    /// `None` for every other message.
    pub(crate) fn handle(&mut self, text: &str) -> Option<Answer> {
        // serde would also read a struct from a JSON array; only objects are method calls.
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let call: MethodCall = serde_json::from_str(text).ok()?;
        let id = call.id.as_deref().map_or("null", RawValue::get);
        let method = call.method.to_ascii_uppercase();
        let error = |msg: &str| Answer {
            reply: format!(
                "{{\"error\":{{\"code\":2,\"msg\":{}}},\"id\":{id}}}",
                serde_json::Value::from(msg)
            ),
            changed: false,
        };
        let names = match (method.as_str(), &call.params) {
            ("LIST_SUBSCRIPTIONS", _) => {
                let list = serde_json::Value::from(self.names.clone());
                return Some(Answer {
                    reply: format!("{{\"result\":{list},\"id\":{id}}}"),
                    changed: false,
                });
            }
            ("SUBSCRIBE" | "UNSUBSCRIBE", Some(serde_json::Value::Array(items))) => {
                let names: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
                match names {
                    Some(names) => names,
                    None => return Some(error("Invalid request: params must be stream names")),
                }
            }
            ("SUBSCRIBE" | "UNSUBSCRIBE", _) => {
                return Some(error(
                    "Invalid request: params must be a list of stream names",
                ))
            }
            _ => {
                return Some(error(&format!(
                    "Invalid request: unknown method {}",
                    call.method
                )))
            }
        };
        let before = self.names.len();
        if method == "SUBSCRIBE" {
            for name in names {
                if !self.names.iter().any(|n| n == name) {
                    self.names.push(name.to_owned());
                }
            }
        } else {
            self.names.retain(|n| !names.contains(&n.as_str()));
        }
        Some(Answer {
            reply: format!("{{\"result\":null,\"id\":{id}}}"),
            changed: self.names.len() != before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_and_unsubscribe_track_names_and_echo_the_id() {
        let mut subs = Subscriptions::default();
        let a = subs
            .handle(r#"{"method":"SUBSCRIBE","params":["a@depth","b@depth","a@depth"],"id":7}"#)
            .unwrap();
        assert_eq!(a.reply, r#"{"result":null,"id":7}"#);
        assert!(a.changed);
        assert_eq!(subs.names(), ["a@depth", "b@depth"]);
        let a = subs
            .handle(r#"{"method":"unsubscribe","params":["a@depth"],"id":"x"}"#)
            .unwrap();
        assert_eq!(a.reply, r#"{"result":null,"id":"x"}"#);
        assert_eq!(subs.names(), ["b@depth"]);
        let a = subs
            .handle(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#)
            .unwrap();
        assert_eq!(a.reply, r#"{"result":["b@depth"],"id":3}"#);
    }

    #[test]
    fn bad_calls_get_an_error_and_other_messages_are_ignored() {
        let mut subs = Subscriptions::default();
        let a = subs
            .handle(r#"{"method":"SUBSCRIBE","params":[1],"id":1}"#)
            .unwrap();
        assert!(a.reply.starts_with(r#"{"error":{"code":2,"#), "{}", a.reply);
        assert!(subs
            .handle(r#"{"method":"NOPE","id":2}"#)
            .unwrap()
            .reply
            .contains("NOPE"));
        assert!(subs.handle(r#"{"id":"u","payload":1}"#).is_none());
        assert!(subs.handle("garbage").is_none());
        assert!(subs.handle(r#"["SUBSCRIBE",["a"],1]"#).is_none());
        assert!(subs.names().is_empty());
    }
}
