//! The depth-update generator: Binance-like `depthUpdate` text frames with a per-connection
//! sequence number, encoded as complete WebSocket frames straight into the caller's batch buffer.
//!
//! Why whole frames: at max rate the per-message path of tungstenite (message, frame, copy into
//! its write buffer) cost more than making the update itself. A server-to-client frame is just a
//! 2-10 byte header (FIN + text opcode, unmasked, length) and the payload, so the session writes
//! batches of them to the socket itself, after flushing whatever tungstenite has queued.
//! [`DepthFrames::encode_payload_next`] gives the bare payload instead, for connections whose
//! frames must be transformed first (htx's gzip).

use crate::config::FrameForm;

/// Bytes of one price level: `["50000.12","1.234"]` (prices and quantities are fixed width).
const LEVEL_LEN: usize = 20;
/// First header byte of a final (unfragmented) text frame.
const FIN_TEXT: u8 = 0x81;

/// Generates the frames of one connection. `u` (and `U`) count 1, 2, 3, ... across all streams of
/// the connection, so a consumer can detect loss and reordering.
pub(crate) struct DepthFrames {
    form: FrameForm,
    size: usize,
    streams: Vec<StreamHead>,
    next_stream: usize,
    seq: u64,
    time_ms: u64,
}

/// The constant pieces of a frame for one stream name, JSON-escaped once.
struct StreamHead {
    name: String,
    /// Everything up to the value of `"E"`.
    head: Vec<u8>,
    /// From after `E` up to the value of `"U"`: `,"s":"BTCUSDT","U":`.
    symbol: Vec<u8>,
}

impl DepthFrames {
    pub(crate) fn new(form: FrameForm, size: usize) -> Self {
        Self {
            form,
            size,
            streams: Vec::new(),
            next_stream: 0,
            seq: 0,
            time_ms: 0,
        }
    }

    /// Replaces the streams the frames go round; an empty list means nothing to send.
    pub(crate) fn set_streams(&mut self, names: &[String]) {
        if self.streams.iter().map(|s| &s.name).eq(names.iter()) {
            return;
        }
        self.streams = names
            .iter()
            .map(|n| StreamHead::new(self.form, n))
            .collect();
        self.next_stream = 0;
    }

    pub(crate) fn has_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Makes the next frame's `u` (and `U`) `last + 1` (broadcast: the stream's global counter).
    pub(crate) fn set_last_seq(&mut self, last: u64) {
        self.seq = last;
    }

    /// Event time (`"E"`, ms since the Unix epoch) of the frames generated from now on.
    pub(crate) fn set_time_ms(&mut self, time_ms: u64) {
        self.time_ms = time_ms;
    }

    /// Appends the next frame (WebSocket header and payload) to `out`; `false` when there is
    /// no stream to send.
    pub(crate) fn encode_next(&mut self, out: &mut Vec<u8>) -> bool {
        self.encode(out, true)
    }

    /// Appends the next frame's payload alone (the JSON text, no WebSocket header) to `out`;
    /// `false` when there is no stream to send. Shares the sequence with
    /// [`encode_next`](Self::encode_next).
    pub(crate) fn encode_payload_next(&mut self, out: &mut Vec<u8>) -> bool {
        self.encode(out, false)
    }

    fn encode(&mut self, out: &mut Vec<u8>, header: bool) -> bool {
        let Some(stream) = self.streams.get(self.next_stream) else {
            return false;
        };
        self.next_stream = (self.next_stream + 1) % self.streams.len();
        self.seq += 1;
        let seq = self.seq;

        let mut time_buf = itoa::Buffer::new();
        let time = time_buf.format(self.time_ms).as_bytes();
        let mut seq_buf = itoa::Buffer::new();
        let seq_text = seq_buf.format(seq).as_bytes();

        const U_KEY: &[u8] = b",\"u\":";
        const BIDS_OPEN: &[u8] = b",\"b\":[";
        const ASKS_OPEN: &[u8] = b"],\"a\":[";
        let combined = self.form == FrameForm::Combined;
        // `]` ends the asks, `}` the update, and one more `}` the combined wrapper.
        let closing = 2 + usize::from(combined);
        let fixed = stream.head.len()
            + time.len()
            + stream.symbol.len()
            + 2 * seq_text.len()
            + U_KEY.len()
            + BIDS_OPEN.len()
            + ASKS_OPEN.len()
            + closing;
        let (bids, asks, pad) = if self.size == 0 {
            (1, 1, 0)
        } else {
            fit_levels(self.size.saturating_sub(fixed))
        };
        let total = fixed + levels_len(bids) + levels_len(asks) + pad;

        out.reserve(total + 10);
        if header {
            put_header(out, total);
        }
        let start = out.len();
        out.extend_from_slice(&stream.head);
        out.extend_from_slice(time);
        out.extend_from_slice(&stream.symbol);
        out.extend_from_slice(seq_text);
        out.extend_from_slice(U_KEY);
        out.extend_from_slice(seq_text);
        out.extend_from_slice(BIDS_OPEN);
        let mid = mid_price_cents(seq);
        for level in 0..bids {
            if level > 0 {
                out.push(b',');
            }
            put_level(out, mid - 1 - (level % 1000) as u32, seq, level);
        }
        out.extend_from_slice(ASKS_OPEN);
        for level in 0..asks {
            if level > 0 {
                out.push(b',');
            }
            put_level(out, mid + 1 + (level % 1000) as u32, seq, level + 1);
        }
        out.push(b']');
        if combined {
            out.push(b'}');
        }
        // Insignificant whitespace before the final brace brings the frame to the target size.
        out.resize(out.len() + pad, b' ');
        out.push(b'}');
        debug_assert_eq!(out.len() - start, total);
        true
    }
}

impl StreamHead {
    fn new(form: FrameForm, name: &str) -> Self {
        let quoted_name = serde_json::Value::from(name).to_string();
        let mut head = Vec::new();
        if form == FrameForm::Combined {
            head.extend_from_slice(b"{\"stream\":");
            head.extend_from_slice(quoted_name.as_bytes());
            head.extend_from_slice(b",\"data\":");
        }
        head.extend_from_slice(b"{\"e\":\"depthUpdate\",\"E\":");
        let symbol_name = name.split('@').next().unwrap_or(name).to_uppercase();
        let mut symbol = b",\"s\":".to_vec();
        symbol.extend_from_slice(serde_json::Value::from(symbol_name).to_string().as_bytes());
        symbol.extend_from_slice(b",\"U\":");
        Self {
            name: name.to_owned(),
            head,
            symbol,
        }
    }
}

/// Id-less trade frames for broadcast mode with `ids=0`:
/// `{"e":"trade","E":<ms>,"s":"<SYMBOL>","t":"<token>","p":"<px>","q":"<qty>"}` (wrapped as
/// `{"stream":..,"data":..}` on `/stream`), where the token is
/// [`token`](crate::broadcast::token) of the stream's counter. Padded with JSON whitespace to
/// `size` when that is above the natural size.
pub(crate) struct TradeFrames {
    form: FrameForm,
    size: usize,
    /// Everything up to the value of `"E"`.
    head: Vec<u8>,
    /// From after `E` up to the token's opening quote: `,"s":"BTCUSDT","t":"`.
    symbol: Vec<u8>,
}

impl TradeFrames {
    pub(crate) fn new(form: FrameForm, size: usize, name: &str) -> Self {
        let mut head = Vec::new();
        if form == FrameForm::Combined {
            head.extend_from_slice(b"{\"stream\":");
            head.extend_from_slice(serde_json::Value::from(name).to_string().as_bytes());
            head.extend_from_slice(b",\"data\":");
        }
        head.extend_from_slice(b"{\"e\":\"trade\",\"E\":");
        let symbol_name = name.split('@').next().unwrap_or(name).to_uppercase();
        let mut symbol = b",\"s\":".to_vec();
        symbol.extend_from_slice(serde_json::Value::from(symbol_name).to_string().as_bytes());
        symbol.extend_from_slice(b",\"t\":\"");
        Self {
            form,
            size,
            head,
            symbol,
        }
    }

    /// Appends the whole frame (WebSocket header and payload) of the stream's `n`th event.
    pub(crate) fn encode(&self, out: &mut Vec<u8>, n: u64, time_ms: u64) {
        let mut time_buf = itoa::Buffer::new();
        let time = time_buf.format(time_ms).as_bytes();
        let token = crate::broadcast::token(n);
        const PRICE_KEY: &[u8] = b"\",\"p\":\"";
        const QTY_KEY: &[u8] = b"\",\"q\":\"";
        // `"` ends the quantity, `}` the trade, and one more `}` the combined wrapper.
        let closing = 2 + usize::from(self.form == FrameForm::Combined);
        // A level is `["PPPPP.pp","q.qqq"]`: the price is its bytes 2..10, the quantity 13..18.
        let natural = self.head.len()
            + time.len()
            + self.symbol.len()
            + token.len()
            + PRICE_KEY.len()
            + 8
            + QTY_KEY.len()
            + 5
            + closing;
        let total = natural.max(self.size);
        out.reserve(total + 10);
        put_header(out, total);
        let start = out.len();
        let mut level = Vec::with_capacity(LEVEL_LEN);
        put_level(&mut level, mid_price_cents(n), n, 0);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(time);
        out.extend_from_slice(&self.symbol);
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(PRICE_KEY);
        out.extend_from_slice(&level[2..10]);
        out.extend_from_slice(QTY_KEY);
        out.extend_from_slice(&level[13..18]);
        out.push(b'"');
        if self.form == FrameForm::Combined {
            out.push(b'}');
        }
        out.resize(out.len() + (total - natural), b' ');
        out.push(b'}');
        debug_assert_eq!(out.len() - start, total);
    }
}

/// The length of the WebSocket header at the start of a frame made by [`put_header`].
pub(crate) fn header_len(frame: &[u8]) -> usize {
    match frame.get(1) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// A server frame header: FIN + text opcode, no mask, then the payload length (RFC 6455 5.2).
fn put_header(out: &mut Vec<u8>, len: usize) {
    if len < 126 {
        out.extend_from_slice(&[FIN_TEXT, len as u8]);
    } else if let Ok(len) = u16::try_from(len) {
        out.extend_from_slice(&[FIN_TEXT, 126]);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.extend_from_slice(&[FIN_TEXT, 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Bytes taken by `n` levels in one JSON array (levels plus separating commas).
fn levels_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n * LEVEL_LEN + (n - 1)
    }
}

/// How many bids and asks fit into `room` bytes (alternating, bids first), and the padding left.
fn fit_levels(room: usize) -> (usize, usize, usize) {
    let mut n = room / (LEVEL_LEN + 1) + 2;
    loop {
        let (bids, asks) = (n.div_ceil(2), n / 2);
        let used = levels_len(bids) + levels_len(asks);
        if used <= room {
            return (bids, asks, room - used);
        }
        n -= 1;
    }
}

/// A deterministic pseudo-random mid price in cents, 50010.00 ..= 50979.99.
fn mid_price_cents(seq: u64) -> u32 {
    5_001_000 + (seq.wrapping_mul(2_654_435_761) % 97_000) as u32
}

/// Writes `["PPPPP.pp","q.qqq"]`; `cents` must stay within 10000.00 ..= 99999.99.
fn put_level(out: &mut Vec<u8>, cents: u32, seq: u64, level: usize) {
    let qty_milli = 1000 + (seq.wrapping_mul(7).wrapping_add(level as u64 * 13) % 9000) as u32;
    let mut level_text = *b"[\"00000.00\",\"0.000\"]";
    write_digits(&mut level_text[2..7], cents / 100);
    write_digits(&mut level_text[8..10], cents % 100);
    write_digits(&mut level_text[13..14], qty_milli / 1000);
    write_digits(&mut level_text[15..18], qty_milli % 1000);
    out.extend_from_slice(&level_text);
}

/// Writes `value` as zero-padded decimal filling `out` exactly (higher digits are dropped).
fn write_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generates one frame and checks and strips its WebSocket header.
    fn next_text(frames: &mut DepthFrames) -> String {
        let mut out = Vec::new();
        assert!(frames.encode_next(&mut out));
        assert_eq!(out[0], FIN_TEXT);
        let (len, header) = match out[1] {
            126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
            127 => (
                u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        assert_eq!(out.len(), header + len);
        String::from_utf8(out[header..].to_vec()).unwrap()
    }

    #[test]
    fn bare_frames_count_up_and_parse() {
        let mut frames = DepthFrames::new(FrameForm::Bare, 0);
        frames.set_streams(&["btcusdt@depth@100ms".to_owned()]);
        frames.set_time_ms(1_700_000_000_000);
        for expected in 1..=3u64 {
            let v: serde_json::Value = serde_json::from_str(&next_text(&mut frames)).unwrap();
            assert_eq!(v["e"], "depthUpdate");
            assert_eq!(v["E"], 1_700_000_000_000u64);
            assert_eq!(v["s"], "BTCUSDT");
            assert_eq!(v["U"], expected);
            assert_eq!(v["u"], expected);
            assert_eq!(v["b"].as_array().unwrap().len(), 1);
            assert_eq!(v["a"][0].as_array().unwrap().len(), 2);
        }
    }

    #[test]
    fn combined_frames_wrap_the_update_and_go_round_the_streams() {
        let mut frames = DepthFrames::new(FrameForm::Combined, 0);
        frames.set_streams(&["btcusdt@depth".to_owned(), "eth\"usdt@depth".to_owned()]);
        let first: serde_json::Value = serde_json::from_str(&next_text(&mut frames)).unwrap();
        let second: serde_json::Value = serde_json::from_str(&next_text(&mut frames)).unwrap();
        assert_eq!(first["stream"], "btcusdt@depth");
        assert_eq!(first["data"]["u"], 1);
        assert_eq!(second["stream"], "eth\"usdt@depth");
        assert_eq!(second["data"]["s"], "ETH\"USDT");
        assert_eq!(second["data"]["u"], 2);
    }

    #[test]
    fn sized_frames_are_exactly_the_target_size() {
        for (form, size) in [
            (FrameForm::Bare, 100),
            (FrameForm::Bare, 1000),
            (FrameForm::Combined, 150),
            (FrameForm::Combined, 4096),
        ] {
            let mut frames = DepthFrames::new(form, size);
            frames.set_streams(&["btcusdt@depth@100ms".to_owned()]);
            frames.set_time_ms(1_700_000_000_000);
            for _ in 0..50 {
                let frame = next_text(&mut frames);
                assert_eq!(frame.len(), size, "{form:?} {frame}");
                serde_json::from_str::<serde_json::Value>(&frame).unwrap();
            }
        }
    }

    #[test]
    fn headers_use_the_right_length_encoding() {
        for (size, header) in [(100, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut frames = DepthFrames::new(FrameForm::Bare, size);
            frames.set_streams(&["btcusdt".to_owned()]);
            let mut out = Vec::new();
            assert!(frames.encode_next(&mut out));
            assert_eq!(out.len(), size + header, "size {size}");
        }
        let mut idle = DepthFrames::new(FrameForm::Bare, 0);
        let mut out = Vec::new();
        assert!(!idle.encode_next(&mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn payloads_are_the_frames_without_their_header() {
        let mut framed = DepthFrames::new(FrameForm::Combined, 300);
        let mut bare = DepthFrames::new(FrameForm::Combined, 300);
        for frames in [&mut framed, &mut bare] {
            frames.set_streams(&["btcusdt@depth".to_owned()]);
            frames.set_time_ms(1_700_000_000_000);
        }
        for _ in 0..3 {
            let mut payload = Vec::new();
            assert!(bare.encode_payload_next(&mut payload));
            assert_eq!(String::from_utf8(payload).unwrap(), next_text(&mut framed));
        }
    }

    #[test]
    fn trade_frames_carry_the_token_and_fill_the_size() {
        for (form, size) in [
            (FrameForm::Bare, 0),
            (FrameForm::Combined, 0),
            (FrameForm::Combined, 300),
            (FrameForm::Bare, 70_000),
        ] {
            let frames = TradeFrames::new(form, size, "btcusdt@trade");
            let mut out = Vec::new();
            frames.encode(&mut out, 42, 1_700_000_000_000);
            let payload = std::str::from_utf8(&out[header_len(&out)..]).unwrap();
            if size > 0 {
                assert_eq!(payload.len(), size);
            }
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            let data = if form == FrameForm::Combined {
                assert_eq!(v["stream"], "btcusdt@trade");
                &v["data"]
            } else {
                &v
            };
            assert_eq!(data["e"], "trade");
            assert_eq!(data["E"], 1_700_000_000_000u64);
            assert_eq!(data["s"], "BTCUSDT");
            assert_eq!(data["t"], crate::broadcast::token(42).as_str());
            assert!(data.get("u").is_none());
            assert_eq!(data["p"].as_str().unwrap().len(), 8);
            assert_eq!(data["q"].as_str().unwrap().len(), 5);
        }
    }

    #[test]
    fn the_sequence_can_be_set_from_outside() {
        let mut frames = DepthFrames::new(FrameForm::Bare, 0);
        frames.set_streams(&["btcusdt".to_owned()]);
        frames.set_last_seq(41);
        let v: serde_json::Value = serde_json::from_str(&next_text(&mut frames)).unwrap();
        assert_eq!((v["U"].as_u64(), v["u"].as_u64()), (Some(42), Some(42)));
    }

    #[test]
    fn frames_smaller_than_an_empty_update_have_no_levels() {
        let mut frames = DepthFrames::new(FrameForm::Bare, 10);
        frames.set_streams(&["btcusdt".to_owned()]);
        let v: serde_json::Value = serde_json::from_str(&next_text(&mut frames)).unwrap();
        assert!(v["b"].as_array().unwrap().is_empty());
        assert!(v["a"].as_array().unwrap().is_empty());
    }
}
