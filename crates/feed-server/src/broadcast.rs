//! Broadcast (venue-like) mode: like a real exchange, each stream name has ONE generator whose
//! frames every socket subscribed to that stream receives, byte for byte the same.
//!
//! - **Ids are global per stream.** The `n`th frame a stream's generator makes (1, 2, 3, ...
//!   for the life of the server process) carries `"U":n,"u":n`, or, id-less (`?ids=0`), the
//!   token [`token`]`(n)` in `"t"`. A socket that subscribes later starts at a higher `n`; ids
//!   never repeat or go backwards, also when the generator stops (its last socket left) and a
//!   later socket starts it again.
//! - **Byte-identical.** Each frame is encoded once per *variant* (path form `/ws` or `/stream`,
//!   `size`, `ids`) as a whole WebSocket frame and shared through a bounded
//!   [`tokio::sync::broadcast`] channel, so sockets of the same variant get the same bytes, and
//!   sockets of different variants get frames with the same `n` and `E`.
//! - **The generator runs while at least one socket is subscribed**, at the rate of the socket
//!   that started it (later sockets share that rate whatever their own `rate` says), and makes
//!   its first frame at once.
//! - **Lag.** A socket more than its channel's capacity behind (see
//!   [`FeedConfig::broadcast_buffer_bytes`](crate::FeedConfig::broadcast_buffer_bytes)) is closed
//!   with 1008 `too slow for the broadcast`, counted in
//!   [`FeedStats::broadcast_lag_closes`](crate::FeedStats::broadcast_lag_closes). A socket whose
//!   client does not read at all is noticed while its write waits; the write gets 2 s more to
//!   finish (then the close frame goes out) before the socket is dropped without one. A slow
//!   socket never slows the generator or the other sockets.
//!
//! [`token`] and [`untoken`] (and [`frame_u`], [`frame_token`], [`frame_id`]) are for tests
//! that count the frames of an id-less stream.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};

use crate::config::FrameForm;
use crate::frames::{self, DepthFrames, TradeFrames};
use crate::orders::{self, CLOSE_TIMEOUT};
use crate::pacer::Pacer;
use crate::shutdown;

/// The splitmix64 increment (the golden ratio); odd, so multiplying by it is a bijection.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX_1: u64 = 0xBF58_476D_1CE4_E5B9;
const MIX_2: u64 = 0x94D0_49BB_1331_11EB;

/// Stream names the server keeps generators and counters for, over its whole life; a stream
/// beyond that is not streamed (logged). Keeps a client's SUBSCRIBE list from growing the server
/// without bound.
pub const MAX_STREAMS: usize = 4096;
/// Most frames one generator makes in one turn (a very high rate catches up over several turns,
/// with the sockets' sessions running in between)...
const MAX_FRAMES_PER_TURN: u64 = 1024;
/// ... and at most this fraction of its smallest channel, so that a late turn cannot push a
/// socket that keeps up out of its channel.
const TURN_SHARE_OF_CAPACITY: usize = 4;
/// Frames per channel: at least this many...
const MIN_CAPACITY: usize = 4;
/// ... and at most this many.
const MAX_CAPACITY: usize = 65_536;
/// How often a socket waiting for its write checks whether it fell behind its broadcast.
const LAG_CHECK: Duration = Duration::from_millis(50);
/// The reason of the close for a socket that fell behind.
pub const LAG_REASON: &str = "too slow for the broadcast";

/// The id-less token of a stream's `n`th frame: 16 lowercase hex digits of a bijective mix of
/// `n` (the `n`th output of splitmix64 seeded with 0), so consecutive frames look unrelated but
/// [`untoken`] maps each back to `n`.
pub fn token(n: u64) -> String {
    format!("{:016x}", mix(n))
}

/// The inverse of [`token`]: the frame number a token stands for; `None` unless `token` is
/// exactly 16 hex digits.
pub fn untoken(token: &str) -> Option<u64> {
    if token.len() != 16 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(token, 16).ok().map(unmix)
}

/// The id `u` of a depth update frame, bare or combined (`{"stream":..,"data":{..}}`); `None` for
/// anything else (an id-less frame, a reply, not JSON).
pub fn frame_u(frame: &str) -> Option<u64> {
    data(frame)?.get("u")?.as_u64()
}

/// The frame number behind the token `t` of an id-less frame, bare or combined; `None` for
/// anything else.
pub fn frame_token(frame: &str) -> Option<u64> {
    untoken(data(frame)?.get("t")?.as_str()?)
}

/// The stream's frame number of a broadcast frame with or without ids: [`frame_u`], else
/// [`frame_token`].
pub fn frame_id(frame: &str) -> Option<u64> {
    let data = data(frame)?;
    match data.get("u") {
        Some(u) => u.as_u64(),
        None => untoken(data.get("t")?.as_str()?),
    }
}

fn data(frame: &str) -> Option<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_str(frame).ok()?;
    if !value.is_object() {
        return None;
    }
    Some(match value.get_mut("data") {
        Some(data) => data.take(),
        None => value,
    })
}

fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_mul(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(MIX_1);
    z = (z ^ (z >> 27)).wrapping_mul(MIX_2);
    z ^ (z >> 31)
}

fn unmix(z: u64) -> u64 {
    let mut z = unshift(z, 31);
    z = unshift(z.wrapping_mul(inverse(MIX_2)), 27);
    z = unshift(z.wrapping_mul(inverse(MIX_1)), 30);
    z.wrapping_mul(inverse(GOLDEN))
}

/// The inverse of `x ^ (x >> shift)`.
fn unshift(y: u64, shift: u32) -> u64 {
    let mut x = y;
    for _ in 0..64 / shift {
        x = y ^ (x >> shift);
    }
    x
}

/// The multiplicative inverse of an odd number modulo 2^64 (Newton's iteration).
const fn inverse(a: u64) -> u64 {
    // Right to 3 bits for any odd `a`; each step doubles the correct bits.
    let mut x = a;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// One encoded broadcast frame: the whole WebSocket frame (header and payload), shared by every
/// socket of its variant.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub header_len: usize,
}

impl Encoded {
    /// The JSON text alone.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.header_len..]
    }
}

pub(crate) type Frame = Arc<Encoded>;

/// What distinguishes the bytes of two sockets' frames of the same stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    pub form: FrameForm,
    pub size: usize,
    pub ids: bool,
}

/// The generators and counters of every stream, shared by all sessions.
pub(crate) struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    streams: Mutex<HashMap<String, StreamState>>,
    buffer_bytes: usize,
    stop: watch::Receiver<bool>,
}

struct StreamState {
    /// The last frame number made (0 before the first frame).
    last: Arc<AtomicU64>,
    running: Option<Running>,
}

/// A stream's generator while it runs: its rate and one channel per variant with sockets.
struct Running {
    rate: u32,
    variants: HashMap<Variant, Channel>,
}

struct Channel {
    tx: broadcast::Sender<Frame>,
    capacity: usize,
}

impl Hub {
    pub(crate) fn new(buffer_bytes: usize, stop: watch::Receiver<bool>) -> Self {
        Self {
            inner: Arc::new(Inner {
                streams: Mutex::default(),
                buffer_bytes,
                stop,
            }),
        }
    }

    /// Subscribes to stream `name` in `variant`, starting its generator at `rate` if it is not
    /// running; `None` when the server already knows [`MAX_STREAMS`] other streams.
    pub(crate) fn subscribe(&self, name: &str, variant: Variant, rate: u32) -> Option<Feed> {
        let mut streams = self.inner.lock();
        if !streams.contains_key(name) && streams.len() >= MAX_STREAMS {
            return None;
        }
        let state = streams
            .entry(name.to_owned())
            .or_insert_with(|| StreamState {
                last: Arc::new(AtomicU64::new(0)),
                running: None,
            });
        let running = match &mut state.running {
            Some(running) => running,
            None => {
                tracing::debug!(stream = name, rate, "broadcast generator starts");
                tokio::spawn(generate(
                    self.inner.clone(),
                    name.to_owned(),
                    rate,
                    state.last.clone(),
                ));
                state.running.insert(Running {
                    rate,
                    variants: HashMap::new(),
                })
            }
        };
        let capacity = self.inner.capacity(variant);
        let rx = running
            .variants
            .entry(variant)
            .or_insert_with(|| Channel {
                tx: broadcast::channel(capacity).0,
                capacity,
            })
            .tx
            .subscribe();
        Some(Feed {
            name: name.to_owned(),
            rx,
            capacity,
        })
    }

    /// The frames each stream's generator has made so far (its last frame number).
    pub(crate) fn generated(&self) -> BTreeMap<String, u64> {
        self.inner
            .lock()
            .iter()
            .map(|(name, state)| (name.clone(), state.last.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, StreamState>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames a channel of `variant` holds: at most `buffer_bytes` worth, rounded down to a
    /// power of two (tokio's channel allocates one anyway, so "more than capacity behind" is
    /// exactly a lag).
    fn capacity(&self, variant: Variant) -> usize {
        // Natural frames are 150-200 bytes.
        let frame_len = if variant.size == 0 { 200 } else { variant.size };
        let frames = (self.buffer_bytes / frame_len).clamp(MIN_CAPACITY, MAX_CAPACITY);
        if frames.is_power_of_two() {
            frames
        } else {
            frames.next_power_of_two() / 2
        }
    }

    /// Puts the channels of `name` that still have sockets into `senders` and returns the
    /// smallest one's capacity; when none has, the generator is over (decided under the lock
    /// that subscribing takes, so no socket can join a generator that is ending): `None`.
    fn refresh(
        &self,
        name: &str,
        senders: &mut Vec<(Variant, broadcast::Sender<Frame>)>,
    ) -> Option<usize> {
        senders.clear();
        let mut streams = self.lock();
        let state = streams.get_mut(name)?;
        let running = state.running.as_mut()?;
        running
            .variants
            .retain(|_, channel| channel.tx.receiver_count() > 0);
        if running.variants.is_empty() {
            tracing::debug!(
                stream = name,
                rate = running.rate,
                "broadcast generator stops"
            );
            state.running = None;
            return None;
        }
        senders.extend(
            running
                .variants
                .iter()
                .map(|(v, channel)| (*v, channel.tx.clone())),
        );
        running.variants.values().map(|c| c.capacity).min()
    }

    fn end(&self, name: &str) {
        if let Some(state) = self.lock().get_mut(name) {
            state.running = None;
        }
    }
}

/// The frames of one variant of one stream.
enum Encoder {
    Depth(DepthFrames),
    Trade(TradeFrames),
}

impl Encoder {
    fn new(variant: Variant, name: &str) -> Self {
        if variant.ids {
            let mut frames = DepthFrames::new(variant.form, variant.size);
            frames.set_streams(&[name.to_owned()]);
            Encoder::Depth(frames)
        } else {
            Encoder::Trade(TradeFrames::new(variant.form, variant.size, name))
        }
    }

    fn encode(&mut self, n: u64, time_ms: u64) -> Frame {
        let mut bytes = Vec::new();
        match self {
            Encoder::Depth(frames) => {
                frames.set_last_seq(n - 1);
                frames.set_time_ms(time_ms);
                frames.encode_next(&mut bytes);
            }
            Encoder::Trade(frames) => frames.encode(&mut bytes, n, time_ms),
        }
        let header_len = frames::header_len(&bytes);
        Arc::new(Encoded { bytes, header_len })
    }
}

/// One stream's generator: frames at `rate` for every variant with sockets, until none is left
/// or the server stops.
async fn generate(inner: Arc<Inner>, name: String, rate: u32, last: Arc<AtomicU64>) {
    let mut stop = inner.stop.clone();
    let mut pacer = Pacer::new(rate, Instant::now());
    let mut encoders: HashMap<Variant, Encoder> = HashMap::new();
    let mut senders = Vec::new();
    loop {
        // The handle gone counts as a stop too.
        if *stop.borrow() || stop.has_changed().is_err() {
            break;
        }
        let Some(capacity) = inner.refresh(&name, &mut senders) else {
            return;
        };
        encoders.retain(|variant, _| senders.iter().any(|(v, _)| v == variant));
        let turn = (capacity / TURN_SHARE_OF_CAPACITY).max(1) as u64;
        let due = pacer.due(Instant::now()).min(turn.min(MAX_FRAMES_PER_TURN));
        let time_ms = unix_millis();
        for _ in 0..due {
            let n = last.load(Ordering::Relaxed) + 1;
            for (variant, tx) in &senders {
                let encoder = encoders
                    .entry(*variant)
                    .or_insert_with(|| Encoder::new(*variant, &name));
                // An error means no socket is left on this variant; the next turn drops it.
                let _ = tx.send(encoder.encode(n, time_ms));
            }
            last.store(n, Ordering::Relaxed);
        }
        pacer.sent(due);
        // The sessions get to run before the next turn, even when it is due at once.
        tokio::task::yield_now().await;
        tokio::select! {
            _ = shutdown::signalled(&mut stop) => break,
            _ = sleep_until(pacer.next_at()) => {}
        }
    }
    senders.clear();
    inner.end(&name);
}

/// A socket's subscription to one stream.
pub(crate) struct Feed {
    name: String,
    rx: broadcast::Receiver<Frame>,
    capacity: usize,
}

/// What a socket's next receive brought.
pub(crate) enum Incoming {
    Frame(Frame),
    /// The socket fell more than a channel's capacity behind.
    Lagged,
    /// A stream's generator ended (the server is stopping); its feed is gone.
    Closed,
}

/// The broadcast subscriptions of one socket.
pub(crate) struct Feeds {
    variant: Variant,
    rate: u32,
    feeds: Vec<Feed>,
    /// The feed [`try_recv`](Self::try_recv) looks at first (round robin).
    next: usize,
}

impl Feeds {
    pub(crate) fn new(variant: Variant, rate: u32) -> Self {
        Self {
            variant,
            rate,
            feeds: Vec::new(),
            next: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Follows exactly the streams `names`: keeps the feeds it has, subscribes to new names and
    /// leaves the others.
    pub(crate) fn set_streams(&mut self, hub: &Hub, names: &[String], connection: u64) {
        self.feeds.retain(|feed| names.contains(&feed.name));
        for name in names {
            if self.feeds.iter().any(|feed| &feed.name == name) {
                continue;
            }
            match hub.subscribe(name, self.variant, self.rate) {
                Some(feed) => self.feeds.push(feed),
                None => tracing::warn!(
                    connection,
                    stream = %name,
                    "the server already broadcasts {MAX_STREAMS} streams; this one is not streamed"
                ),
            }
        }
        self.next = 0;
    }

    /// The next frame of any feed (cancel safe).
    pub(crate) async fn recv(&mut self) -> Incoming {
        let (index, result) = match self.feeds.as_mut_slice() {
            [] => std::future::pending().await,
            [feed] => (0, feed.rx.recv().await),
            feeds => {
                let receives = feeds
                    .iter_mut()
                    .enumerate()
                    .map(|(i, feed)| Box::pin(async move { (i, feed.rx.recv().await) }));
                futures_util::future::select_all(receives).await.0
            }
        };
        self.incoming(index, result)
    }

    /// A frame that is already there, going round the feeds; `None` when no feed has one.
    pub(crate) fn try_recv(&mut self) -> Option<Incoming> {
        for _ in 0..self.feeds.len() {
            let index = self.next % self.feeds.len();
            self.next = index + 1;
            let result = match self.feeds[index].rx.try_recv() {
                Ok(frame) => Ok(frame),
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            return Some(self.incoming(index, result));
        }
        None
    }

    fn incoming(&mut self, index: usize, result: Result<Frame, RecvError>) -> Incoming {
        match result {
            Ok(frame) => Incoming::Frame(frame),
            Err(RecvError::Lagged(_)) => Incoming::Lagged,
            Err(RecvError::Closed) => {
                self.feeds.remove(index);
                Incoming::Closed
            }
        }
    }

    /// Whether the socket is more than a channel's capacity behind on some feed.
    pub(crate) fn lagging(&self) -> bool {
        self.feeds.iter().any(|feed| feed.rx.len() > feed.capacity)
    }

    /// Runs a socket write; if the socket falls behind meanwhile, `on_behind` is called (once)
    /// and the write gets [`CLOSE_TIMEOUT`] more. `Err` when it did not finish by then (the
    /// caller drops the socket, with a frame cut in half).
    pub(crate) async fn watch_lag<T>(
        &self,
        write: impl Future<Output = T>,
        mut on_behind: impl FnMut(),
    ) -> Result<T, ()> {
        tokio::pin!(write);
        let mut give_up: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                output = &mut write => return Ok(output),
                _ = sleep(LAG_CHECK), if give_up.is_none() => {
                    if self.lagging() {
                        on_behind();
                        give_up = Some(Instant::now() + CLOSE_TIMEOUT);
                    }
                }
                _ = orders::sleep_until_opt(give_up), if give_up.is_some() => return Err(()),
            }
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_16_hex_digits_and_map_back() {
        for n in [0, 1, 2, 3, 1000, u64::MAX / 3, u64::MAX] {
            let t = token(n);
            assert_eq!(t.len(), 16, "{t}");
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(untoken(&t), Some(n), "{t}");
        }
        assert_ne!(token(1), token(2));
        // splitmix64 seeded with 0: its first output.
        assert_eq!(token(1), "e220a8397b1dcdaf");
        for bad in [
            "",
            "123",
            "+123456789abcdef",
            "0123456789abcdeg",
            "0123456789abcdef0",
        ] {
            assert_eq!(untoken(bad), None, "{bad}");
        }
        let unique: std::collections::HashSet<String> = (1..10_000).map(token).collect();
        assert_eq!(unique.len(), 9_999);
    }

    #[test]
    fn frame_helpers_read_bare_and_combined_frames() {
        let t = token(7);
        assert_eq!(frame_u(r#"{"e":"depthUpdate","U":5,"u":5}"#), Some(5));
        assert_eq!(frame_u(r#"{"stream":"a","data":{"u":6}}"#), Some(6));
        assert_eq!(frame_u(r#"{"result":null,"id":1}"#), None);
        assert_eq!(frame_u("not json"), None);
        let combined = format!(r#"{{"stream":"a","data":{{"e":"trade","t":"{t}"}}}}"#);
        assert_eq!(frame_token(&combined), Some(7));
        assert_eq!(frame_id(&combined), Some(7));
        assert_eq!(frame_id(r#"{"u":9}"#), Some(9));
        assert_eq!(frame_id("[1]"), None);
    }

    #[test]
    fn capacities_are_powers_of_two_within_bounds() {
        let (_tx, stop) = watch::channel(false);
        let hub = Hub::new(8 << 20, stop);
        let variant = |size| Variant {
            form: FrameForm::Bare,
            size,
            ids: true,
        };
        assert_eq!(hub.inner.capacity(variant(65_536)), 128);
        assert_eq!(hub.inner.capacity(variant(1 << 20)), 8);
        assert_eq!(hub.inner.capacity(variant(0)), 32_768);
        assert_eq!(hub.inner.capacity(variant(3000)), 2048);
    }
}
