//! The fuzz corpus on the stable toolchain: every file of `fuzz/corpus/process/` and
//! `fuzz/corpus/correlation/` goes through exactly the checks the libFuzzer targets apply (the same
//! source files, included below), so `scripts/test.sh` keeps what the fuzzer found fixed without
//! nightly or libFuzzer. A missing or empty corpus directory is a failure, not a skip.
//!
//! The named seeds (`seed-*`: every command of SPEC §3, gateway failures, odd hosts; correlation
//! sequences) are made by `fuzz/checks/seeds.rs`, so that they stay in the corpus whatever
//! `cargo fuzz cmin` drops; this test checks that they are there, and
//! `cargo run --example fuzz_seeds` (re)writes them.

mod support;

#[path = "../fuzz/checks/correlation.rs"]
mod correlation_check;
#[path = "../fuzz/checks/process.rs"]
mod process_check;
#[path = "../fuzz/checks/seeds.rs"]
mod seeds;

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::json;
// The process checks call `Process` through `crate::host`, the tests' scripted host.
use support::host;
use support::Event;

/// Every file of `target`'s corpus, sorted by name; panics when the directory is missing or empty.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds::corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "fuzz corpus {} cannot be read ({e}); it is committed with the fuzz targets",
            dir.display()
        )
    });
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("corpus directory entry").path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("corpus file {}: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                bytes,
            )
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "fuzz corpus {} is empty; it is committed with the fuzz targets",
        dir.display()
    );
    files
}

/// Feeds every corpus file of `target` to `run`; fails naming each file that breaks a check.
fn replay(target: &str, run: fn(&[u8]) -> Result<(), String>) -> usize {
    let files = corpus(target);
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        match catch_unwind(AssertUnwindSafe(|| run(bytes))) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{target}/{name}: {why}")),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{target}/{name}: panicked: {what}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files of fuzz/corpus/{target} break the fuzz target's checks:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    files.len()
}

#[test]
fn the_process_corpus_passes_the_fuzz_checks() {
    let n = replay("process", process_check::run);
    eprintln!("fuzz_corpus: {n} process inputs replayed");
}

#[test]
fn the_correlation_corpus_passes_the_fuzz_checks() {
    let n = replay("correlation", correlation_check::run);
    eprintln!("fuzz_corpus: {n} correlation inputs replayed");
}

#[test]
fn every_named_seed_is_in_the_corpus() {
    for (target, seeds) in seeds::all() {
        let corpus = corpus(target);
        for (name, bytes) in seeds {
            let found = corpus.iter().find(|(n, _)| *n == name);
            assert!(
                found.is_some_and(|(_, b)| *b == bytes),
                "fuzz/corpus/{target}/{name} is missing or stale; run \
                 `cargo run --example fuzz_seeds`"
            );
        }
    }
}

/// The checks themselves can fail: bytes that are no reply, the reply of another request and frames
/// without a top-level id are refused, so a clean replay means something.
#[test]
fn the_checks_refuse_broken_replies() {
    let event = Event::json(&json!({"command": "list"})).encode();
    let facts = process_check::Facts::default();
    assert!(process_check::check(&event, b"not a flatbuffer", &facts).is_err());
    // The right shape, but the reply of another request (no correlation id where one is due).
    let with_correlation = Event::json(&json!({"command": "list"}))
        .ext("correlationid", "c-1")
        .encode();
    let (rc, reply) = {
        let host = support::ScriptedHost::new();
        let (rc, reply) =
            host::Plugin::linked().call_raw(host.table(), event.as_ptr(), event.len() as i32);
        (rc, reply.expect("a reply"))
    };
    assert_eq!(rc, 0);
    assert!(process_check::check(&event, &reply, &facts).is_ok());
    let err = process_check::check(&with_correlation, &reply, &facts).unwrap_err();
    assert!(err.contains("extensions"), "{err}");

    // The correlation model reads only a JSON object's own, single "id".
    assert_eq!(
        correlation_check::text_id(r#"{"x":1,"id":"abc"}"#).as_deref(),
        Some("abc")
    );
    assert_eq!(correlation_check::text_id(r#"{"data":{"id":"abc"}}"#), None);
    assert_eq!(correlation_check::text_id(r#"{"id":"a","id":"a"}"#), None);
    assert_eq!(correlation_check::text_id(r#"["abc"]"#), None);
}
