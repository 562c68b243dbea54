//! CloudEvent in, WorkerResponse out: the only module that touches FlatBuffers. Input goes through
//! the verifier first, so a malformed buffer becomes an error value, never an out-of-bounds read.

use std::cell::RefCell;

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, VerifierOptions, WIPOffset};

use crate::generated::{
    CloudEvent, CloudEventArgs, Extension, ExtensionArgs, WorkerResponse, WorkerResponseArgs,
};

/// Extension carrying the caller's correlation id; copied to the reply, never invented.
pub const EXT_CORRELATION_ID: &str = "correlationid";
/// Worker config: overrides the reply's `type` (and so the topic WorkManager publishes it to).
pub const EXT_RESPONSE_TYPE: &str = "response_type";
/// Worker config: `base` restricts WSM requests to the base proto's fields.
pub const EXT_WSM_COMPAT: &str = "wsm_compat";

/// What the plugin reads from a command event, borrowed from the input buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InboundEvent<'a> {
    pub subject: Option<&'a str>,
    pub data: &'a [u8],
    pub correlation_id: Option<&'a str>,
    pub response_type: Option<&'a str>,
    pub wsm_compat: Option<&'a str>,
}

/// Decodes and verifies a root `CloudEvent` (no size prefix).
pub fn decode(buf: &[u8]) -> Result<InboundEvent<'_>, InvalidFlatbuffer> {
    let opts = VerifierOptions {
        // A command event is a handful of strings and one payload; deeper nesting is garbage.
        max_depth: 16,
        ..VerifierOptions::default()
    };
    let event = flatbuffers::root_with_opts::<CloudEvent>(&opts, buf)?;
    let mut inbound = InboundEvent {
        subject: event.subject(),
        data: event.data().map(|d| d.bytes()).unwrap_or_default(),
        ..InboundEvent::default()
    };
    for ext in event.extensions().into_iter().flatten() {
        let (Some(name), Some(value)) = (ext.name(), ext.value()) else {
            continue;
        };
        // First occurrence wins; WorkManager puts correlationid first.
        let slot = if name.eq_ignore_ascii_case(EXT_CORRELATION_ID) {
            &mut inbound.correlation_id
        } else if name.eq_ignore_ascii_case(EXT_RESPONSE_TYPE) {
            &mut inbound.response_type
        } else if name.eq_ignore_ascii_case(EXT_WSM_COMPAT) {
            &mut inbound.wsm_compat
        } else {
            continue;
        };
        slot.get_or_insert(value);
    }
    Ok(inbound)
}

/// The reply event's envelope fields; `data` is the reply JSON.
#[derive(Debug, Clone, Copy)]
pub struct OutboundEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub subject: Option<&'a str>,
    pub time: &'a str,
    pub data: &'a [u8],
    pub correlation_id: Option<&'a str>,
    /// Set only for failures WorkManager should surface as `worker.error` besides the reply.
    pub error_message: Option<&'a str>,
}

thread_local! {
    // Reused per thread: the builder's buffer survives calls, so encoding does not allocate.
    static BUILDER: RefCell<FlatBufferBuilder<'static>> =
        RefCell::new(FlatBufferBuilder::with_capacity(1024));
}

/// Encodes a root `WorkerResponse` and hands its bytes to `sink` (which copies them out).
pub fn encode_response<R>(event: &OutboundEvent<'_>, sink: impl FnOnce(&[u8]) -> R) -> R {
    BUILDER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut fbb) => {
            fbb.reset();
            sink(build(&mut fbb, event))
        }
        // Only reachable if `sink` re-entered us on this thread; a fresh builder keeps it correct.
        Err(_) => sink(build(&mut FlatBufferBuilder::new(), event)),
    })
}

fn build<'b>(fbb: &'b mut FlatBufferBuilder<'static>, e: &OutboundEvent<'_>) -> &'b [u8] {
    let id = fbb.create_string(e.id);
    let event_type = fbb.create_string(e.event_type);
    let source = fbb.create_string(e.source);
    let specversion = fbb.create_string("1.0");
    let datacontenttype = fbb.create_string("application/json");
    let subject = e.subject.map(|s| fbb.create_string(s));
    let time = fbb.create_string(e.time);
    let data = fbb.create_vector(e.data);
    let extensions = e.correlation_id.map(|cid| {
        let name = fbb.create_string(EXT_CORRELATION_ID);
        let value = fbb.create_string(cid);
        let ext = Extension::create(
            fbb,
            &ExtensionArgs {
                name: Some(name),
                value: Some(value),
            },
        );
        fbb.create_vector(&[ext])
    });
    let result_event: WIPOffset<CloudEvent> = CloudEvent::create(
        fbb,
        &CloudEventArgs {
            id: Some(id),
            type_: Some(event_type),
            source: Some(source),
            specversion: Some(specversion),
            datacontenttype: Some(datacontenttype),
            dataschema: None,
            subject,
            time: Some(time),
            data: Some(data),
            extensions,
        },
    );
    let error_message = e.error_message.map(|m| fbb.create_string(m));
    let response = WorkerResponse::create(
        fbb,
        &WorkerResponseArgs {
            result_event: Some(result_event),
            error_message,
        },
    );
    fbb.finish_minimal(response);
    fbb.finished_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_bytes(exts: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let exts: Vec<_> = exts
            .iter()
            .map(|(n, v)| {
                let args = ExtensionArgs {
                    name: Some(fbb.create_string(n)),
                    value: Some(fbb.create_string(v)),
                };
                Extension::create(&mut fbb, &args)
            })
            .collect();
        let args = CloudEventArgs {
            subject: Some(fbb.create_string("subj")),
            data: Some(fbb.create_vector(data)),
            extensions: Some(fbb.create_vector(&exts)),
            ..CloudEventArgs::default()
        };
        let root = CloudEvent::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    #[test]
    fn decode_reads_subject_data_and_known_extensions_first_wins() {
        let buf = event_bytes(
            &[
                ("correlationid", "c-1"),
                ("other", "x"),
                ("Response_Type", "custom.type"),
                ("correlationid", "c-2"),
                ("wsm_compat", "base"),
            ],
            b"{}",
        );
        let e = decode(&buf).expect("valid event");
        assert_eq!(e.subject, Some("subj"));
        assert_eq!(e.data, b"{}");
        assert_eq!(e.correlation_id, Some("c-1"));
        assert_eq!(e.response_type, Some("custom.type"));
        assert_eq!(e.wsm_compat, Some("base"));
    }

    #[test]
    fn decode_never_misreads_a_truncated_buffer() {
        let buf = event_bytes(&[("correlationid", "c-1")], b"{\"command\":\"list\"}");
        let whole = decode(&buf).expect("valid event");
        // Only trailing alignment padding may be cut without losing data; anything more is refused.
        for len in 0..buf.len() {
            if let Ok(event) = decode(&buf[..len]) {
                assert_eq!(event, whole, "prefix of {len} bytes misread");
                assert!(buf.len() - len < 8, "prefix of {len} bytes accepted");
            }
        }
    }

    #[test]
    fn encoded_response_round_trips() {
        let out = OutboundEvent {
            id: "id-1",
            event_type: "response.x",
            source: "urn:x",
            subject: Some("s"),
            time: "2026-01-01T00:00:00Z",
            data: b"{\"ok\":true}",
            correlation_id: Some("c-9"),
            error_message: None,
        };
        let bytes = encode_response(&out, <[u8]>::to_vec);
        let resp = flatbuffers::root::<WorkerResponse>(&bytes).expect("valid response");
        let ev = resp.result_event().expect("result event");
        assert_eq!(ev.id(), Some("id-1"));
        assert_eq!(ev.type_(), Some("response.x"));
        assert_eq!(ev.specversion(), Some("1.0"));
        assert_eq!(ev.datacontenttype(), Some("application/json"));
        assert_eq!(ev.subject(), Some("s"));
        assert_eq!(ev.data().map(|d| d.bytes()), Some(&b"{\"ok\":true}"[..]));
        let ext = ev.extensions().expect("extensions").get(0);
        assert_eq!(
            (ext.name(), ext.value()),
            (Some("correlationid"), Some("c-9"))
        );
        assert_eq!(resp.error_message(), None);
    }
}
