//! A real `redis-server` for one test: its own loopback port and directory, no persistence,
//! killed when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server gets to answer PING.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);

/// A running `redis-server` (or a stopped one that can be restarted on the same port).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra configuration (`--name value` pairs) given on every start, after the defaults.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port with `--save "" --appendonly no` in a temporary
    /// directory, and waits until it answers PING.
    ///
    /// Panics if `redis-server` is not installed (`scripts/test.sh` installs it) or does not come up.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`start`](Self::start), with extra configuration given on every start and restart after the
    /// defaults (so it can override them), e.g. `["--key-load-delay", "50"]` to make a restart
    /// spend a while loading its data set, as a large production data set would.
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        let mut dir = tempfile::Builder::new()
            .prefix("wsm-redis-")
            .tempdir()
            .expect("creating a temporary directory for redis-server");
        // The port is free when we look; another process may take it before redis-server binds, so
        // try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                port,
                dir,
                child: None,
                extra: extra.clone(),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    dir = server.take_dir();
                }
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (it may still be starting).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server (SIGKILL: no shutdown work, like a crash). Its data is gone, except what an
    /// explicit `SAVE` wrote to its directory, which [`restart`](Self::restart) loads again; the
    /// port stays this server's.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty, or with what a `SAVE` left) and waits until
    /// it answers PING, which it does only once it has loaded its data; stops it first if it is
    /// running.
    pub fn restart(&mut self) {
        self.stop();
        // The old socket may linger briefly; retry until the port binds.
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("redis-server did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.stop();
        let placeholder = tempfile::tempdir().expect("creating a temporary directory");
        std::mem::replace(&mut self.dir, placeholder)
    }

    fn launch(&mut self) -> Result<(), String> {
        let dir = self.dir.path().to_path_buf();
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: install it (Debian/Ubuntu: apt-get install redis-server; \
                 scripts/test.sh installs it when run as root)"
            ),
            Err(e) => return Err(format!("spawning redis-server: {e}")),
        };
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if ping(self.port) {
                return Ok(());
            }
            if !self.is_running() {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                self.stop();
                return Err(format!("redis-server exited on port {}: {log}", self.port));
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "redis-server on port {} did not answer PING",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("finding a free loopback port")
}

/// Whether a Redis server answers `PING` with `+PONG` on the port.
fn ping(port: u16) -> bool {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
