//! The C host harness (`tests/harness/host_sim`) as the tests drive it: compiled once per test
//! process with the system C compiler, run against the built plugin, its replies read back as JSON.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;

use serde_json::Value;

use super::lib_path;

const CFLAGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-pthread"];

/// A scratch directory for this test process.
pub fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("controller-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    })
}

/// The gateway calls `host_sim --record FILE` wrote, as (service, method, JSON body).
pub fn recorded(path: &Path) -> Vec<(String, String, Value)> {
    std::fs::read_to_string(path)
        .expect("record file")
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let service = parts.next().unwrap().to_owned();
            let method = parts.next().expect("method").to_owned();
            let body = serde_json::from_str(parts.next().expect("body"))
                .unwrap_or_else(|e| panic!("recorded body {l:?}: {e}"));
            (service, method, body)
        })
        .collect()
}

/// Compiles `host_sim` once per test process.
pub fn host_sim() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness");
        let bin = work_dir().join("host_sim");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let out = Command::new(&cc)
            .args(CFLAGS)
            .args(["fb.c", "gateway.c", "host_sim.c", "-o"])
            .arg(&bin)
            .arg("-ldl")
            .current_dir(&src)
            .output()
            .unwrap_or_else(|e| panic!("running {cc}: {e}"));
        assert!(
            out.status.success(),
            "compiling the harness failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// Writes `text` to a file in the scratch directory.
pub fn write_file(name: &str, text: &str) -> PathBuf {
    let path = work_dir().join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// Runs `host_sim --lib <plugin> ARGS` (under `prefix`, e.g. valgrind, when given) to completion.
pub fn run(prefix: &[&str], args: &[&str]) -> Output {
    let lib = lib_path();
    let mut cmd = if let Some((first, rest)) = prefix.split_first() {
        let mut c = Command::new(first);
        c.args(rest).arg(host_sim());
        c
    } else {
        Command::new(host_sim())
    };
    cmd.arg("--lib").arg(&lib).args(args);
    cmd.output().expect("run host_sim")
}

/// The replies on stdout, one JSON document per line.
pub fn stdout_lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .expect("UTF-8 stdout")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("reply {l:?} is not JSON: {e}")))
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One worker instance for its whole life: a `host_sim --stream` process that takes one event at a
/// time on stdin, as WorkManager delivers them, so a later command can use an id an earlier reply
/// named. `--verbose` puts each reply's envelope (with its extensions) on stderr.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
}

/// How a worker ended: its exit status and everything it wrote on stderr.
pub struct WorkerExit {
    pub success: bool,
    pub stderr: String,
}

impl WorkerExit {
    /// The `correlationid` extension of each reply, in reply order (`None` for a reply without one).
    pub fn reply_correlation_ids(&self) -> Vec<Option<String>> {
        let mut ids = Vec::new();
        for line in self.stderr.lines() {
            if line.starts_with("reply id=") {
                ids.push(None);
            } else if let Some(value) = line.strip_prefix("  ext correlationid=") {
                if let Some(last) = ids.last_mut() {
                    *last = Some(value.to_owned());
                }
            }
        }
        ids
    }
}

impl Worker {
    /// Starts a worker whose gateway is `gateway` (`http://HOST:PORT` of a WSM, or `script:FILE`).
    pub fn start(gateway: &str) -> Worker {
        let mut child = Command::new(host_sim())
            .arg("--lib")
            .arg(lib_path())
            .args([
                "--gateway",
                gateway,
                "--stream",
                "--events",
                "-",
                "--verbose",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host_sim --stream");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Worker {
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// Delivers one event (`[@key=value ...] DATA`, the harness's line format) and returns the
    /// reply's `data`.
    pub fn call(&mut self, event: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("worker still open");
        writeln!(stdin, "{event}")
            .and_then(|()| stdin.flush())
            .expect("write an event to host_sim");
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("read a reply from host_sim");
        assert!(n > 0, "host_sim ended without a reply to {event}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
    }

    /// Ends the worker's input and waits for the process to exit.
    pub fn finish(mut self) -> WorkerExit {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for host_sim");
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        WorkerExit {
            success: status.success(),
            stderr,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
