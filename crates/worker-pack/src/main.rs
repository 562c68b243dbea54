//! `worker-pack`: the command-line shell around the library. It only parses arguments; every rule
//! about the package lives in the library so the tests can reach it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use worker_pack::{PackOptions, DEFAULT_PACKAGE_ID, DEFAULT_VERSION};

const USAGE: &str = "\
usage: worker-pack --lib PATH --manifest PATH --rid RID --out PATH [--version V] [--package-id ID]

Writes a deterministic worker.zip for WorkManager's NativeDllEngine:
  <ID>.nuspec, manifest.json, runtimes/<RID>/native/<library file>

  --lib PATH         the built library (libcontroller.so, libcontroller.dylib or controller.dll)
  --manifest PATH    manifest.json ({\"abi_version\": 1, \"library\": \"controller\"})
  --rid RID          runtime identifier: linux-x64, linux-arm64, osx-arm64, osx-x64, win-x64, ...
  --out PATH         where to write the zip (parent folders are created)
  --version V        package version in the nuspec (default: the controller's, 0.1.0)
  --package-id ID    NuGet id and nuspec file name (default: Virtufin.Worker.WebSocketManagerController)
  -h, --help         show this help";

/// What the command line asked for.
enum Command {
    Help,
    Pack { options: PackOptions, out: PathBuf },
}

fn main() -> ExitCode {
    let result = parse(std::env::args_os().skip(1)).and_then(|command| match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Pack { options, out } => {
            worker_pack::write(&options, &out).map_err(|err| err.to_string())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts `--flag value` and `--flag=value`; each flag at most once.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut lib = None;
    let mut manifest = None;
    let mut rid = None;
    let mut out = None;
    let mut version = None;
    let mut package_id = None;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg
            .to_str()
            .ok_or_else(|| format!("argument {arg:?} is not valid UTF-8"))?;
        if text == "-h" || text == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(OsString::from(value))),
            _ => (text, None),
        };
        let slot = match flag {
            "--lib" => &mut lib,
            "--manifest" => &mut manifest,
            "--rid" => &mut rid,
            "--out" => &mut out,
            "--version" => &mut version,
            "--package-id" => &mut package_id,
            _ => return Err(format!("unknown argument '{text}'\n{USAGE}")),
        };
        let flag = flag.to_owned();
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?,
        };
        if slot.replace(value).is_some() {
            return Err(format!("{flag} given more than once"));
        }
    }

    let required = |value: Option<OsString>, flag: &str| {
        value.ok_or_else(|| format!("missing {flag}\n{USAGE}"))
    };
    let utf8 = |value: OsString, flag: &str| {
        value
            .into_string()
            .map_err(|value| format!("{flag} {value:?} is not valid UTF-8"))
    };
    let lib = required(lib, "--lib")?;
    let manifest = required(manifest, "--manifest")?;
    let rid = utf8(required(rid, "--rid")?, "--rid")?;
    let out = required(out, "--out")?;

    let mut options = PackOptions::new(lib, manifest, rid);
    options.version = match version {
        Some(v) => utf8(v, "--version")?,
        None => DEFAULT_VERSION.to_owned(),
    };
    options.package_id = match package_id {
        Some(id) => utf8(id, "--package-id")?,
        None => DEFAULT_PACKAGE_ID.to_owned(),
    };
    Ok(Command::Pack {
        options,
        out: out.into(),
    })
}
