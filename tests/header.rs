//! `include/controller.h` is what C hosts compile against: a small C11 program that includes it must
//! build warning-free, see the ABI's struct layout, link against the built library and call both
//! exports; the library must export `Process` and `FreeResult` as dynamic symbols.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "controller.h"

_Static_assert(sizeof(VirtufinHost) == 40, "VirtufinHost is 40 bytes");
_Static_assert(offsetof(VirtufinHost, engine_ptr) == 0, "engine_ptr at 0");
_Static_assert(offsetof(VirtufinHost, abi_version) == 8, "abi_version at 8");
_Static_assert(offsetof(VirtufinHost, log) == 16, "log at 16");
_Static_assert(offsetof(VirtufinHost, gateway_call) == 24, "gateway_call at 24");
_Static_assert(offsetof(VirtufinHost, free_response) == 32, "free_response at 32");
_Static_assert(VIRTUFIN_ABI_VERSION == 1, "ABI version 1");
_Static_assert(VIRTUFIN_OK == 0, "VIRTUFIN_OK is 0");
_Static_assert(VIRTUFIN_ERR_NULL_ARGUMENT == 1, "VIRTUFIN_ERR_NULL_ARGUMENT is 1");

/* Callbacks of exactly the documented signatures must fit the table without casts. */
static void host_log(void *ctx, int32_t level, const char *msg) {
    (void)ctx; (void)level; (void)msg;
}

static int32_t host_gateway_call(void *ctx, const char *service, const char *method,
                                 const uint8_t *req, int32_t req_len,
                                 uint8_t **resp, int32_t *resp_len) {
    (void)ctx; (void)service; (void)method; (void)req; (void)req_len;
    *resp = NULL;
    *resp_len = 0;
    return 1;
}

static void host_free_response(void *ctx, uint8_t *resp) {
    (void)ctx; (void)resp;
}

int main(void) {
    uint8_t sentinel = 0;
    uint8_t *out = &sentinel;
    int32_t len = -1;
    int32_t rc = Process(NULL, NULL, 0, &out, &len);
    if (rc != VIRTUFIN_ERR_NULL_ARGUMENT) {
        fprintf(stderr, "Process(NULL host) returned %d\n", (int)rc);
        return 1;
    }
    if (out != NULL || len != 0) {
        fprintf(stderr, "Process(NULL host) left out=%p len=%d\n", (void *)out, (int)len);
        return 2;
    }
    FreeResult(NULL);

    /* A filled-in table: an empty input still gets a (BAD_REQUEST) reply to free. */
    const VirtufinHost host = {
        .engine_ptr = NULL,
        .abi_version = VIRTUFIN_ABI_VERSION,
        .log = host_log,
        .gateway_call = host_gateway_call,
        .free_response = host_free_response,
    };
    rc = Process(&host, NULL, 0, &out, &len);
    if (rc != VIRTUFIN_OK || out == NULL || len <= 0) {
        fprintf(stderr, "Process(empty input) returned %d, len %d\n", (int)rc, (int)len);
        return 3;
    }
    FreeResult(out);
    puts("ok");
    return 0;
}
"#;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the test's temporary directory");
    dir
}

fn tool_exists(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[test]
fn c_program_compiles_against_the_header_links_and_runs() {
    assert!(
        tool_exists("cc"),
        "no C compiler `cc` on PATH (rustc needs one to link, so it should be there)"
    );
    let lib = support::lib_path();
    let lib_dir = lib.parent().expect("library directory");
    let dir = work_dir("header");
    let source = dir.join("host.c");
    let program = dir.join("host");
    std::fs::write(&source, PROGRAM).expect("write host.c");

    let compile = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lcontroller")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .expect("run cc");
    assert!(
        compile.status.success(),
        "cc failed ({}):\n{}{}",
        compile.status,
        String::from_utf8_lossy(&compile.stdout),
        String::from_utf8_lossy(&compile.stderr)
    );

    let run = Command::new(&program).output().expect("run the C host");
    assert!(
        run.status.success(),
        "the C host failed ({}):\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "ok\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn library_exports_process_and_free_result() {
    if !tool_exists("nm") {
        eprintln!("nm not found; skipping the dynamic symbol check");
        return;
    }
    let lib = support::lib_path();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("run nm");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let symbols = String::from_utf8_lossy(&out.stdout);
    for export in ["Process", "FreeResult"] {
        let found = symbols.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            matches!(fields.as_slice(), [.., kind, name] if *name == export && *kind == "T")
        });
        assert!(
            found,
            "{export} is not an exported function of {}:\n{symbols}",
            lib.display()
        );
    }
}

#[test]
fn header_constants_match_the_crate() {
    let header = std::fs::read_to_string(repo_root().join("include/controller.h"))
        .expect("read include/controller.h");
    let define = |name: &str| -> i32 {
        header
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix("#define ")?.strip_prefix(name)?;
                rest.strip_prefix(' ')?.trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("#define {name} missing from the header"))
    };
    assert_eq!(
        define("VIRTUFIN_ABI_VERSION"),
        controller::VIRTUFIN_ABI_VERSION
    );
    assert_eq!(define("VIRTUFIN_OK"), controller::VIRTUFIN_OK);
    assert_eq!(
        define("VIRTUFIN_ERR_NULL_ARGUMENT"),
        controller::VIRTUFIN_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        define("VIRTUFIN_ERR_ALLOCATION"),
        controller::VIRTUFIN_ERR_ALLOCATION
    );
    assert_eq!(
        define("VIRTUFIN_ERR_INTERNAL"),
        controller::VIRTUFIN_ERR_INTERNAL
    );
    for prototype in [
        "int32_t Process(const struct VirtufinHost *host,",
        "void FreeResult(uint8_t *result);",
    ] {
        assert!(header.contains(prototype), "header lacks {prototype:?}");
    }
}
