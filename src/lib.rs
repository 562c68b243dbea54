//! `libcontroller`: the WebSocket Manager controller, a WorkManager NativeDllEngine worker (ABI v1).
//!
//! WorkManager `dlopen`s this library and calls [`Process`] for every command event on
//! `command.websocketmanagercontroller`; each command becomes calls of `virtufin.WebSocketManager`
//! through the host's `gateway_call`, and the reply is a `response.websocketmanagercontroller` event.
//! This file holds the two exports and nothing more: pointer checks, the panic barrier, and the
//! `malloc`'d result. Layers: [`abi`] (host table) → [`worker`] (one call) → [`commands`] (command
//! rules) → [`gateway`] (WSM calls); [`event`] is the FlatBuffers codec.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod clock;
pub mod commands;
pub mod error;
pub mod event;
pub mod gateway;
/// cbindgen:ignore
#[doc(hidden)]
pub mod generated;
pub mod state;
pub mod worker;

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

pub use abi::{
    VirtufinHost, VIRTUFIN_ABI_VERSION, VIRTUFIN_ERR_ALLOCATION, VIRTUFIN_ERR_INTERNAL,
    VIRTUFIN_ERR_NULL_ARGUMENT, VIRTUFIN_OK,
};

/// Handles one command CloudEvent and returns the reply.
///
/// - `host`: the worker's callback table, borrowed for this call. NULL → `VIRTUFIN_ERR_NULL_ARGUMENT`.
/// - `in_buf`/`in_len`: a FlatBuffer `CloudEvent` (root, no size prefix), borrowed for this call.
///   A NULL, empty or malformed buffer still gets an error reply (`BAD_REQUEST`).
/// - `out_buf`/`out_len`: on `VIRTUFIN_OK`, a `WorkerResponse` FlatBuffer allocated with `malloc`,
///   owned by the caller, released with `FreeResult` exactly once. On any other return they are
///   set to NULL/0 (when non-NULL themselves).
///
/// Returns `VIRTUFIN_OK` whenever a reply was built, including every error reply; non-zero only
/// when no reply can be returned at all. Thread-safe and re-entrant; never unwinds.
///
/// # Safety
/// Each non-NULL pointer must be valid as described above for the duration of the call.
#[allow(non_snake_case)]
#[no_mangle]
pub unsafe extern "C" fn Process(
    host: *const VirtufinHost,
    in_buf: *const u8,
    in_len: i32,
    out_buf: *mut *mut u8,
    out_len: *mut i32,
) -> i32 {
    // Reset whichever out-pointer exists first, so that every non-OK return leaves NULL/0 behind.
    // SAFETY: each is written only when non-NULL, and the caller guarantees it is then writable.
    unsafe {
        if !out_buf.is_null() {
            *out_buf = ptr::null_mut();
        }
        if !out_len.is_null() {
            *out_len = 0;
        }
    }
    if out_buf.is_null() || out_len.is_null() {
        return VIRTUFIN_ERR_NULL_ARGUMENT;
    }
    // SAFETY: the caller guarantees a non-NULL host is a valid table for this call.
    let Some(host) = (unsafe { abi::Host::from_raw(host) }) else {
        return VIRTUFIN_ERR_NULL_ARGUMENT;
    };
    let input = match usize::try_from(in_len) {
        Err(_) => Err(format!("in_len is negative ({in_len})")),
        Ok(0) => Err("the input buffer is empty (in_len 0)".to_owned()),
        Ok(_) if in_buf.is_null() => Err(format!("in_buf is NULL but in_len is {in_len}")),
        // SAFETY: the caller guarantees `in_buf` holds `in_len` readable bytes for this call.
        Ok(len) => Ok(unsafe { std::slice::from_raw_parts(in_buf, len) }),
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        worker::process(host, input.clone(), copy_to_malloc)
    }))
    .or_else(|panic| {
        let what = panic_text(panic.as_ref());
        catch_unwind(AssertUnwindSafe(|| {
            worker::panic_reply(host, input, &what, copy_to_malloc)
        }))
    });
    match result {
        Ok(Ok((buf, len))) => {
            // SAFETY: checked non-NULL and writable above.
            unsafe {
                *out_buf = buf;
                *out_len = len;
            }
            VIRTUFIN_OK
        }
        Ok(Err(code)) => code,
        Err(_) => VIRTUFIN_ERR_INTERNAL,
    }
}

/// Releases a reply returned by [`Process`]. `result` must come from `Process` and be released once;
/// NULL is a no-op.
///
/// # Safety
/// `result` is NULL or a buffer returned by `Process` that has not been released yet.
#[allow(non_snake_case)]
#[no_mangle]
pub unsafe extern "C" fn FreeResult(result: *mut u8) {
    if !result.is_null() {
        // SAFETY: `result` was allocated by `copy_to_malloc` with libc's malloc and is freed once.
        unsafe { libc::free(result.cast()) }
    }
}

/// Copies the encoded reply into a `malloc`'d buffer the host owns (and frees with `FreeResult`).
fn copy_to_malloc(bytes: &[u8]) -> Result<(*mut u8, i32), i32> {
    let len = i32::try_from(bytes.len()).map_err(|_| VIRTUFIN_ERR_ALLOCATION)?;
    // SAFETY: plain allocation of a non-zero size (a WorkerResponse is never empty).
    let buf = unsafe { libc::malloc(bytes.len().max(1)) }.cast::<u8>();
    if buf.is_null() {
        return Err(VIRTUFIN_ERR_ALLOCATION);
    }
    // SAFETY: `buf` has room for `bytes.len()` bytes and does not overlap `bytes`.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
    Ok((buf, len))
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
