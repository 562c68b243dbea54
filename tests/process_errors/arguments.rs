//! Bad arguments and bad buffers: null pointers, bad lengths, bytes that are no FlatBuffer.

use std::ptr;

use crate::support::{Event, Reply};
use serde_json::json;

use super::common::{
    assert_error, assert_error_envelope, assert_logged, call_bytes, event, ok, plugin, Host, WARN,
};

const NOT_A_FLATBUFFER: &str = "the input is not a valid CloudEvent FlatBuffer: ";

/// xorshift64*: a small deterministic generator for the random-input test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn null_host_returns_null_argument_and_no_reply() {
    let buf = event(json!({"command":"list"}), "c");
    let (rc, out) = plugin().call_raw(ptr::null(), buf.as_ptr(), buf.len() as i32);
    assert_eq!(rc, controller::VIRTUFIN_ERR_NULL_ARGUMENT);
    assert_eq!(rc, 1);
    assert!(out.is_none(), "a reply for a NULL host");
}

#[test]
fn null_out_buf_or_out_len_returns_null_argument_without_calling_the_host() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let buf = event(json!({"command":"list"}), "c");
    let mut out: *mut u8 = ptr::null_mut();
    let mut out_len: i32 = -7;
    // SAFETY: valid host and input; the out-pointers are NULL or our locals.
    let (rc_no_buf, rc_no_len, rc_neither) = unsafe {
        (
            (plugin().process)(
                host.table(),
                buf.as_ptr(),
                buf.len() as i32,
                ptr::null_mut(),
                &mut out_len,
            ),
            (plugin().process)(
                host.table(),
                buf.as_ptr(),
                buf.len() as i32,
                &mut out,
                ptr::null_mut(),
            ),
            (plugin().process)(
                host.table(),
                buf.as_ptr(),
                buf.len() as i32,
                ptr::null_mut(),
                ptr::null_mut(),
            ),
        )
    };
    assert_eq!(rc_no_buf, 1);
    assert_eq!(rc_no_len, 1);
    assert_eq!(rc_neither, 1);
    assert!(out.is_null(), "out_buf set although out_len was NULL");
    assert!(
        host.calls().is_empty(),
        "the command ran: {:?}",
        host.calls()
    );
    assert!(host.logs().is_empty());
}

#[test]
fn null_out_buf_still_resets_a_non_null_out_len() {
    // SPEC 1: a non-zero return means `*out_buf = NULL, *out_len = 0`; the header says the
    // out-pointers are reset "when non-NULL themselves".
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    let mut out_len: i32 = -7;
    // SAFETY: valid host and input; out_buf NULL on purpose.
    let rc = unsafe {
        (plugin().process)(
            host.table(),
            buf.as_ptr(),
            buf.len() as i32,
            ptr::null_mut(),
            &mut out_len,
        )
    };
    assert_eq!(rc, 1);
    assert_eq!(out_len, 0, "*out_len not reset on a non-zero return");
}

#[test]
fn null_out_len_still_resets_a_non_null_out_buf() {
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    let mut sentinel = 0u8;
    let mut out: *mut u8 = &mut sentinel;
    // SAFETY: valid host and input; out_len NULL on purpose.
    let rc = unsafe {
        (plugin().process)(
            host.table(),
            buf.as_ptr(),
            buf.len() as i32,
            &mut out,
            ptr::null_mut(),
        )
    };
    assert_eq!(rc, 1);
    assert!(out.is_null(), "*out_buf not reset on a non-zero return");
}

#[test]
fn in_len_zero_gets_a_bad_request_reply() {
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    for in_buf in [buf.as_ptr(), ptr::null()] {
        let (rc, out) = plugin().call_raw(host.table(), in_buf, 0);
        assert_eq!(rc, 0);
        let reply = Reply::parse(&out.expect("reply"));
        assert_error(
            &reply,
            "error",
            "BAD_REQUEST",
            "the input buffer is empty (in_len 0)",
            None,
        );
    }
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", None, "BAD_REQUEST");
}

#[test]
fn negative_in_len_gets_a_bad_request_reply() {
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    for len in [-1, -100, i32::MIN] {
        let (rc, out) = plugin().call_raw(host.table(), buf.as_ptr(), len);
        assert_eq!(rc, 0);
        let reply = Reply::parse(&out.expect("reply"));
        assert_error(
            &reply,
            "error",
            "BAD_REQUEST",
            &format!("in_len is negative ({len})"),
            None,
        );
    }
    assert!(host.calls().is_empty());
}

#[test]
fn null_in_buf_with_a_length_gets_a_bad_request_reply() {
    let host = Host::new();
    let (rc, out) = plugin().call_raw(host.table(), ptr::null(), 16);
    assert_eq!(rc, 0);
    let reply = Reply::parse(&out.expect("reply"));
    assert_error(
        &reply,
        "error",
        "BAD_REQUEST",
        "in_buf is NULL but in_len is 16",
        None,
    );
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", None, "BAD_REQUEST");
}

#[test]
fn truncated_buffers_get_a_bad_request_reply() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let full = Event::json(&json!({"command":"list"}))
        .ext("correlationid", "corr-t")
        .subject("subj")
        .encode();
    let whole = call_bytes(&host, &full);
    assert!(whole.success());
    host.take_calls();
    let mut refused = 0;
    for len in 1..full.len() {
        let reply = call_bytes(&host, &full[..len]);
        if reply.success() {
            // Only trailing alignment padding may be cut without losing anything.
            assert!(
                full.len() - len < 8,
                "a {len}-byte prefix of {} was accepted",
                full.len()
            );
            assert_eq!(reply.data, whole.data);
            assert_eq!(reply.extensions, whole.extensions);
            continue;
        }
        refused += 1;
        assert_eq!(reply.data["command"], "error", "prefix {len}");
        assert_eq!(reply.code(), "BAD_REQUEST", "prefix {len}");
        assert!(
            reply.message().starts_with(NOT_A_FLATBUFFER),
            "prefix {len}: {}",
            reply.message()
        );
        assert_error_envelope(&reply, None);
    }
    assert!(
        refused >= full.len() - 8,
        "only {refused} of {} prefixes refused",
        full.len()
    );
    let listed = host.calls().len();
    assert!(listed < 8, "{listed} truncated buffers reached the gateway");
}

#[test]
fn garbage_bytes_get_a_bad_request_reply() {
    let host = Host::new();
    for garbage in [
        &b"hello, this is not a flatbuffer at all"[..],
        &[0xff; 4][..],
        &[0xff; 64][..],
        &[0x00][..],
        &[0x04, 0, 0, 0][..],
        &br#"{"command":"list"}"#[..],
    ] {
        let reply = call_bytes(&host, garbage);
        assert_eq!(reply.data["command"], "error", "{garbage:?}");
        assert_eq!(reply.code(), "BAD_REQUEST", "{garbage:?}");
        assert!(
            reply.message().starts_with(NOT_A_FLATBUFFER),
            "{garbage:?}: {}",
            reply.message()
        );
        assert_error_envelope(&reply, None);
    }
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", None, "BAD_REQUEST");
}

#[test]
fn random_bytes_get_a_bad_request_reply() {
    let host = Host::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let len = 1 + (rng.next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let reply = call_bytes(&host, &bytes);
        assert_eq!(reply.data["command"], "error", "#{i} {bytes:02x?}");
        assert_eq!(reply.code(), "BAD_REQUEST", "#{i} {bytes:02x?}");
        assert!(
            reply.message().starts_with(NOT_A_FLATBUFFER)
                || reply.message().starts_with("Failed to parse command JSON"),
            "#{i}: {}",
            reply.message()
        );
        assert_error_envelope(&reply, None);
    }
    assert!(host.calls().is_empty());
}
