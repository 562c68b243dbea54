//! Test support for driving the built `libcontroller.so` through its raw C ABI, the way WorkManager
//! does: `dlopen`, a `VirtufinHost` table of `extern "C"` callbacks, FlatBuffer events in, `malloc`'d
//! `WorkerResponse`s out. Shared by the integration tests and the `process` benchmark.
#![allow(dead_code)] // each test binary uses a different part

pub mod host_sim;
pub mod live_wsm;

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use controller::generated::{CloudEvent, CloudEventArgs, Extension, ExtensionArgs, WorkerResponse};
use controller::VirtufinHost;
use flatbuffers::FlatBufferBuilder;
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

/// The loaded plugin: the library handle and its two exports.
pub struct Plugin {
    _lib: libloading::Library,
    pub process: ProcessFn,
    pub free_result: FreeResultFn,
}

impl Plugin {
    pub fn load() -> Plugin {
        let path = lib_path();
        // SAFETY: loading our own plugin, whose initialisers are trivial.
        let lib = unsafe { libloading::Library::new(&path) }
            .unwrap_or_else(|e| panic!("dlopen {}: {e}", path.display()));
        // SAFETY: the symbols have exactly these C signatures (include/controller.h).
        let (process, free_result) = unsafe {
            let process: libloading::Symbol<ProcessFn> =
                lib.get(b"Process\0").expect("Process export");
            let free: libloading::Symbol<FreeResultFn> =
                lib.get(b"FreeResult\0").expect("FreeResult export");
            (*process, *free)
        };
        Plugin {
            _lib: lib,
            process,
            free_result,
        }
    }

    /// Calls `Process` with `host` and copies the reply out, releasing it with `FreeResult`.
    pub fn call(&self, host: &ScriptedHost, input: &[u8]) -> Reply {
        let (rc, bytes) = self.call_raw(host.table(), input.as_ptr(), input.len() as i32);
        assert_eq!(rc, 0, "Process returned {rc}");
        Reply::parse(&bytes.expect("Process returned 0 but no buffer"))
    }

    /// `Process` with raw arguments; returns the status and a copy of `*out_buf` (freed already).
    pub fn call_raw(
        &self,
        host: *const VirtufinHost,
        in_buf: *const u8,
        in_len: i32,
    ) -> (i32, Option<Vec<u8>>) {
        let mut out: *mut u8 = ptr::null_mut();
        let mut out_len: i32 = -1;
        // SAFETY: the pointers are what the test means to pass; out-pointers are our locals.
        let rc = unsafe { (self.process)(host, in_buf, in_len, &mut out, &mut out_len) };
        if out.is_null() {
            assert_eq!(out_len, 0, "NULL out_buf must come with out_len 0");
            return (rc, None);
        }
        assert!(out_len > 0, "non-NULL out_buf with out_len {out_len}");
        // SAFETY: Process returned `out_len` readable bytes at `out`.
        let copy = unsafe { std::slice::from_raw_parts(out, out_len as usize) }.to_vec();
        // SAFETY: released exactly once, as the ABI requires.
        unsafe { (self.free_result)(out) };
        (rc, Some(copy))
    }
}

/// What a scripted gateway answers to one method.
#[derive(Clone, Debug)]
pub enum Canned {
    /// Status 0 with this JSON body.
    Ok(String),
    /// Status 0 with a NULL body.
    OkEmpty,
    /// Non-zero status with this body (a WSM `{"code","message"}` or plain text).
    Fail(i32, String),
    /// Non-zero status with a NULL body.
    FailNoBody(i32),
}

/// One recorded `gateway_call`.
#[derive(Clone, Debug)]
pub struct Call {
    pub service: String,
    pub method: String,
    pub body: Value,
}

/// A WorkManager host stand-in: canned gateway replies per method, every call and log recorded,
/// every gateway buffer allocated with `malloc` and checked to be freed exactly once.
pub struct ScriptedHost {
    table: Box<VirtufinHost>,
    inner: Box<HostState>,
}

#[derive(Default)]
struct HostState {
    replies: Mutex<HashMap<String, Vec<Canned>>>,
    calls: Mutex<Vec<Call>>,
    logs: Mutex<Vec<(i32, String)>>,
    allocated: AtomicUsize,
    freed: AtomicUsize,
}

impl ScriptedHost {
    pub fn new() -> ScriptedHost {
        Self::with_abi(1)
    }

    pub fn with_abi(abi_version: i32) -> ScriptedHost {
        let inner = Box::new(HostState::default());
        let table = Box::new(VirtufinHost {
            engine_ptr: &*inner as *const HostState as *mut c_void,
            abi_version,
            log: Some(host_log),
            gateway_call: Some(host_gateway_call),
            free_response: Some(host_free_response),
        });
        ScriptedHost { table, inner }
    }

    pub fn table(&self) -> *const VirtufinHost {
        &*self.table
    }

    /// Mutable access to the callback table, to null out callbacks.
    pub fn table_mut(&mut self) -> &mut VirtufinHost {
        &mut self.table
    }

    /// Answers every call of `method` with `reply` (after any queued one-shot replies).
    pub fn on(&self, method: &str, reply: Canned) -> &Self {
        self.inner
            .replies
            .lock()
            .unwrap()
            .insert(method.to_owned(), vec![reply]);
        self
    }

    /// Answers the next calls of `method` with `replies` in order; the last one repeats.
    pub fn on_seq(&self, method: &str, replies: Vec<Canned>) -> &Self {
        self.inner
            .replies
            .lock()
            .unwrap()
            .insert(method.to_owned(), replies);
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.inner.calls.lock().unwrap())
    }

    pub fn logs(&self) -> Vec<(i32, String)> {
        self.inner.logs.lock().unwrap().clone()
    }

    /// (gateway buffers handed out, gateway buffers freed).
    pub fn buffers(&self) -> (usize, usize) {
        (
            self.inner.allocated.load(Ordering::SeqCst),
            self.inner.freed.load(Ordering::SeqCst),
        )
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
            let (allocated, freed) = self.buffers();
            assert_eq!(allocated, freed, "gateway buffers leaked or double-freed");
        }
    }
}

fn state<'a>(ctx: *mut c_void) -> &'a HostState {
    // SAFETY: ctx is the engine_ptr we installed: a live HostState owned by the ScriptedHost.
    unsafe { &*(ctx as *const HostState) }
}

fn malloc_copy(bytes: &[u8]) -> *mut u8 {
    // SAFETY: plain allocation and copy of a non-zero size.
    unsafe {
        let p = libc::malloc(bytes.len().max(1)) as *mut u8;
        assert!(!p.is_null());
        ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        p
    }
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: *const c_char) {
    // SAFETY: the plugin passes a NUL-terminated string.
    let msg = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    state(ctx).logs.lock().unwrap().push((level, msg));
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
    let st = state(ctx);
    // SAFETY: per the ABI: NUL-terminated names and `req_len` readable request bytes.
    let (service, method, body) = unsafe {
        (
            CStr::from_ptr(service).to_string_lossy().into_owned(),
            CStr::from_ptr(method).to_string_lossy().into_owned(),
            std::slice::from_raw_parts(req, req_len as usize).to_vec(),
        )
    };
    let body: Value = serde_json::from_slice(&body).expect("gateway request body is JSON");
    st.calls.lock().unwrap().push(Call {
        service,
        method: method.clone(),
        body,
    });
    let canned = {
        let mut replies = st.replies.lock().unwrap();
        match replies.get_mut(&method) {
            Some(queue) if queue.len() > 1 => queue.remove(0),
            Some(queue) => queue[0].clone(),
            None => Canned::Fail(
                12,
                format!(r#"{{"code":"UNIMPLEMENTED","message":"no scripted reply for {method}"}}"#),
            ),
        }
    };
    let (status, body) = match canned {
        Canned::Ok(b) => (0, Some(b)),
        Canned::OkEmpty => (0, None),
        Canned::Fail(s, b) => (s, Some(b)),
        Canned::FailNoBody(s) => (s, None),
    };
    // SAFETY: the out-pointers are valid per the ABI.
    unsafe {
        match body {
            Some(b) => {
                st.allocated.fetch_add(1, Ordering::SeqCst);
                *resp = malloc_copy(b.as_bytes());
                *resp_len = b.len() as i32;
            }
            None => {
                *resp = ptr::null_mut();
                *resp_len = 0;
            }
        }
    }
    status
}

unsafe extern "C" fn host_free_response(ctx: *mut c_void, resp: *mut u8) {
    assert!(!resp.is_null(), "free_response(NULL)");
    state(ctx).freed.fetch_add(1, Ordering::SeqCst);
    // SAFETY: allocated by malloc_copy.
    unsafe { libc::free(resp as *mut c_void) };
}

/// A command event as WorkManager would encode it.
#[derive(Clone, Debug, Default)]
pub struct Event {
    pub id: Option<String>,
    pub subject: Option<String>,
    pub data: Vec<u8>,
    pub extensions: Vec<(String, String)>,
}

impl Event {
    pub fn json(data: &Value) -> Event {
        Event {
            id: Some("evt-1".into()),
            data: data.to_string().into_bytes(),
            ..Event::default()
        }
    }

    pub fn raw(data: &[u8]) -> Event {
        Event {
            id: Some("evt-1".into()),
            data: data.to_vec(),
            ..Event::default()
        }
    }

    pub fn ext(mut self, name: &str, value: &str) -> Event {
        self.extensions.push((name.into(), value.into()));
        self
    }

    pub fn subject(mut self, subject: &str) -> Event {
        self.subject = Some(subject.into());
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let exts: Vec<_> = self
            .extensions
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
            id: self.id.as_deref().map(|s| fbb.create_string(s)),
            type_: Some(fbb.create_string("command.websocketmanagercontroller")),
            source: Some(fbb.create_string("urn:test")),
            specversion: Some(fbb.create_string("1.0")),
            datacontenttype: Some(fbb.create_string("application/json")),
            subject: self.subject.as_deref().map(|s| fbb.create_string(s)),
            data: Some(fbb.create_vector(&self.data)),
            extensions: Some(fbb.create_vector(&exts)),
            ..CloudEventArgs::default()
        };
        let root = CloudEvent::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }
}

/// A decoded `WorkerResponse` and its reply event.
#[derive(Clone, Debug)]
pub struct Reply {
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub source: Option<String>,
    pub specversion: Option<String>,
    pub datacontenttype: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub extensions: Vec<(String, String)>,
    pub data: Value,
    pub error_message: Option<String>,
}

impl Reply {
    pub fn parse(bytes: &[u8]) -> Reply {
        let resp =
            flatbuffers::root::<WorkerResponse>(bytes).expect("reply is a valid WorkerResponse");
        let ev = resp.result_event().expect("reply has a result_event");
        let data = ev.data().map(|d| d.bytes()).unwrap_or_default();
        Reply {
            id: ev.id().map(str::to_owned),
            event_type: ev.type_().map(str::to_owned),
            source: ev.source().map(str::to_owned),
            specversion: ev.specversion().map(str::to_owned),
            datacontenttype: ev.datacontenttype().map(str::to_owned),
            subject: ev.subject().map(str::to_owned),
            time: ev.time().map(str::to_owned),
            extensions: ev
                .extensions()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e.name().unwrap_or_default().to_owned(),
                        e.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            data: serde_json::from_slice(data).expect("reply data is JSON"),
            error_message: resp.error_message().map(str::to_owned),
        }
    }

    pub fn success(&self) -> bool {
        self.data["success"] == Value::Bool(true)
    }

    pub fn code(&self) -> &str {
        self.data["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.data["message"].as_str().unwrap_or("")
    }
}
