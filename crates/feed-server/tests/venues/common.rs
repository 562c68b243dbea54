//! What the venue tests share: a client that drives a rule (pings, pongs, bursts) and records
//! what it saw, gzip both ways, handshake refusals.

pub(crate) use std::io::{BufRead, BufReader, Read};
pub(crate) use std::process::{Child, Command, Stdio};
pub(crate) use std::time::Duration;

pub(crate) use crate::support::*;
pub(crate) use feed_server::{FeedConfig, Venue};
pub(crate) use flate2::read::GzDecoder;
pub(crate) use futures_util::{SinkExt, StreamExt};
pub(crate) use tokio::time::{timeout, Instant, Interval};
pub(crate) use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What a client saw while [`drive`] ran.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Text messages (for htx, the inflated binary ones), with when they came.
    pub(crate) texts: Vec<(Duration, String)>,
    /// Binary messages that arrived, all of them.
    pub(crate) binaries: usize,
    /// Text messages that arrived as text frames.
    pub(crate) raw_texts: usize,
    /// The server's close frame: code, reason, when.
    pub(crate) close: Option<(u16, String, Duration)>,
    /// The connection ended (after a close, or abruptly).
    pub(crate) ended: bool,
}

impl Seen {
    /// The `u` of every depth update, in order.
    pub(crate) fn seqs(&self) -> Vec<u64> {
        self.texts
            .iter()
            .filter(|(_, t)| t.contains("\"depthUpdate\""))
            .map(|(_, t)| seq(t))
            .collect()
    }

    /// Asserts frames came, numbered 1, 2, 3, ... without a gap; returns how many.
    pub(crate) fn assert_frames_in_sequence(&self) -> usize {
        let seqs = self.seqs();
        assert!(!seqs.is_empty(), "no frames: {self:?}");
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "frames out of sequence");
        seqs.len()
    }

    /// The texts that are not depth updates (replies, pings, notices).
    pub(crate) fn others(&self) -> Vec<&str> {
        self.texts
            .iter()
            .filter(|(_, t)| !t.contains("\"depthUpdate\""))
            .map(|(_, t)| t.as_str())
            .collect()
    }

    pub(crate) fn assert_open(&self) {
        assert!(
            self.close.is_none() && !self.ended,
            "the venue ended a connection that followed its rules: {:?}",
            self.close
        );
    }

    pub(crate) fn assert_closed(&self, code: u16, reason: &str, after: Duration) -> Duration {
        let Some((got_code, got_reason, at)) = &self.close else {
            panic!("no close frame; ended: {}", self.ended);
        };
        assert_eq!((*got_code, got_reason.as_str()), (code, reason));
        assert!(*at >= after, "closed too early, at {at:?}");
        *at
    }
}

pub(crate) fn gunzip(data: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(data)
        .read_to_string(&mut text)
        .expect("a gzip message holding UTF-8 text");
    text
}

pub(crate) fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("gzip");
    encoder.finish().expect("gzip")
}

pub(crate) async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A client and the moment just before it connected: the venue's clock starts at the handshake,
/// so times measured from here are never shorter than the server's.
pub(crate) struct Conn {
    pub(crate) ws: Client,
    pub(crate) since: Instant,
}

pub(crate) async fn open(url: &str) -> Conn {
    let since = Instant::now();
    Conn {
        ws: connect(url).await,
        since,
    }
}

/// Runs one client until `within` after it connected (or until the connection ends): every
/// `every` it sends what `on_tick(n)` gives (n = 0, 1, ...), and it answers each text it reads
/// with what `answer` gives. With `gzip`, binary messages are inflated and read as text.
pub(crate) async fn drive(
    conn: &mut Conn,
    within: Duration,
    every: Option<Duration>,
    gzip: bool,
    mut on_tick: impl FnMut(u64) -> Vec<Message>,
    mut answer: impl FnMut(&str, u64) -> Option<Message>,
) -> Seen {
    let Conn { ws: client, since } = conn;
    let started = *since;
    let deadline = started + within;
    let mut interval = every.map(|every| {
        let mut interval = tokio::time::interval(every);
        // A late tick must not make a burst: the pacing is what the rate limit tests check.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut ticks = 0;
    let mut answers = 0;
    let mut seen = Seen::default();
    loop {
        let event = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return seen,
            _ = tick(&mut interval) => None,
            message = client.next() => Some(message),
        };
        let message = match event {
            None => {
                for message in on_tick(ticks) {
                    // A send after the server closed fails; the close is what the test checks.
                    let _ = client.send(message).await;
                }
                ticks += 1;
                continue;
            }
            Some(Some(Ok(message))) => message,
            Some(Some(Err(_))) | Some(None) => {
                seen.ended = true;
                return seen;
            }
        };
        let text = match message {
            Message::Text(text) => {
                seen.raw_texts += 1;
                text.as_str().to_owned()
            }
            Message::Binary(data) => {
                seen.binaries += 1;
                if !gzip {
                    continue;
                }
                gunzip(&data)
            }
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                seen.close = Some((code, reason, started.elapsed()));
                continue;
            }
            _ => continue,
        };
        if let Some(reply) = answer(&text, answers) {
            answers += 1;
            let _ = client.send(reply).await;
        }
        seen.texts.push((started.elapsed(), text));
    }
}

pub(crate) fn none(_: u64) -> Vec<Message> {
    Vec::new()
}

pub(crate) fn no_answer(_: &str, _: u64) -> Option<Message> {
    None
}

/// A bound for a close that is due after a few hundred ms: generous, for a loaded machine.
pub(crate) const CLOSE_BOUND: Duration = Duration::from_secs(5);

pub(crate) async fn handshake_error(url: &str) -> (u16, String) {
    match timeout(LONG, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect attempt hung")
    {
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        other => panic!("expected an HTTP rejection, got {other:?}"),
    }
}
