//! `Process` from 8 threads at once, through the real C ABI: with one host shared by all threads
//! and with one host per thread. Every reply is checked against its own request (correlation id and
//! data), every gateway request body is accounted for, and per-worker state (subscription request
//! ids, the connections `stop` closes) stays consistent and separate per host. Also: `Process` is
//! re-entrant (a host may call it from inside its own `gateway_call`), and `gateway_call` runs on the
//! thread that called `Process`.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;

use base64::Engine as _;
use serde_json::{json, Value};
use support::{Canned, Event, Plugin, ScriptedHost};

const THREADS: usize = 8;
const CALLS_PER_THREAD: usize = 2_000;
const KINDS: usize = 12;

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(Plugin::load)
}

/// A scripted host shared between threads. The host is leaked so that its address (the plugin's
/// per-worker key) is never reused.
#[derive(Clone, Copy)]
struct SharedHost(&'static ScriptedHost);

impl SharedHost {
    fn new(connection_id: &str) -> SharedHost {
        let host: &'static ScriptedHost = Box::leak(Box::new(ScriptedHost::new()));
        host.on(
            "Connect",
            Canned::Ok(json!({"id": connection_id, "status": "connected"}).to_string()),
        );
        host.on("SendRaw", Canned::Ok("{}".into()));
        host.on("StartPublish", Canned::Ok("{}".into()));
        host.on(
            "Send",
            Canned::Ok(json!({"response": b64(b"pong")}).to_string()),
        );
        host.on("List", Canned::Ok(LIST_REPLY.into()));
        host.on("GetTag", Canned::Ok(r#"{"value":"v"}"#.into()));
        host.on("SetTags", Canned::OkEmpty);
        host.on(
            "Disconnect",
            Canned::Fail(
                5,
                r#"{"code":"NOT_FOUND","message":"Connection not found"}"#.into(),
            ),
        );
        SharedHost(host)
    }
}

const LIST_REPLY: &str = r#"{"connections":[{"id":"c-1","url":"wss://a/ws","status":"connected","topic":"t","instance_id":"wsm-0","tags":{"k":"v"}}]}"#;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What one worker thread saw: the gateway calls its requests must have caused (in its order) and
/// the subscription request ids the plugin assigned to it.
#[derive(Default)]
struct Outcome {
    calls: Vec<(String, Value)>,
    request_ids: Vec<u64>,
}

/// Runs `CALLS_PER_THREAD` mixed commands as thread `t` against `host`, checking every reply.
fn worker(host: SharedHost, t: usize, connection_id: &str) -> Outcome {
    let host = host.0;
    let mut out = Outcome::default();
    for i in 0..CALLS_PER_THREAD {
        let corr = format!("t{t}-{i}");
        let id = format!("c-{t}-{i}");
        let kind = (i * 7 + t) % KINDS;
        let (data, expected, call): (Value, Value, Option<(&str, Value)>) = match kind {
            0 => (
                json!({"command":"create","url":format!("wss://feed/{t}/{i}"),"tags":{"t":t.to_string()}}),
                json!({"command":"create","success":true,"id":connection_id,"status":"connected","message":"connected"}),
                Some((
                    "Connect",
                    json!({"url":format!("wss://feed/{t}/{i}"),"auto_reconnect":false,"tags":{"t":t.to_string()}}),
                )),
            ),
            1 => (
                json!({"command":"subscribe","id":id,"params":[format!("s{i}@depth")]}),
                // request_id is assigned by the plugin; checked below.
                Value::Null,
                None,
            ),
            2 => (
                json!({"command":"publish","id":id,"topic":format!("topic-{t}-{i}")}),
                json!({"command":"publish","success":true,"id":id,"topic":format!("topic-{t}-{i}")}),
                Some((
                    "StartPublish",
                    json!({"id":id,"topic":format!("topic-{t}-{i}")}),
                )),
            ),
            3 => (
                json!({"command":"send_raw","id":id,"text":corr}),
                json!({"command":"send_raw","success":true,"id":id}),
                Some((
                    "SendRaw",
                    json!({"id":id,"message":b64(corr.as_bytes()),"content_type":"application/json"}),
                )),
            ),
            4 => (
                json!({"command":"send","id":id,"text":corr,"timeout_ms":i}),
                json!({"command":"send","success":true,"id":id,"response":b64(b"pong"),"response_text":"pong"}),
                Some((
                    "Send",
                    json!({"id":id,"message":b64(corr.as_bytes()),"timeout_ms":i,"content_type":"application/json"}),
                )),
            ),
            5 => (
                json!({"command":"list","filters":{"thread":t.to_string()}}),
                json!({"command":"list","success":true,"connections":[
                    {"id":"c-1","url":"wss://a/ws","status":"connected","topic":"t","instance_id":"wsm-0","tags":{"k":"v"}}
                ]}),
                Some((
                    "List",
                    json!({"filters":[{"key":"thread","value":t.to_string()}]}),
                )),
            ),
            6 => (
                json!({"command":"get_tag","id":id,"key":format!("k{i}")}),
                json!({"command":"get_tag","success":true,"id":id,"key":format!("k{i}"),"value":"v"}),
                Some(("GetTag", json!({"id":id,"key":format!("k{i}")}))),
            ),
            7 => (
                json!({"command":"set_tags","id":id,"tags":{"i":i.to_string()}}),
                json!({"command":"set_tags","success":true,"id":id}),
                Some(("SetTags", json!({"id":id,"tags":{"i":i.to_string()}}))),
            ),
            8 => (
                json!({"command":format!("bogus-{t}-{i}")}),
                json!({"command":"error","success":false,"code":"UNKNOWN_COMMAND",
                       "message":format!("Unknown command: bogus-{t}-{i}")}),
                None,
            ),
            9 => (
                json!({"command":"publish","id":id}),
                json!({"command":"publish","success":false,"code":"BAD_REQUEST",
                       "message":"Missing 'topic' field"}),
                None,
            ),
            10 => (
                json!({"command":"disconnect","id":id}),
                json!({"command":"disconnect","success":false,"code":"NOT_FOUND",
                       "message":"Connection not found"}),
                Some(("Disconnect", json!({"id":id}))),
            ),
            _ => (Value::Null, Value::Null, None),
        };

        if kind == 11 {
            // A truncated event: no decodable correlation id, a BAD_REQUEST reply.
            let buf = Event::json(&json!({"command":"list"}))
                .ext("correlationid", &corr)
                .encode();
            let cut = &buf[..buf.len() / 2];
            let (rc, bytes) = plugin().call_raw(host.table(), cut.as_ptr(), cut.len() as i32);
            assert_eq!(rc, 0, "{corr}");
            let reply = support::Reply::parse(&bytes.expect("reply"));
            assert!(
                reply.extensions.is_empty(),
                "{corr}: {:?}",
                reply.extensions
            );
            assert_eq!(reply.data["command"], "error", "{corr}");
            assert_eq!(reply.code(), "BAD_REQUEST", "{corr}");
            continue;
        }

        let event = Event::json(&data)
            .ext("correlationid", &corr)
            .subject(&format!("subject-{t}"));
        let reply = plugin().call(host, &event.encode());
        assert_eq!(
            reply.extensions,
            [("correlationid".to_owned(), corr.clone())],
            "{corr}: correlation id"
        );
        assert_eq!(
            reply.subject.as_deref(),
            Some(format!("subject-{t}").as_str()),
            "{corr}"
        );
        assert_eq!(reply.error_message, None, "{corr}");
        if kind == 1 {
            let request_id = reply.data["request_id"].as_u64().expect("request_id");
            assert_eq!(
                reply.data,
                json!({"command":"subscribe","success":true,"id":id,"request_id":request_id}),
                "{corr}"
            );
            let frame =
                format!(r#"{{"method":"SUBSCRIBE","params":["s{i}@depth"],"id":{request_id}}}"#);
            out.request_ids.push(request_id);
            out.calls.push((
                "SendRaw".to_owned(),
                json!({"id":id,"message":b64(frame.as_bytes()),"content_type":"application/json",
                       "replay_on_reconnect":true}),
            ));
        } else {
            assert_eq!(reply.data, expected, "{corr}: data");
        }
        if let Some((method, body)) = call {
            out.calls.push((method.to_owned(), body));
        }
    }
    out
}

fn recorded(host: &ScriptedHost) -> Vec<(String, Value)> {
    host.take_calls()
        .into_iter()
        .map(|c| {
            assert_eq!(c.service, "websocketmanager");
            (c.method, c.body)
        })
        .collect()
}

/// The same calls in any order: compares them as sorted multisets, reporting the first difference.
fn assert_same_calls(got: &[(String, Value)], expected: &[(String, Value)], what: &str) {
    let sorted = |calls: &[(String, Value)]| {
        let mut keys: Vec<String> = calls.iter().map(|(m, b)| format!("{m} {b}")).collect();
        keys.sort();
        keys
    };
    let (got, expected) = (sorted(got), sorted(expected));
    assert_eq!(got.len(), expected.len(), "{what}: number of gateway calls");
    if let Some((g, e)) = got.iter().zip(&expected).find(|(g, e)| g != e) {
        panic!("{what}: gateway request bodies differ; first: got {g}, expected {e}");
    }
}

fn assert_buffers_balanced(host: &ScriptedHost) {
    let (allocated, freed) = host.buffers();
    assert_eq!(allocated, freed, "gateway buffers leaked or double-freed");
    assert!(allocated > 0);
}

#[test]
fn eight_threads_sharing_one_host_get_their_own_replies() {
    let host = SharedHost::new("conn-shared");
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| s.spawn(move || worker(host, t, "conn-shared")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect()
    });

    // Every gateway call is one a request asked for, with its exact body; nothing lost or mixed.
    let expected: Vec<(String, Value)> = outcomes.iter().flat_map(|o| o.calls.clone()).collect();
    let got = recorded(host.0);
    assert_same_calls(&got, &expected, "shared host");

    // One worker instance: its subscription ids are 1..=n, each handed out exactly once.
    let ids: BTreeSet<u64> = outcomes
        .iter()
        .flat_map(|o| o.request_ids.clone())
        .collect();
    let count: usize = outcomes.iter().map(|o| o.request_ids.len()).sum();
    assert_eq!(ids.len(), count, "a request id was handed out twice");
    assert_eq!(ids, (1..=count as u64).collect::<BTreeSet<u64>>());
    for o in &outcomes {
        assert!(
            o.request_ids.windows(2).all(|w| w[0] < w[1]),
            "ids per thread increase"
        );
    }

    // The worker remembers the one connection it created, once.
    host.0.on("Disconnect", Canned::Ok("{}".into()));
    let reply = plugin().call(host.0, &Event::json(&json!({"command":"stop"})).encode());
    assert_eq!(
        reply.data,
        json!({"command":"stop","success":true,"message":"disconnected 1 connections"})
    );
    assert_eq!(
        recorded(host.0),
        [("Disconnect".to_owned(), json!({"id":"conn-shared"}))]
    );
    assert_buffers_balanced(host.0);
}

#[test]
fn eight_threads_with_their_own_hosts_keep_their_state_apart() {
    let hosts: Vec<SharedHost> = (0..THREADS)
        .map(|t| SharedHost::new(&format!("conn-{t}")))
        .collect();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(t, &host)| s.spawn(move || worker(host, t, &format!("conn-{t}"))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect()
    });

    for (t, (host, outcome)) in hosts.iter().zip(&outcomes).enumerate() {
        // Each host saw exactly its own thread's calls, in order.
        let got = recorded(host.0);
        assert_eq!(got.len(), outcome.calls.len(), "thread {t}");
        for (n, (g, e)) in got.iter().zip(&outcome.calls).enumerate() {
            assert_eq!(g, e, "thread {t}, call {n}");
        }
        // Each worker counts its own subscription ids from 1.
        let n = outcome.request_ids.len() as u64;
        assert_eq!(
            outcome.request_ids,
            (1..=n).collect::<Vec<u64>>(),
            "thread {t}"
        );
        // stop closes this worker's connection and nobody else's.
        host.0.on("Disconnect", Canned::Ok("{}".into()));
        let reply = plugin().call(host.0, &Event::json(&json!({"command":"stop"})).encode());
        assert_eq!(
            reply.data["message"], "disconnected 1 connections",
            "thread {t}"
        );
        assert_eq!(
            recorded(host.0),
            [("Disconnect".to_owned(), json!({"id":format!("conn-{t}")}))],
            "thread {t}"
        );
        assert_buffers_balanced(host.0);
    }
}

#[test]
fn threads_calling_with_both_shared_and_own_hosts_at_once() {
    // Half the threads share one host, the other half have their own; all run at the same time.
    let shared = SharedHost::new("conn-mixed");
    let own: Vec<SharedHost> = (0..THREADS / 2)
        .map(|t| SharedHost::new(&format!("conn-own-{t}")))
        .collect();
    let (shared_outcomes, own_outcomes): (Vec<Outcome>, Vec<Outcome>) = std::thread::scope(|s| {
        let shared_handles: Vec<_> = (0..THREADS / 2)
            .map(|t| s.spawn(move || worker(shared, t, "conn-mixed")))
            .collect();
        let own_handles: Vec<_> = own
            .iter()
            .enumerate()
            .map(|(t, &host)| s.spawn(move || worker(host, t, &format!("conn-own-{t}"))))
            .collect();
        (
            shared_handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect(),
            own_handles.into_iter().map(|h| h.join().unwrap()).collect(),
        )
    });
    let expected: Vec<(String, Value)> = shared_outcomes
        .iter()
        .flat_map(|o| o.calls.clone())
        .collect();
    assert_same_calls(&recorded(shared.0), &expected, "shared host");
    let count: usize = shared_outcomes.iter().map(|o| o.request_ids.len()).sum();
    let ids: BTreeSet<u64> = shared_outcomes
        .iter()
        .flat_map(|o| o.request_ids.clone())
        .collect();
    assert_eq!(ids, (1..=count as u64).collect::<BTreeSet<u64>>());
    for (t, (host, outcome)) in own.iter().zip(&own_outcomes).enumerate() {
        assert_eq!(recorded(host.0), outcome.calls, "own host {t}");
        let n = outcome.request_ids.len() as u64;
        assert_eq!(outcome.request_ids, (1..=n).collect::<Vec<u64>>());
        assert_buffers_balanced(host.0);
    }
    assert_buffers_balanced(shared.0);
}

// ---------------------------------------------------------------------------------------------
// Re-entrancy: a host that calls Process again from inside gateway_call
// ---------------------------------------------------------------------------------------------

/// A host whose `gateway_call` answers `List` only after running a nested `Process` call (a
/// `get_tags` command) on the same host table; its recorded calls say on which thread each ran.
struct ReentrantHost {
    host: ScriptedHost,
    nested_reply: Arc<Mutex<Option<Raw>>>,
}

/// What `Plugin::call_raw` returns: the status and a copy of the reply.
type Raw = (i32, Option<Vec<u8>>);

impl ReentrantHost {
    /// Leaked: its address is its worker identity and must not be reused.
    fn new(nested_corr: &str) -> &'static ReentrantHost {
        let nested_event = Event::json(&json!({"command":"get_tags","id":"c-n"}))
            .ext("correlationid", nested_corr)
            .encode();
        let nested_reply = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&nested_reply);
        let mut host = ScriptedHost::answering(move |request| match request.method {
            "List" => {
                let nested = plugin().call_raw(
                    request.table,
                    nested_event.as_ptr(),
                    nested_event.len() as i32,
                );
                *slot.lock().unwrap() = Some(nested);
                Canned::Ok(r#"{"connections":[]}"#.into())
            }
            "GetTags" => Canned::Ok(r#"{"tags":{"depth":"1"}}"#.into()),
            _ => Canned::Ok("{}".into()),
        });
        host.table_mut().log = None;
        Box::leak(Box::new(ReentrantHost { host, nested_reply }))
    }
}

#[derive(Clone, Copy)]
struct ReentrantRef(&'static ReentrantHost);

/// One outer `list` whose gateway call runs a nested `get_tags`; checks both replies and threads.
fn reentrant_round(host: ReentrantRef, n: usize) {
    let host = host.0;
    let outer_corr = format!("outer-{n}");
    let outer = Event::json(&json!({"command":"list"}))
        .ext("correlationid", &outer_corr)
        .encode();
    let (rc, out) = plugin().call_raw(host.host.table(), outer.as_ptr(), outer.len() as i32);
    assert_eq!(rc, 0);
    let reply = support::Reply::parse(&out.expect("outer reply"));
    assert_eq!(
        reply.data,
        json!({"command":"list","success":true,"connections":[]})
    );
    assert_eq!(reply.extensions, [("correlationid".to_owned(), outer_corr)]);

    let (rc, nested) = host
        .nested_reply
        .lock()
        .unwrap()
        .take()
        .expect("nested call ran");
    assert_eq!(rc, 0);
    let nested = support::Reply::parse(&nested.expect("nested reply"));
    assert_eq!(
        nested.data,
        json!({"command":"get_tags","success":true,"id":"c-n","tags":{"depth":"1"}})
    );
    assert_eq!(
        nested.extensions,
        [("correlationid".to_owned(), "inner".to_owned())]
    );
    assert_ne!(nested.id, reply.id, "nested and outer replies share an id");

    let me = std::thread::current().id();
    let calls: Vec<(String, ThreadId)> = host
        .host
        .take_calls()
        .into_iter()
        .map(|call| (call.method, call.thread))
        .collect();
    assert_eq!(
        calls,
        [("List".to_owned(), me), ("GetTags".to_owned(), me)],
        "gateway calls, in order, on the calling thread"
    );
    let (allocated, freed) = host.host.buffers();
    assert_eq!(allocated, freed);
}

#[test]
fn process_is_reentrant_from_inside_gateway_call_on_the_calling_thread() {
    let host = ReentrantRef(ReentrantHost::new("inner"));
    for n in 0..3 {
        reentrant_round(host, n);
    }
    // And from several threads at once, each with its own re-entrant host.
    std::thread::scope(|s| {
        for _ in 0..4 {
            let host = ReentrantRef(ReentrantHost::new("inner"));
            s.spawn(move || {
                for n in 0..200 {
                    reentrant_round(host, n);
                }
            });
        }
    });
}
