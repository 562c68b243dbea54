//! libFuzzer target: the input is a gateway script plus a CloudEvent for the plugin's real `Process`
//! export (format and checks: fuzz/checks/process.rs, shared with the stable corpus replay).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The scripted host the checks call `Process` through (`crate::host`), shared with the tests.
#[path = "../../tests/support/host.rs"]
mod host;

#[path = "../checks/process.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = check::run(data) {
        panic!("process contract violated: {why}");
    }
});
