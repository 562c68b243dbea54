//! The packer end to end: what lands in worker.zip, that it is reproducible, and that bad inputs are
//! refused with a message a build log reader can act on.

mod common;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo_root, TempDir};
use worker_pack::{PackOptions, DEFAULT_PACKAGE_ID};
use zip::{CompressionMethod, DateTime, ZipArchive};

const NUSPEC: &str = "Virtufin.Worker.WebSocketManagerController.nuspec";
const LIB_ENTRY: &str = "runtimes/linux-x64/native/libcontroller.so";

/// Stand-in library bytes: compressible and long enough to exercise deflate.
fn fake_library(seed: &str) -> Vec<u8> {
    let mut bytes = b"\x7fELF fake controller ".to_vec();
    for i in 0..2000 {
        bytes.extend_from_slice(format!("{seed}:{i};").as_bytes());
    }
    bytes
}

/// A temp folder holding `libcontroller.so` and a copy of the repository's manifest.json.
struct Fixture {
    dir: TempDir,
    lib: PathBuf,
    manifest: PathBuf,
}

impl Fixture {
    fn new(label: &str) -> Fixture {
        let dir = TempDir::new(label);
        let lib = dir.write("libcontroller.so", fake_library("a"));
        let manifest_bytes = std::fs::read(repo_root().join("manifest.json")).unwrap();
        let manifest = dir.write("manifest.json", manifest_bytes);
        Fixture { dir, lib, manifest }
    }

    fn options(&self) -> PackOptions {
        PackOptions::new(&self.lib, &self.manifest, "linux-x64")
    }
}

fn entries(zip_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut contents = Vec::new();
            file.read_to_end(&mut contents).unwrap();
            (file.name().unwrap().into_owned(), contents)
        })
        .collect()
}

fn nuspec_text(zip_bytes: &[u8]) -> String {
    let (_, contents) = entries(zip_bytes)
        .into_iter()
        .find(|(name, _)| name.ends_with(".nuspec"))
        .expect("a nuspec entry");
    String::from_utf8(contents).unwrap()
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn run_cli(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_worker-pack"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn archive_holds_nuspec_manifest_and_library_sorted_by_name() {
    let fx = Fixture::new("entries");
    let bytes = worker_pack::build(&fx.options()).unwrap();
    let found = entries(&bytes);

    let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, [NUSPEC, "manifest.json", LIB_ENTRY]);
    assert_eq!(
        found[1].1,
        std::fs::read(repo_root().join("manifest.json")).unwrap()
    );
    assert_eq!(
        String::from_utf8(found[1].1.clone()).unwrap().trim(),
        r#"{"abi_version": 1, "library": "controller"}"#
    );
    assert_eq!(found[2].1, fake_library("a"));
}

#[test]
fn entries_have_fixed_time_mode_and_deflate() {
    let fx = Fixture::new("meta");
    let bytes = worker_pack::build(&fx.options()).unwrap();
    let mut archive = ZipArchive::new(Cursor::new(&bytes)).unwrap();
    for i in 0..archive.len() {
        let file = archive.by_index(i).unwrap();
        let name = file.name().unwrap().into_owned();
        assert_eq!(file.compression(), CompressionMethod::Deflated, "{name}");
        assert_eq!(file.last_modified(), Some(DateTime::default()), "{name}");
        assert_eq!(file.unix_mode(), Some(0o100644), "{name}");
        assert!(file.is_file());
    }
}

#[test]
fn raw_headers_carry_dos_epoch_and_no_extra_fields() {
    let fx = Fixture::new("raw");
    let bytes = worker_pack::build(&fx.options()).unwrap();

    // Local file headers, back to back from offset 0.
    let mut at = 0;
    let mut locals = 0;
    while u32_at(&bytes, at) == 0x0403_4b50 {
        assert_eq!(u16_at(&bytes, at + 6) & 0x0008, 0, "no data descriptor");
        assert_eq!(u16_at(&bytes, at + 10), 0, "DOS time 00:00:00");
        assert_eq!(u16_at(&bytes, at + 12), (1 << 5) | 1, "DOS date 1980-01-01");
        let compressed = u32_at(&bytes, at + 18) as usize;
        let name_len = u16_at(&bytes, at + 26) as usize;
        assert_eq!(u16_at(&bytes, at + 28), 0, "local extra field length");
        at += 30 + name_len + compressed;
        locals += 1;
    }
    assert_eq!(locals, 3);

    // Central directory entries follow the data.
    let mut centrals = 0;
    while u32_at(&bytes, at) == 0x0201_4b50 {
        assert_eq!(bytes[at + 5], 3, "made by: Unix");
        let name_len = u16_at(&bytes, at + 28) as usize;
        let extra_len = u16_at(&bytes, at + 30) as usize;
        let comment_len = u16_at(&bytes, at + 32) as usize;
        assert_eq!(extra_len, 0, "central extra field length");
        assert_eq!(comment_len, 0);
        at += 46 + name_len + extra_len + comment_len;
        centrals += 1;
    }
    assert_eq!(centrals, 3);
    assert_eq!(u32_at(&bytes, at), 0x0605_4b50, "end of central directory");
}

#[test]
fn nuspec_declares_the_four_virtufin_elements() {
    let fx = Fixture::new("nuspec");
    let xml = nuspec_text(&worker_pack::build(&fx.options()).unwrap());
    for element in [
        "<virtufinAbiVersion>1</virtufinAbiVersion>",
        "<virtufinLibrary>controller</virtufinLibrary>",
        "<virtufinEntryPoint>Process</virtufinEntryPoint>",
        "<virtufinFreeResult>FreeResult</virtufinFreeResult>",
        &format!("<id>{DEFAULT_PACKAGE_ID}</id>"),
        "<version>0.1.0</version>",
        "<authors>Virtufin</authors>",
        "<description>",
    ] {
        assert!(xml.contains(element), "missing {element} in\n{xml}");
    }
    let metadata = &xml[xml.find("<metadata>").unwrap()..xml.find("</metadata>").unwrap()];
    assert!(
        metadata.contains("<virtufinFreeResult>"),
        "inside <metadata>"
    );
}

#[test]
fn version_and_package_id_reach_the_nuspec_and_its_file_name() {
    let fx = Fixture::new("ids");
    let mut options = fx.options();
    options.version = "1.2.3-beta.1".into();
    options.package_id = "Acme.Worker".into();
    let bytes = worker_pack::build(&options).unwrap();
    assert_eq!(entries(&bytes)[0].0, "Acme.Worker.nuspec");
    let xml = nuspec_text(&bytes);
    assert!(xml.contains("<id>Acme.Worker</id>"), "{xml}");
    assert!(xml.contains("<version>1.2.3-beta.1</version>"), "{xml}");
}

#[test]
fn macos_and_windows_rids_use_their_library_names() {
    let fx = Fixture::new("os");
    for (rid, file) in [
        ("osx-arm64", "libcontroller.dylib"),
        ("win-x64", "controller.dll"),
    ] {
        let lib = fx.dir.write(file, fake_library(rid));
        let bytes = worker_pack::build(&PackOptions::new(&lib, &fx.manifest, rid)).unwrap();
        let found = entries(&bytes);
        assert_eq!(found[2].0, format!("runtimes/{rid}/native/{file}"));
        assert_eq!(found[2].1, fake_library(rid));
    }
}

#[test]
fn building_twice_gives_identical_bytes() {
    let fx = Fixture::new("twice");
    let first = worker_pack::build(&fx.options()).unwrap();
    let second = worker_pack::build(&fx.options()).unwrap();
    assert_eq!(first, second);

    // The same holds across processes, with input files touched in between (mtimes must not leak in).
    let out_a = fx.dir.path().join("a/worker.zip");
    let out_b = fx.dir.path().join("b/worker.zip");
    let args = |out: &Path| {
        [
            "--lib".into(),
            fx.lib.clone().into_os_string(),
            "--manifest".into(),
            fx.manifest.clone().into_os_string(),
            "--rid".into(),
            "linux-x64".into(),
            "--out".into(),
            out.as_os_str().to_owned(),
        ]
    };
    let run = |out: &Path| {
        let args = args(out);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let output = run_cli(&refs);
        assert!(output.status.success(), "{output:?}");
        std::fs::read(out).unwrap()
    };
    let a = run(&out_a);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for input in [&fx.lib, &fx.manifest] {
        let file = std::fs::File::options().write(true).open(input).unwrap();
        file.set_modified(later).unwrap();
    }
    let b = run(&out_b);
    assert_eq!(a, b);
    assert_eq!(a, first);
}

#[test]
fn a_different_library_changes_the_bytes() {
    let fx = Fixture::new("differ");
    let before = worker_pack::build(&fx.options()).unwrap();
    std::fs::write(&fx.lib, fake_library("b")).unwrap();
    let after = worker_pack::build(&fx.options()).unwrap();
    assert_ne!(before, after);
    assert_eq!(entries(&after)[2].1, fake_library("b"));
}

#[test]
fn bad_manifests_are_rejected_with_a_clear_message() {
    let fx = Fixture::new("badmanifest");
    let cases = [
        ("{\"abi_version\": 1,", "is not valid JSON"),
        ("[1]", "expected a JSON object"),
        (r#"{"library": "controller"}"#, "missing \"abi_version\""),
        (
            r#"{"abi_version": 2, "library": "controller"}"#,
            "\"abi_version\" is 2, but the controller implements ABI version 1",
        ),
        (
            r#"{"abi_version": "1", "library": "controller"}"#,
            "\"abi_version\" must be an integer",
        ),
        (r#"{"abi_version": 1}"#, "missing \"library\""),
        (
            r#"{"abi_version": 1, "library": "../evil"}"#,
            "may only use A-Z a-z 0-9 _ . -",
        ),
    ];
    for (json, expected) in cases {
        std::fs::write(&fx.manifest, json).unwrap();
        let err = worker_pack::build(&fx.options()).unwrap_err().to_string();
        assert!(err.contains(expected), "{json}: {err}");
        assert!(err.contains("manifest.json"), "names the file: {err}");
    }

    // A manifest for another library does not match libcontroller.so.
    std::fs::write(&fx.manifest, r#"{"abi_version": 1, "library": "other"}"#).unwrap();
    let err = worker_pack::build(&fx.options()).unwrap_err().to_string();
    assert!(
        err.contains("is named 'libcontroller.so'") && err.contains("require 'libother.so'"),
        "{err}"
    );
}

#[test]
fn library_name_must_match_the_rid_platform() {
    let fx = Fixture::new("ridlib");
    let err = worker_pack::build(&PackOptions::new(&fx.lib, &fx.manifest, "osx-arm64"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("require 'libcontroller.dylib'"), "{err}");
}

#[test]
fn missing_inputs_and_bad_flags_are_rejected() {
    let fx = Fixture::new("missing");
    let mut options = fx.options();
    options.library = fx.dir.path().join("nope/libcontroller.so");
    let err = worker_pack::build(&options).unwrap_err().to_string();
    assert!(err.starts_with("cannot read library '"), "{err}");

    let mut options = fx.options();
    options.manifest = fx.dir.path().join("absent.json");
    let err = worker_pack::build(&options).unwrap_err().to_string();
    assert!(err.starts_with("cannot read manifest '"), "{err}");

    let mut options = fx.options();
    options.rid = "linux_x64".into();
    let err = worker_pack::build(&options).unwrap_err().to_string();
    assert!(err.starts_with("unknown rid 'linux_x64'"), "{err}");

    let mut options = fx.options();
    options.version = "latest".into();
    let err = worker_pack::build(&options).unwrap_err().to_string();
    assert!(err.starts_with("invalid version"), "{err}");

    let mut options = fx.options();
    options.package_id = "bad id".into();
    let err = worker_pack::build(&options).unwrap_err().to_string();
    assert!(err.starts_with("invalid package id"), "{err}");
}

#[test]
fn cli_exits_1_with_error_prefix_and_writes_nothing_on_failure() {
    let fx = Fixture::new("cli");
    std::fs::write(
        &fx.manifest,
        r#"{"abi_version": 3, "library": "controller"}"#,
    )
    .unwrap();
    let out = fx.dir.path().join("out/worker.zip");
    let output = run_cli(&[
        "--lib".as_ref(),
        fx.lib.as_os_str(),
        "--manifest".as_ref(),
        fx.manifest.as_os_str(),
        "--rid=linux-x64".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: manifest '"), "{stderr}");
    assert!(stderr.contains("\"abi_version\" is 3"), "{stderr}");
    assert!(!out.exists());

    for (args, expected) in [
        (vec!["--bogus"], "error: unknown argument '--bogus'"),
        (vec!["--lib"], "error: --lib needs a value"),
        (
            vec!["--rid", "a", "--rid", "b"],
            "error: --rid given more than once",
        ),
        (vec!["--rid", "linux-x64"], "error: missing --lib"),
    ] {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let output = run_cli(&refs);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with(expected), "{args:?}: {stderr}");
    }

    let help = run_cli(&["--help".as_ref()]);
    assert!(help.status.success());
    assert!(String::from_utf8(help.stdout)
        .unwrap()
        .starts_with("usage: worker-pack"));
}
