//! Randomised inputs through the real C ABI: valid command events for every command, mutated by bit
//! flips, byte overwrites, truncation, extension, splicing, inserted bytes and planted offsets and
//! lengths. Whatever the bytes, `Process` must return 0 with a well-formed `WorkerResponse`; an
//! input that is not a CloudEvent FlatBuffer must get a `BAD_REQUEST` reply; a decodable one must get
//! its correlation id, subject and response type back; nothing may panic (no `INTERNAL` reply) and
//! every gateway buffer must be handed back.
//!
//! Deterministic: `FUZZ_SEED` (decimal or 0x-hex) picks the seed, `FUZZ_ITERATIONS` the number of
//! inputs (default 100000). A failure names the seed, thread and iteration, and writes the input to
//! the test's temporary directory.

mod support;

// The reply checks are the fuzz targets' own (fuzz/checks/process.rs), so that this test, the
// libFuzzer target and the corpus replay hold the plugin to exactly the same contract.
#[path = "../fuzz/checks/process.rs"]
mod process_check;

use std::sync::OnceLock;

use process_check::{expectation, Facts, METHODS};
use serde_json::json;
use support::{Canned, Event, Plugin, ScriptedHost};

// The process checks call `Process` through `crate::host`, the tests' scripted host.
use support::host;

const DEFAULT_SEED: u64 = 0x5eed_c0de_2026_1124;
const DEFAULT_ITERATIONS: usize = 100_000;
const THREADS: usize = 2;

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(Plugin::load)
}

/// SplitMix64: tiny, fast, and good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn env_number(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim().replace('_', "");
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={raw:?} is not a number: {e}")))
}

/// Valid encoded command events: every command, with and without the extensions the plugin reads.
fn corpus() -> Vec<Vec<u8>> {
    let commands = [
        json!({"command":"create","url":"wss://stream.example.com:9443/stream","auto_reconnect":true,
               "tags":{"venue":"binance"},"headers":{"X-K":"v"},"subprotocols":["v1"],
               "on_connect":["hello",{"method":"SUBSCRIBE","params":["a"],"id":1}],"api_host":"h"}),
        json!({"command":"create","url":"ws://feed/ws"}),
        json!({"command":"subscribe","id":"c-1","params":["btcusdt@depth","ethusdt@trade"]}),
        json!({"command":"unsubscribe","id":"c-1","params":["btcusdt@depth"],"request_id":7}),
        json!({"command":"publish","id":"c-1","topic":"act.exchange.binance.orderbook.update"}),
        json!({"command":"stop-publish","id":"c-1"}),
        json!({"command":"send_raw","id":"c-1","text":"{\"method\":\"PING\"}"}),
        json!({"command":"send_raw","id":"c-1","message":"AAEC/w==","content_type":"application/x-bin"}),
        json!({"command":"send","id":"c-1","text":"ping","timeout_ms":1500}),
        json!({"command":"list","filters":{"venue":"binance","env":"prod"}}),
        json!({"command":"list"}),
        json!({"command":"disconnect","id":"c-1"}),
        json!({"command":"set_tag","id":"c-1","key":"k","value":"v"}),
        json!({"command":"get_tag","id":"c-1","key":"k"}),
        json!({"command":"set_tags","id":"c-1","tags":{"a":"1","b":"2"}}),
        json!({"command":"get_tags","id":"c-1"}),
        json!({"command":"rotate","id":"c-1"}),
        json!({"command":"create","url":"wss://x/ws","redundancy":2,"max_lifetime_ms":60000}),
        json!({"command":"stop"}),
        json!({"command":"frobnicate"}),
        json!(json!({"command":"get_tags","id":"c-2"}).to_string()),
    ];
    let mut corpus = Vec::new();
    for (n, data) in commands.iter().enumerate() {
        corpus.push(Event::json(data).encode());
        corpus.push(
            Event::json(data)
                .ext("correlationid", &format!("corr-{n}"))
                .subject("subject/7")
                .encode(),
        );
        corpus.push(
            Event::json(data)
                .ext(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )
                .ext("correlationid", &format!("c{n}"))
                .ext("response_type", "response.custom")
                .ext("wsm_compat", if n % 2 == 0 { "base" } else { "extended" })
                .encode(),
        );
    }
    corpus.push(Event::raw(b"").encode());
    corpus.push(Event::raw(b"\xff\xfe").ext("correlationid", "x").encode());
    corpus.push(Event::default().encode());
    corpus
}

const INTERESTING_U32: [u32; 12] = [
    0,
    1,
    2,
    4,
    8,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fff8,
    0xffff_ffff,
];

/// Where the command JSON starts in an encoded event, if it is still there.
fn json_start(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|w| w == b"{\"" || w == b"\"{")
}

/// Applies 1–4 random mutations; returns their names (for the failure report).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) -> Vec<&'static str> {
    let mut applied = Vec::new();
    // Mostly one mutation, so that many inputs stay decodable and reach the command parser.
    let count = if rng.chance(2) { 1 } else { 2 + rng.below(3) };
    for _ in 0..count {
        let len = input.len();
        let kind = rng.below(13);
        match kind {
            11 | 12 if json_start(input).is_some() => {
                // Inside the JSON data, same length: the FlatBuffer stays valid, the JSON does not.
                let start = json_start(input).unwrap_or_default();
                let at = start + rng.below((len - start).min(96));
                const JSONISH: &[u8] = b"{}[]\",:0123456789-.eE tfnul\\\x00\xff";
                input[at] = JSONISH[rng.below(JSONISH.len())];
                applied.push("json byte");
            }
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
                applied.push("bit flip");
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
                applied.push("byte overwrite");
            }
            2 if len > 0 => {
                let at = rng.below(len);
                input[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
                applied.push("interesting byte");
            }
            3 if len > 0 => {
                input.truncate(rng.below(len));
                applied.push("truncate");
            }
            4 => {
                let extra = 1 + rng.below(64);
                input.extend((0..extra).map(|_| rng.next() as u8));
                applied.push("extend");
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let keep = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(keep);
                input.extend_from_slice(&other[from..]);
                applied.push("splice");
            }
            6 if len >= 4 => {
                // Plant an offset or length: a u32 at a 4-aligned position.
                let at = rng.below(len / 4) * 4;
                let value = match rng.below(3) {
                    0 => INTERESTING_U32[rng.below(INTERESTING_U32.len())],
                    1 => (len as u32)
                        .wrapping_add(rng.below(9) as u32)
                        .wrapping_sub(4),
                    _ => rng.below(len * 2) as u32,
                };
                input[at..at + 4].copy_from_slice(&value.to_le_bytes());
                applied.push("plant u32");
            }
            7 if len >= 2 => {
                // Vtable entries are u16 offsets.
                let at = rng.below(len / 2) * 2;
                let value: u16 = match rng.below(3) {
                    0 => [0, 1, 4, 0x7fff, 0x8000, 0xffff][rng.below(6)],
                    1 => rng.below(64) as u16,
                    _ => rng.next() as u16,
                };
                input[at..at + 2].copy_from_slice(&value.to_le_bytes());
                applied.push("plant u16");
            }
            8 => {
                let at = rng.below(len + 1);
                let count = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..count).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
                applied.push("insert");
            }
            9 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(16)).min(len);
                input.drain(from..to);
                applied.push("delete");
            }
            10 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(32)).min(len);
                let chunk = input[from..to].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
                applied.push("duplicate");
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, rng.next() as u8);
                applied.push("insert byte");
            }
        }
    }
    applied
}

/// A host whose gateway answers every method in one of several ways, so that decodable commands
/// go through success and every failure mapping.
fn host_for(round: usize) -> ScriptedHost {
    let host = ScriptedHost::new();
    let flavour = round % 5;
    for method in METHODS {
        let canned = match flavour {
            0 => Canned::Ok(
                match method {
                    "Connect" => r#"{"id":"fz-1","status":"connected"}"#,
                    "Send" => r#"{"response":"cG9uZw=="}"#,
                    "List" => {
                        r#"{"connections":[{"id":"fz-1","url":"ws://x","status":"connected","topic":"t","instanceId":"i","tags":{"a":"b"}}]}"#
                    }
                    "GetTag" => r#"{"value":"v"}"#,
                    "GetTags" => r#"{"tags":{"a":"b"}}"#,
                    "Rotate" => r#"{"overlap":true,"duplicates":"3","tookMs":"120"}"#,
                    _ => "{}",
                }
                .to_owned(),
            ),
            1 => Canned::Fail(
                5,
                r#"{"code":"NOT_FOUND","message":"Connection not found"}"#.to_owned(),
            ),
            2 => Canned::Fail(503, "upstream connect error".to_owned()),
            3 => Canned::OkEmpty,
            _ => Canned::Ok("<html>not json</html>".to_owned()),
        };
        host.on(method, canned);
    }
    host
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(512).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 512 {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}

/// One fuzzing thread: `iterations` inputs from its own stream of the seed.
fn fuzz(seed: u64, thread: usize, iterations: usize, corpus: &[Vec<u8>]) -> (usize, usize) {
    let mut rng = Rng(seed ^ (thread as u64).wrapping_mul(0xa076_1d64_78bd_642f));
    let mut host = host_for(thread);
    let mut undecodable = 0;
    for i in 0..iterations {
        if i % 2_000 == 1_999 {
            // A fresh host now and then: bounded call logs, and every reply flavour.
            host = host_for(thread + i / 2_000);
        }
        let mut input = corpus[rng.below(corpus.len())].clone();
        let applied = if rng.chance(50) {
            vec!["none"]
        } else {
            mutate(&mut rng, &mut input, corpus)
        };
        let fail = |why: String| -> ! {
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fuzz-failure-{seed:#x}-{thread}-{i}.bin"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "FUZZ_SEED={seed:#x} thread {thread} iteration {i} (mutations {applied:?}): {why}\n\
                 input ({} bytes, saved to {}): {}",
                input.len(),
                path.display(),
                hex(&input)
            )
        };
        // An exact-size allocation, so that a read past `in_len` is a read past the buffer.
        let owned = input.clone().into_boxed_slice();
        let (rc, out) = plugin().call_raw(host.table(), owned.as_ptr(), owned.len() as i32);
        if rc != 0 {
            fail(format!("Process returned {rc}"));
        }
        let Some(out) = out else {
            fail("Process returned 0 without a reply".into())
        };
        if let Err(why) = process_check::check(&input, &out, &Facts::default()) {
            fail(why);
        }
        if expectation(&input).is_none() {
            undecodable += 1;
        }
        let (allocated, freed) = host.buffers();
        if allocated != freed {
            fail(format!(
                "{allocated} gateway buffers handed out, {freed} freed"
            ));
        }
        for call in host.take_calls() {
            if call.service != "websocketmanager" || !METHODS.contains(&call.method.as_str()) {
                fail(format!("gateway call {}.{}", call.service, call.method));
            }
        }
    }
    (iterations, undecodable)
}

#[test]
fn mutated_events_always_get_a_well_formed_reply() {
    let seed = env_number("FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let iterations = env_number("FUZZ_ITERATIONS").map_or(DEFAULT_ITERATIONS, |n| n as usize);
    eprintln!("process_fuzz: FUZZ_SEED={seed:#x} FUZZ_ITERATIONS={iterations}");
    let corpus = corpus();
    // The corpus itself must be what it claims: valid events that the plugin answers.
    let host = host_for(0);
    for (n, event) in corpus.iter().enumerate() {
        assert!(
            expectation(event).is_some(),
            "corpus entry {n} does not decode"
        );
        let (rc, out) = plugin().call_raw(host.table(), event.as_ptr(), event.len() as i32);
        assert_eq!(rc, 0);
        process_check::check(event, &out.expect("reply"), &Facts::default())
            .unwrap_or_else(|e| panic!("corpus entry {n}: {e}"));
    }
    assert!(
        host.calls().len() >= 17,
        "the corpus should reach the gateway"
    );

    let per_thread = iterations.div_ceil(THREADS);
    let results: Vec<(usize, usize)> = std::thread::scope(|s| {
        let corpus = &corpus;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| s.spawn(move || fuzz(seed, t, per_thread, corpus)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fuzz thread"))
            .collect()
    });
    let total: usize = results.iter().map(|r| r.0).sum();
    let undecodable: usize = results.iter().map(|r| r.1).sum();
    eprintln!("process_fuzz: {total} inputs, {undecodable} not decodable");
    assert!(total >= iterations);
    // The mutations must exercise both paths, or the test proves little.
    if iterations >= 1_000 {
        assert!(
            undecodable > total / 10,
            "only {undecodable} of {total} inputs were undecodable"
        );
        assert!(
            undecodable < total * 9 / 10,
            "{undecodable} of {total} inputs were undecodable"
        );
    }
}

#[test]
fn the_fuzz_rng_is_deterministic() {
    let (mut a, mut b) = (Rng(42), Rng(42));
    let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
    let ys: Vec<u64> = (0..8).map(|_| b.next()).collect();
    assert_eq!(xs, ys);
    assert_ne!(xs[0], xs[1]);
    // SplitMix64's first output for seed 0 (reference value).
    assert_eq!(Rng(0).next(), 0xe220_a839_7b1d_cdaf);
    let corpus = corpus();
    let mut r1 = Rng(7);
    let mut r2 = Rng(7);
    let mut x = corpus[3].clone();
    let mut y = corpus[3].clone();
    assert_eq!(
        mutate(&mut r1, &mut x, &corpus),
        mutate(&mut r2, &mut y, &corpus)
    );
    assert_eq!(x, y);
}
