//! A command's outcome → the reply event's `data` JSON, written field by field because it runs on
//! every call; the one place that fixes the reply's field names and order.

use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ReplyError;

/// A successful command's reply fields after `command` and `success`, in reply order.
pub type Extras = Vec<(&'static str, Extra)>;

/// One reply field's value: a JSON value, or JSON already serialized from a typed response (`list`
/// rows go straight from WSM's response structs to the reply without a `Value` tree).
#[derive(Debug, Clone)]
pub enum Extra {
    Value(Value),
    Raw(Box<RawValue>),
}

impl<T: Into<Value>> From<T> for Extra {
    fn from(value: T) -> Self {
        Extra::Value(value.into())
    }
}

impl serde::Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Extra::Value(v) => v.serialize(serializer),
            Extra::Raw(raw) => raw.serialize(serializer),
        }
    }
}

/// The outcome of one command: the name to report and either the success extras or the error.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The canonical command name, or `"error"` when the event named no command we know.
    pub command: &'static str,
    pub outcome: Result<Extras, ReplyError>,
}

impl Reply {
    pub fn error(command: &'static str, error: ReplyError) -> Self {
        Reply {
            command,
            outcome: Err(error),
        }
    }

    /// The reply event's `data`: `{"command","success",...extras}` or
    /// `{"command","success":false,"code","message"}`. Written field by field (no intermediate map)
    /// because this runs on every call.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"command\":");
        push_json(&mut out, self.command);
        match &self.outcome {
            Ok(extras) => {
                out.extend_from_slice(b",\"success\":true");
                for (key, value) in extras {
                    out.push(b',');
                    push_json(&mut out, key);
                    out.push(b':');
                    push_json(&mut out, value);
                }
            }
            Err(e) => {
                out.extend_from_slice(b",\"success\":false,\"code\":");
                push_json(&mut out, e.code.as_ref());
                out.extend_from_slice(b",\"message\":");
                push_json(&mut out, &e.message);
            }
        }
        out.push(b'}');
        out
    }
}

/// Appends `value` as JSON. Strings and `Value`s serialize infallibly into a `Vec`.
fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}
