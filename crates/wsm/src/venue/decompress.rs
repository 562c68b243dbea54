//! Inflating compressed binary frames (HTX sends every frame gzip-compressed), with the output
//! bounded: a small frame that inflates past `max_message_size` is refused as a bomb before more
//! than the limit is ever held in memory.

use std::io::Read;

use super::options::Decompress;

/// Why a frame could not be inflated; the connection stays up and the frame is dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    TooLarge { limit: usize },
    Corrupt(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::TooLarge { limit } => write!(
                f,
                "inflates past the limit of {limit} bytes (max_message_size): a decompression \
                 bomb, or a limit set too low"
            ),
            Refused::Corrupt(why) => write!(f, "is not valid compressed data ({why})"),
        }
    }
}

pub(crate) fn inflate(kind: Decompress, input: &[u8], limit: usize) -> Result<Vec<u8>, Refused> {
    // Read one byte past the limit: reaching it proves the output is too large.
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit));
    let read = match kind {
        Decompress::Gzip => flate2::read::GzDecoder::new(input)
            .take(cap)
            .read_to_end(&mut out),
        Decompress::Deflate => flate2::read::DeflateDecoder::new(input)
            .take(cap)
            .read_to_end(&mut out),
        Decompress::Zlib => flate2::read::ZlibDecoder::new(input)
            .take(cap)
            .read_to_end(&mut out),
    };
    match read {
        Ok(_) if out.len() > limit => Err(Refused::TooLarge { limit }),
        Ok(_) if out.is_empty() && !input.is_empty() => {
            Err(Refused::Corrupt("no data inflated".into()))
        }
        Ok(_) => Ok(out),
        Err(e) => Err(Refused::Corrupt(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn each_format_round_trips() {
        let data = br#"{"ch":"market.btcusdt.depth","tick":{"seqNum":1}}"#;
        assert_eq!(
            inflate(Decompress::Gzip, &gzip(data), 1 << 20).unwrap(),
            data
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        assert_eq!(
            inflate(Decompress::Zlib, &z.finish().unwrap(), 1 << 20).unwrap(),
            data
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(data).unwrap();
        assert_eq!(
            inflate(Decompress::Deflate, &d.finish().unwrap(), 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn a_bomb_and_garbage_are_refused() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            inflate(Decompress::Gzip, &bomb, 1 << 20),
            Err(Refused::TooLarge { limit: 1 << 20 })
        );
        let whole = gzip(b"{\"ping\":1}");
        let truncated = &whole[..whole.len() - 6];
        assert!(matches!(
            inflate(Decompress::Gzip, truncated, 1 << 20),
            Err(Refused::Corrupt(_))
        ));
        assert!(matches!(
            inflate(Decompress::Gzip, b"not gzip", 1 << 20),
            Err(Refused::Corrupt(_))
        ));
    }
}
