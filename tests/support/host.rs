//! The one scripted C-ABI host that the plugin's tests, the `process` benchmark and the fuzz checks
//! all call the plugin through: the plugin's two exports (`dlopen`ed from the built library, or the
//! linked ones for the fuzz targets), a `VirtufinHost` table whose `gateway_call` answers from a
//! script (canned replies per method, or a closure), and every `malloc`'d gateway buffer accounted
//! for. Included with `#[path]` by tests/support/mod.rs, benches/process.rs (through it) and
//! fuzz/checks/process.rs, so it uses only what all three build with: `controller`, `libc` and
//! `serde_json`.
//!
//! Besides answering, the host checks the plugin's side of the ABI and records what is wrong instead
//! of panicking inside a callback: every callback must run inside a [`Plugin`] call on the calling
//! thread and get that table's `engine_ptr` as its context; log levels are 0-4 and messages UTF-8;
//! gateway requests have non-NULL names and out-pointers and a JSON body; `free_response` gets each
//! buffer back exactly once. [`ScriptedHost::problems`] lists what it found; dropping a host with
//! problems or unreturned buffers fails the test.
#![allow(dead_code)] // each includer uses a different part

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use controller::VirtufinHost;
use serde_json::Value;

pub type ProcessFn =
    unsafe extern "C" fn(*const VirtufinHost, *const u8, i32, *mut *mut u8, *mut i32) -> i32;
pub type FreeResultFn = unsafe extern "C" fn(*mut u8);

/// The plugin's shared library: `CONTROLLER_LIB` if set, else the one cargo built next to this test.
pub fn lib_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CONTROLLER_LIB") {
        return PathBuf::from(path);
    }
    // The test or bench binary is target/<profile>/deps/<name>; cargo writes the cdylib it was
    // built with into that deps folder (and, for `cargo build`/`test`, also into target/<profile>).
    let exe = std::env::current_exe().expect("current test executable");
    let deps = exe.parent().expect("target/<profile>/deps directory");
    let file = format!(
        "{}controller{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let candidates = [deps.join(&file), deps.join("..").join(&file)];
    candidates
        .iter()
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("built plugin not found at {candidates:?}"))
        .clone()
}

/// The plugin's two exports: from a `dlopen`ed library ([`Plugin::load`]) or the ones linked into
/// this binary ([`Plugin::linked`], what the fuzz targets instrument).
pub struct Plugin {
    /// The `dlopen` handle, closed on drop; `None` for the linked exports.
    lib: Option<*mut c_void>,
    pub process: ProcessFn,
    pub free_result: FreeResultFn,
}

// SAFETY: a dlopen handle may be used and closed from any thread; the rest are function pointers.
unsafe impl Send for Plugin {}
// SAFETY: as above; nothing in `Plugin` is mutated after loading.
unsafe impl Sync for Plugin {}

impl Plugin {
    /// `dlopen`s [`lib_path`].
    pub fn load() -> Plugin {
        Plugin::load_from(&lib_path())
    }

    pub fn load_from(path: &Path) -> Plugin {
        let name = CString::new(path.as_os_str().as_encoded_bytes()).expect("a path without NUL");
        // SAFETY: loading our own plugin, whose initialisers are trivial.
        let lib = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            panic!("dlopen {}: {}", path.display(), dl_error());
        }
        let symbol = |name: &CStr| {
            // SAFETY: `lib` is a live handle and `name` a NUL-terminated symbol name.
            let found = unsafe { libc::dlsym(lib, name.as_ptr()) };
            assert!(!found.is_null(), "{name:?} export: {}", dl_error());
            found
        };
        let (process, free_result) = (symbol(c"Process"), symbol(c"FreeResult"));
        // SAFETY: the symbols have exactly these C signatures (include/controller.h).
        let (process, free_result) = unsafe {
            (
                std::mem::transmute::<*mut c_void, ProcessFn>(process),
                std::mem::transmute::<*mut c_void, FreeResultFn>(free_result),
            )
        };
        Plugin {
            lib: Some(lib),
            process,
            free_result,
        }
    }

    /// The exports linked into this binary (no library is loaded).
    pub fn linked() -> Plugin {
        Plugin {
            lib: None,
            process: controller::Process,
            free_result: controller::FreeResult,
        }
    }

    /// `Process` with raw arguments; returns the status and a copy of `*out_buf` (freed already).
    pub fn call_raw(
        &self,
        host: *const VirtufinHost,
        in_buf: *const u8,
        in_len: i32,
    ) -> (i32, Option<Vec<u8>>) {
        self.process_with(host, in_buf, in_len, |rc, out, out_len| {
            if out.is_null() {
                assert_eq!(out_len, 0, "NULL out_buf must come with out_len 0");
                return (rc, None);
            }
            assert!(out_len > 0, "non-NULL out_buf with out_len {out_len}");
            // SAFETY: Process returned `out_len` readable bytes at `out`.
            let copy = unsafe { std::slice::from_raw_parts(out, out_len as usize) }.to_vec();
            (rc, Some(copy))
        })
    }

    /// `Process` with raw arguments, as the engine calls it: `read` sees the status, `*out_buf` and
    /// `*out_len` while the reply is still the plugin's; then a non-NULL `*out_buf` is released with
    /// `FreeResult`, exactly once. Callbacks of the host tables of [`ScriptedHost`]s are only valid
    /// inside such a call, on its thread.
    pub fn process_with<R>(
        &self,
        host: *const VirtufinHost,
        in_buf: *const u8,
        in_len: i32,
        read: impl FnOnce(i32, *const u8, i32) -> R,
    ) -> R {
        let mut out: *mut u8 = ptr::null_mut();
        let mut out_len: i32 = -1;
        let rc = {
            let _inside = Inside::enter(host);
            // SAFETY: the pointers are what the caller means to pass; out-pointers are our locals.
            unsafe { (self.process)(host, in_buf, in_len, &mut out, &mut out_len) }
        };
        let result = read(rc, out, out_len);
        if !out.is_null() {
            // SAFETY: released exactly once, as the ABI requires.
            unsafe { (self.free_result)(out) };
        }
        result
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(lib) = self.lib {
            // SAFETY: the handle from dlopen, closed once; no export is used after this.
            unsafe { libc::dlclose(lib) };
        }
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message owned by the loader.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "no dlerror message".to_owned();
    }
    // SAFETY: non-NULL, NUL-terminated (above).
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

thread_local! {
    /// The host tables of the `Process` calls running on this thread, innermost last.
    static TABLES: RefCell<Vec<*const VirtufinHost>> = const { RefCell::new(Vec::new()) };
}

/// Marks a `Process` call with `table` as running on this thread, until dropped.
struct Inside;

impl Inside {
    fn enter(table: *const VirtufinHost) -> Inside {
        TABLES.with(|tables| tables.borrow_mut().push(table));
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        TABLES.with(|tables| tables.borrow_mut().pop());
    }
}

/// What the scripted gateway answers to one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Canned {
    /// Status 0 with this JSON body.
    Ok(String),
    /// Status 0 with a NULL body.
    OkEmpty,
    /// Non-zero status with this body (a WSM `{"code","message"}` or plain text).
    Fail(i32, String),
    /// Non-zero status with a NULL body.
    FailNoBody(i32),
    /// This status with these bytes, UTF-8 or not (fuzzed bodies; the benchmark's static replies).
    Bytes(i32, Cow<'static, [u8]>),
    /// Status 0 with this body but a negative `resp_len` (a broken host).
    NegativeLength(Cow<'static, [u8]>),
}

/// One gateway call as the host's script sees it.
pub struct Request<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub body: &'a [u8],
    /// The host table the running `Process` call was given (for a re-entrant call).
    pub table: *const VirtufinHost,
}

/// One recorded `gateway_call`.
#[derive(Clone, Debug)]
pub struct Call {
    pub service: String,
    pub method: String,
    /// The request body (`null` where it was not JSON, which is also a problem).
    pub body: Value,
    pub thread: ThreadId,
}

type Answer = Box<dyn Fn(&Request<'_>) -> Canned + Send + Sync>;

/// How the gateway picks its answers.
enum Script {
    /// Per method: the replies still queued, the last of which repeats.
    PerMethod(Mutex<HashMap<String, Vec<Canned>>>),
    Custom(Answer),
}

/// A WorkManager host stand-in: scripted gateway replies, every call, log line and problem recorded,
/// every gateway buffer allocated with `malloc` and checked to be handed back exactly once.
pub struct ScriptedHost {
    table: Box<VirtufinHost>,
    inner: Box<HostState>,
}

// SAFETY: the table is written only through `&mut self`; the state behind `engine_ptr` is mutexes,
// atomics, a `Send + Sync` script and a flag fixed before the host is shared.
unsafe impl Send for ScriptedHost {}
// SAFETY: as above.
unsafe impl Sync for ScriptedHost {}

struct HostState {
    script: Script,
    /// Whether calls, log lines and buffer addresses are recorded (off for the benchmark).
    record: bool,
    calls: Mutex<Vec<Call>>,
    logs: Mutex<Vec<(i32, String)>>,
    problems: Mutex<Vec<String>>,
    /// Gateway buffers handed out and not yet returned, by address (when recording).
    outstanding: Mutex<HashSet<usize>>,
    allocated: AtomicUsize,
    freed: AtomicUsize,
}

impl ScriptedHost {
    /// ABI version 1; answers from [`on`](Self::on)/[`on_seq`](Self::on_seq), `UNIMPLEMENTED` else.
    pub fn new() -> ScriptedHost {
        Self::with_abi(1)
    }

    pub fn with_abi(abi_version: i32) -> ScriptedHost {
        let mut host = Self::with_script(Script::PerMethod(Mutex::default()));
        host.table.abi_version = abi_version;
        host
    }

    /// ABI version 1; every gateway call is answered by `answer`, which runs with no lock held (so
    /// it may call `Process` again).
    pub fn answering(
        answer: impl Fn(&Request<'_>) -> Canned + Send + Sync + 'static,
    ) -> ScriptedHost {
        Self::with_script(Script::Custom(Box::new(answer)))
    }

    fn with_script(script: Script) -> ScriptedHost {
        let inner = Box::new(HostState {
            script,
            record: true,
            calls: Mutex::default(),
            logs: Mutex::default(),
            problems: Mutex::default(),
            outstanding: Mutex::default(),
            allocated: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
        });
        let table = Box::new(VirtufinHost {
            engine_ptr: &*inner as *const HostState as *mut c_void,
            abi_version: 1,
            log: Some(host_log),
            gateway_call: Some(host_gateway_call),
            free_response: Some(host_free_response),
        });
        ScriptedHost { table, inner }
    }

    /// Records no calls, log lines or buffer addresses and does not parse request bodies: only the
    /// answers and the buffer counts remain, for measuring the plugin rather than the host.
    pub fn quiet(mut self) -> ScriptedHost {
        self.inner.record = false;
        self
    }

    pub fn table(&self) -> *const VirtufinHost {
        &*self.table
    }

    /// Mutable access to the callback table, to null out callbacks.
    pub fn table_mut(&mut self) -> &mut VirtufinHost {
        &mut self.table
    }

    pub fn engine_ptr(&self) -> *mut c_void {
        self.table.engine_ptr
    }

    /// Answers every call of `method` with `reply` (after any queued one-shot replies).
    pub fn on(&self, method: &str, reply: Canned) -> &Self {
        self.on_seq(method, vec![reply])
    }

    /// Answers the next calls of `method` with `replies` in order; the last one repeats.
    pub fn on_seq(&self, method: &str, replies: Vec<Canned>) -> &Self {
        let Script::PerMethod(per_method) = &self.inner.script else {
            panic!("this host answers with its own closure");
        };
        lock(per_method).insert(method.to_owned(), replies);
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.calls).clone()
    }

    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *lock(&self.inner.calls))
    }

    pub fn logs(&self) -> Vec<(i32, String)> {
        lock(&self.inner.logs).clone()
    }

    /// What the plugin did against the ABI, one line each.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.inner.problems).clone()
    }

    /// (gateway buffers handed out, gateway buffers freed).
    pub fn buffers(&self) -> (usize, usize) {
        (
            self.inner.allocated.load(Ordering::SeqCst),
            self.inner.freed.load(Ordering::SeqCst),
        )
    }

    /// Gateway buffers handed out and not handed back (when recording).
    pub fn outstanding(&self) -> usize {
        lock(&self.inner.outstanding).len()
    }

    /// Forgets the calls, log lines, problems and outstanding buffers so far (a buffer never handed
    /// back stays leaked), for a host that serves one input after another.
    pub fn reset(&self) {
        let st = &self.inner;
        lock(&st.calls).clear();
        lock(&st.logs).clear();
        lock(&st.problems).clear();
        lock(&st.outstanding).clear();
    }
}

impl Default for ScriptedHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScriptedHost {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(self.problems(), Vec::<String>::new(), "ABI problems");
            let (allocated, freed) = self.buffers();
            assert_eq!(allocated, freed, "gateway buffers leaked or double-freed");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state of the `Process` call running on this thread, and the table it was given. A callback
/// outside any such call has no host to report to, so it aborts the process.
fn current<'a>(ctx: *mut c_void, callback: &str) -> (&'a HostState, *const VirtufinHost) {
    let table = TABLES.with(|tables| tables.borrow().last().copied());
    let Some(table) = table.filter(|t| !t.is_null()) else {
        panic!("{callback} called outside a Process call on this thread");
    };
    // SAFETY: the table of the running call, valid for its duration; its callbacks are ours, so its
    // engine_ptr is the HostState of a live ScriptedHost.
    let st = unsafe { &*((*table).engine_ptr as *const HostState) };
    if ctx != st as *const HostState as *mut c_void {
        problem(
            st,
            format!("{callback} got ctx {ctx:p}, not the table's engine_ptr"),
        );
    }
    (st, table)
}

fn problem(st: &HostState, what: String) {
    lock(&st.problems).push(what);
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: *const c_char) {
    let (st, _) = current(ctx, "log");
    if !(0..=4).contains(&level) {
        problem(st, format!("log level {level}"));
    }
    if msg.is_null() {
        problem(st, "log(NULL)".into());
        return;
    }
    // SAFETY: the ABI passes a NUL-terminated string, borrowed for this call.
    let msg = unsafe { CStr::from_ptr(msg) };
    if let Err(e) = msg.to_str() {
        problem(st, format!("log message is not UTF-8: {e}"));
    }
    if st.record {
        let msg = msg.to_string_lossy().into_owned();
        lock(&st.logs).push((level, msg));
    }
}

unsafe extern "C" fn host_gateway_call(
    ctx: *mut c_void,
    service: *const c_char,
    method: *const c_char,
    req: *const u8,
    req_len: i32,
    resp: *mut *mut u8,
    resp_len: *mut i32,
) -> i32 {
    let (st, table) = current(ctx, "gateway_call");
    if service.is_null() || method.is_null() || resp.is_null() || resp_len.is_null() {
        problem(
            st,
            "gateway_call with a NULL service, method or out-pointer".into(),
        );
        return -1;
    }
    // SAFETY: the ABI passes NUL-terminated names.
    let (service, method) = unsafe { (CStr::from_ptr(service), CStr::from_ptr(method)) };
    let (service, method) = (service.to_string_lossy(), method.to_string_lossy());
    let body = match usize::try_from(req_len) {
        Ok(0) => &[][..],
        Ok(_) if req.is_null() => {
            problem(st, format!("{method}: NULL request with length {req_len}"));
            &[][..]
        }
        // SAFETY: the ABI passes `req_len` readable bytes.
        Ok(len) => unsafe { std::slice::from_raw_parts(req, len) },
        Err(_) => {
            problem(st, format!("{method}: negative request length {req_len}"));
            &[][..]
        }
    };
    if st.record {
        let json = serde_json::from_slice::<Value>(body).unwrap_or_else(|e| {
            problem(
                st,
                format!("{service}.{method} request body is not JSON: {e}"),
            );
            Value::Null
        });
        lock(&st.calls).push(Call {
            service: service.clone().into_owned(),
            method: method.clone().into_owned(),
            body: json,
            thread: std::thread::current().id(),
        });
    }
    let request = Request {
        service: &service,
        method: &method,
        body,
        table,
    };
    let canned = answer(st, &request);
    let (status, body, negative): (i32, Option<&[u8]>, bool) = match &canned {
        Canned::Ok(body) => (0, Some(body.as_bytes()), false),
        Canned::OkEmpty => (0, None, false),
        Canned::Fail(status, body) => (*status, Some(body.as_bytes()), false),
        Canned::FailNoBody(status) => (*status, None, false),
        Canned::Bytes(status, body) => (*status, Some(body), false),
        Canned::NegativeLength(body) => (0, Some(body), true),
    };
    let buf = body.map_or(ptr::null_mut(), |body| malloc_copy(st, body));
    // SAFETY: checked non-NULL above; the ABI makes them writable.
    unsafe {
        *resp = buf;
        *resp_len = match (buf.is_null(), negative, body) {
            (false, true, _) => -1,
            (false, false, Some(body)) => body.len() as i32,
            _ => 0,
        };
    }
    status
}

/// The scripted answer to `request`; no host lock is held while a custom script runs.
fn answer(st: &HostState, request: &Request<'_>) -> Canned {
    match &st.script {
        Script::Custom(answer) => answer(request),
        Script::PerMethod(per_method) => match lock(per_method).get_mut(request.method) {
            Some(queue) if queue.len() > 1 => queue.remove(0),
            Some(queue) => queue[0].clone(),
            None => Canned::Fail(
                12,
                format!(
                    r#"{{"code":"UNIMPLEMENTED","message":"no scripted reply for {}"}}"#,
                    request.method
                ),
            ),
        },
    }
}

/// A `malloc`'d copy of `bytes` (at least one byte), counted and, when recording, remembered.
fn malloc_copy(st: &HostState, bytes: &[u8]) -> *mut u8 {
    // SAFETY: a plain allocation of at least one byte, filled from `bytes`.
    let buf = unsafe { libc::malloc(bytes.len().max(1)) }.cast::<u8>();
    if buf.is_null() {
        problem(st, "malloc failed in the test host".into());
        return buf;
    }
    // SAFETY: `buf` holds `bytes.len()` bytes.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
    st.allocated.fetch_add(1, Ordering::SeqCst);
    if st.record {
        lock(&st.outstanding).insert(buf as usize);
    }
    buf
}

unsafe extern "C" fn host_free_response(ctx: *mut c_void, resp: *mut u8) {
    let (st, _) = current(ctx, "free_response");
    if resp.is_null() {
        problem(st, "free_response(NULL)".into());
        return;
    }
    if st.record && !lock(&st.outstanding).remove(&(resp as usize)) {
        problem(
            st,
            format!("free_response({resp:p}): not a gateway buffer, or freed twice"),
        );
        return;
    }
    st.freed.fetch_add(1, Ordering::SeqCst);
    // SAFETY: handed out by `malloc_copy` and not yet freed.
    unsafe { libc::free(resp.cast()) };
}
