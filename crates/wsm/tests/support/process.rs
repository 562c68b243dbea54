//! Real `wsm serve` processes: started with the built binary, their addresses read from stdout,
//! and signals sent to them (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), as an operator or a crash would.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use tonic::transport::{Channel, Endpoint};
use wsm::api::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::api::proto::{ListRequest, WebSocketConnection};

use super::server::HANG;

pub struct WsmProcess {
    child: Child,
    pub http: String,
    pub grpc: String,
}

impl WsmProcess {
    /// `wsm serve` on free loopback ports, loopback connects allowed, then `extra`.
    pub fn spawn(extra: &[&str]) -> WsmProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsm"))
            .args(["serve", "--bind", "127.0.0.1", "-s", "0", "-g", "0"])
            .args(["--allow-private-networks", "--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wsm starts");
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
        }
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
