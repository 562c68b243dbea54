//! Real `wsm serve` processes: started with the built binary, their addresses read from stdout,
//! and signals sent to them (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), as an operator or a crash would.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tonic::transport::{Channel, Endpoint};
use wsm::api::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::api::proto::{ListRequest, WebSocketConnection};

use super::server::HANG;

pub struct WsmProcess {
    child: Child,
    pub http: String,
    pub grpc: String,
    /// What it logged (stderr), when spawned with [`Spawn::capture_logs`].
    logs: Option<Arc<Mutex<String>>>,
}

/// How to start a `wsm serve` process beyond its flags.
#[derive(Debug, Clone, Default)]
pub struct Spawn {
    /// Keep stderr for [`WsmProcess::logs`] instead of passing it through.
    pub capture_logs: bool,
    /// `--log-level` (default warn).
    pub log_level: Option<&'static str>,
    /// The process's open-file limit, soft and hard (as `ulimit -n`).
    pub open_files: Option<u64>,
}

impl WsmProcess {
    /// `wsm serve` on free loopback ports, loopback connects allowed, then `extra`.
    pub fn spawn(extra: &[&str]) -> WsmProcess {
        WsmProcess::spawn_with(extra, &Spawn::default())
    }

    pub fn spawn_with(extra: &[&str], how: &Spawn) -> WsmProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsm"));
        command
            .args(["serve", "--bind", "127.0.0.1", "-s", "0", "-g", "0"])
            .args(["--allow-private-networks"])
            .args(["--log-level", how.log_level.unwrap_or("warn")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(if how.capture_logs {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        if let Some(limit) = how.open_files {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the struct passed in.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().expect("wsm starts");
        let logs = child.stderr.take().map(|stderr| {
            let logs = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut logs = sink.lock().unwrap_or_else(|e| e.into_inner());
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
            logs
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut grpc) = (None, None);
        while http.is_none() || grpc.is_none() {
            let line = lines
                .next()
                .expect("wsm prints its addresses before anything else")
                .expect("stdout reads");
            if let Some(addr) = line.strip_prefix("http listening on ") {
                http = Some(addr.to_owned());
            } else if let Some(addr) = line.strip_prefix("grpc listening on ") {
                grpc = Some(addr.to_owned());
            }
        }
        WsmProcess {
            child,
            http: http.unwrap_or_default(),
            grpc: grpc.unwrap_or_default(),
            logs,
        }
    }

    /// Everything it logged so far (empty unless spawned with `capture_logs`).
    pub fn logs(&self) -> String {
        self.logs
            .as_ref()
            .map(|logs| logs.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "signal {signal} reaches wsm");
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits (bounded) for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            if let Some(exit) = self.child.try_wait().expect("the child can be waited on") {
                return exit;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wsm did not exit within {HANG:?} of SIGTERM"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn client(&self) -> WebSocketManagerClient<Channel> {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("a valid endpoint")
            .connect_timeout(HANG)
            .timeout(HANG)
            .connect()
            .await
            .expect("the gRPC port accepts");
        WebSocketManagerClient::new(channel)
    }

    /// Every connection, as `List` on this instance shows them.
    pub async fn list(&self) -> Vec<WebSocketConnection> {
        self.client()
            .await
            .list(ListRequest::default())
            .await
            .expect("List")
            .into_inner()
            .connections
    }

    /// One unlabelled metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics has a body");
        super::server::metric(&text, name)
    }
}

impl Drop for WsmProcess {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(self.pid(), libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
