//! An upstream WebSocket server that records what each client's handshake carried (headers,
//! subprotocol offer) and the text messages it sent, and accepts the first subprotocol offered.
//! The feed server answers and streams; this one only listens.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// What one client sent.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Handshake headers, names lowercase.
    pub headers: Vec<(String, String)>,
    pub texts: Vec<String>,
}

impl Session {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    sessions: Arc<Mutex<Vec<Session>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the upstream");
        let addr = listener.local_addr().expect("the upstream's address");
        let sessions: Arc<Mutex<Vec<Session>>> = Arc::default();
        let recorded = Arc::clone(&sessions);
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, Arc::clone(&recorded)));
            }
        });
        Upstream {
            addr,
            sessions,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Every session so far, in handshake order.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(tcp: tokio::net::TcpStream, sessions: Arc<Mutex<Vec<Session>>>) {
    let mut headers = Vec::new();
    // The error type is tungstenite's `Callback` contract.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        for (name, value) in request.headers() {
            headers.push((
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
        let offer = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|first| first.trim().to_owned());
        if let Some(chosen) = offer {
            let value = HeaderValue::from_str(&chosen).expect("a token");
            response
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        Ok::<_, ErrorResponse>(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let index = {
        let mut sessions = sessions.lock().unwrap();
        sessions.push(Session {
            headers,
            texts: Vec::new(),
        });
        sessions.len() - 1
    };
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) => sessions.lock().unwrap()[index].texts.push(text.to_string()),
            Message::Close(_) => break,
            _ => {}
        }
    }
}
