//! The C ABI v1 shared with WorkManager's NativeDllEngine: the host's callback table, the return codes
//! of `Process`, and [`Host`], the safe view of the callback table that the rest of the plugin uses.
//!
//! Naming follows the ABI: `Virtufin*` types are owned by the host, `VIRTUFIN_*` constants are part of
//! the contract, and every callback receives `engine_ptr` (never the struct itself) as its context.

use std::ffi::{c_char, c_void, CString};
use std::ptr;

use crate::gateway::{Transport, TransportFailure};

/// The only ABI version this plugin speaks. Any other `VirtufinHost::abi_version` gets an
/// `ABI_MISMATCH` reply and no gateway call.
pub const VIRTUFIN_ABI_VERSION: i32 = 1;

/// `Process` built a reply; `*out_buf` must be released with `FreeResult`.
pub const VIRTUFIN_OK: i32 = 0;
/// `host`, `out_buf` or `out_len` was NULL, so no reply could be built or returned.
pub const VIRTUFIN_ERR_NULL_ARGUMENT: i32 = 1;
/// `malloc` failed for the reply buffer.
pub const VIRTUFIN_ERR_ALLOCATION: i32 = 2;
/// A bug in the plugin that even the error reply could not survive. Never expected; reported
/// instead of unwinding into the host.
pub const VIRTUFIN_ERR_INTERNAL: i32 = 3;

/// The callback table the host passes to every `Process` call. One table per worker instance; the
/// plugin keys per-worker state (the connections it created, for `stop`) by its address. Borrowed for
/// the duration of the call only.
#[repr(C)]
pub struct VirtufinHost {
    /// Opaque; passed back as `ctx` to every callback, never dereferenced.
    pub engine_ptr: *mut c_void,
    /// Must be `VIRTUFIN_ABI_VERSION` (1).
    pub abi_version: i32,
    /// Log sink. `level`: 0 trace, 1 debug, 2 info, 3 warn, 4 error. `msg` is NUL-terminated UTF-8,
    /// borrowed for the duration of the call only. May be NULL (no logging).
    pub log: Option<unsafe extern "C" fn(ctx: *mut c_void, level: i32, msg: *const c_char)>,
    /// Calls `method` of `service` through the host's API gateway. `service`/`method` are
    /// NUL-terminated; `req` (proto3 JSON, `req_len` bytes, not NUL-terminated) is borrowed for the
    /// call. Returns 0 and a JSON body in `*resp`/`*resp_len`, or non-zero with `*resp` NULL or an
    /// error body (`{"code","message"}` from WSM, plain text otherwise). Every non-NULL `*resp` stays
    /// owned by the host and is handed back through `free_response` once the plugin has copied it.
    /// Called only from inside `Process`, on the calling thread.
    pub gateway_call: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            service: *const c_char,
            method: *const c_char,
            req: *const u8,
            req_len: i32,
            resp: *mut *mut u8,
            resp_len: *mut i32,
        ) -> i32,
    >,
    /// Releases a `*resp` buffer returned by `gateway_call`; called exactly once per non-NULL buffer.
    pub free_response: Option<unsafe extern "C" fn(ctx: *mut c_void, resp: *mut u8)>,
}

// The layout is the contract: 40 bytes on 64-bit targets, in exactly this order.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<VirtufinHost>() == 40);
    assert!(std::mem::align_of::<VirtufinHost>() == 8);
    assert!(std::mem::offset_of!(VirtufinHost, engine_ptr) == 0);
    assert!(std::mem::offset_of!(VirtufinHost, abi_version) == 8);
    assert!(std::mem::offset_of!(VirtufinHost, log) == 16);
    assert!(std::mem::offset_of!(VirtufinHost, gateway_call) == 24);
    assert!(std::mem::offset_of!(VirtufinHost, free_response) == 32);
};

/// Host log levels, as numbered by the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// A safe, borrowed view of the host's callback table for one `Process` call.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    raw: &'a VirtufinHost,
}

impl<'a> Host<'a> {
    /// # Safety
    /// `raw` must point to a valid `VirtufinHost` whose non-NULL callbacks follow the ABI, for `'a`.
    pub unsafe fn from_raw(raw: *const VirtufinHost) -> Option<Host<'a>> {
        // SAFETY: the caller guarantees validity for 'a; NULL is mapped to None.
        unsafe { raw.as_ref() }.map(|raw| Host { raw })
    }

    pub fn abi_version(&self) -> i32 {
        self.raw.abi_version
    }

    /// Identity of the worker instance: the table's address plus its engine handle, so that a freed
    /// table whose address is reused by another engine does not inherit the old worker's state.
    pub fn worker_key(&self) -> (usize, usize) {
        (
            self.raw as *const VirtufinHost as usize,
            self.raw.engine_ptr as usize,
        )
    }

    /// Logs through the host; silently a no-op when the host has no log callback.
    pub fn log(&self, level: LogLevel, msg: &str) {
        let Some(log) = self.raw.log else { return };
        let msg = c_string_lossy(msg);
        // SAFETY: `log` is the host's callback per the ABI; `msg` outlives the call.
        unsafe { log(self.raw.engine_ptr, level as i32, msg.as_ptr()) }
    }
}

impl Transport for Host<'_> {
    fn call(&self, service: &str, method: &str, body: &[u8]) -> Result<Vec<u8>, TransportFailure> {
        let Some(gateway_call) = self.raw.gateway_call else {
            return Err(TransportFailure::host(
                "the host provides no gateway_call callback",
            ));
        };
        let Ok(req_len) = i32::try_from(body.len()) else {
            return Err(TransportFailure::host(format!(
                "request body of {} bytes exceeds the ABI's 2 GiB limit",
                body.len()
            )));
        };
        let service = c_string_lossy(service);
        let method = c_string_lossy(method);
        let mut resp: *mut u8 = ptr::null_mut();
        let mut resp_len: i32 = 0;
        // SAFETY: `gateway_call` is the host's callback per the ABI; every pointer we pass is valid
        // for the duration of the call, and the out-pointers point to our locals.
        let status = unsafe {
            gateway_call(
                self.raw.engine_ptr,
                service.as_ptr(),
                method.as_ptr(),
                body.as_ptr(),
                req_len,
                &mut resp,
                &mut resp_len,
            )
        };
        let body = self.take_response(resp, resp_len);
        match (status, body) {
            (0, Ok(body)) => Ok(body.unwrap_or_default()),
            (0, Err(problem)) => Err(TransportFailure::host(problem)),
            (status, body) => Err(TransportFailure {
                status,
                body: body.ok().flatten(),
            }),
        }
    }
}

impl Host<'_> {
    /// Copies a `gateway_call` response out of host memory and hands the buffer back to the host.
    fn take_response(&self, resp: *mut u8, resp_len: i32) -> Result<Option<Vec<u8>>, String> {
        if resp.is_null() {
            return Ok(None);
        }
        let copied = match usize::try_from(resp_len) {
            // SAFETY: the host returned `resp` with `resp_len` readable bytes per the ABI.
            Ok(len) => Ok(Some(
                unsafe { std::slice::from_raw_parts(resp, len) }.to_vec(),
            )),
            Err(_) => Err(format!(
                "gateway_call returned a negative length {resp_len}"
            )),
        };
        match self.raw.free_response {
            // SAFETY: `resp` came from this host's gateway_call and is released exactly once.
            Some(free_response) => unsafe { free_response(self.raw.engine_ptr, resp) },
            None => self.log(
                LogLevel::Warn,
                "host provides no free_response callback; a gateway response buffer is leaked",
            ),
        }
        copied
    }
}

/// A C string from Rust text; interior NULs (which C would truncate at) become U+FFFD.
fn c_string_lossy(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| {
        let cleaned = s.replace('\0', "\u{FFFD}");
        CString::new(cleaned).unwrap_or_default()
    })
}
