//! libFuzzer target: the input is a sequence of register/cancel/frame/echo/clear operations on
//! wsm's correlation matcher (format and checks: fuzz/checks/correlation.rs, shared with the stable
//! corpus replay).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/correlation.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = check::run(data) {
        panic!("correlation contract violated: {why}");
    }
});
