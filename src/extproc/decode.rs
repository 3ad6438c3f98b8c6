//! Decoding compressed response bodies incrementally (the OpenAI SDK asks for gzip).

use std::io::{Read, Write};

use flate2::write::{GzDecoder, ZlibDecoder};

/// Most a response may decode to: far above any real completion, and a bound on what a
/// compressed body (a gzip bomb) can make the sidecar allocate.
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// A streaming decoder for one `content-encoding`.
pub struct BodyDecoder {
    inner: Inner,
}

enum Inner {
    Gzip(GzDecoder<Capped>),
    Deflate(ZlibDecoder<Capped>),
}

/// The decoder's output, which refuses to grow past what a response may decode to: the
/// decoder stops at the bound, so a bomb never allocates more than it.
struct Capped {
    out: Vec<u8>,
    room: u64,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let len = data.len() as u64;
        if len > self.room {
            self.room = 0;
            return Err(std::io::Error::other(
                "response decodes to more bytes than allowed",
            ));
        }
        self.room -= len;
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BodyDecoder {
    /// A decoder for the encoding, or None for identity (and encodings not handled, whose
    /// bytes then pass untouched and unread).
    pub fn for_encoding(encoding: Option<&str>) -> Option<BodyDecoder> {
        Self::with_limit(encoding, MAX_DECODED_BYTES)
    }

    fn with_limit(encoding: Option<&str>, limit: u64) -> Option<BodyDecoder> {
        let out = Capped {
            out: Vec::new(),
            room: limit,
        };
        let inner = match known_encoding(encoding?)? {
            "gzip" => Inner::Gzip(GzDecoder::new(out)),
            _ => Inner::Deflate(ZlibDecoder::new(out)),
        };
        Some(BodyDecoder { inner })
    }

    /// Feeds compressed bytes; returns what they decode to.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> std::io::Result<Vec<u8>> {
        // flate2 keeps what a write decoded in its own buffer until the next write or a
        // flush: flush every time, or a stream would lag one chunk behind.
        fn step<W: Write>(
            d: &mut W,
            chunk: &[u8],
            end: bool,
            finish: impl FnOnce(&mut W) -> std::io::Result<()>,
        ) -> std::io::Result<()> {
            d.write_all(chunk)?;
            d.flush()?;
            if end {
                finish(d)?;
            }
            Ok(())
        }
        let out = match &mut self.inner {
            Inner::Gzip(d) => {
                step(d, chunk, end, GzDecoder::try_finish)?;
                d.get_mut()
            }
            Inner::Deflate(d) => {
                step(d, chunk, end, ZlibDecoder::try_finish)?;
                d.get_mut()
            }
        };
        Ok(std::mem::take(&mut out.out))
    }
}

/// Why a whole body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("decodes to more than {0} bytes")]
    TooLarge(u64),
    #[error("is not valid {encoding}: {source}")]
    Invalid {
        encoding: &'static str,
        source: std::io::Error,
    },
}

/// The encodings the gateway decodes (requests and answers), by their `content-encoding`
/// token.
pub fn known_encoding(encoding: &str) -> Option<&'static str> {
    match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => Some("gzip"),
        "deflate" => Some("deflate"),
        _ => None,
    }
}

/// Decodes a whole body (a client's request) of a [`known_encoding`], reading at most
/// `limit` decoded bytes: a small compressed body that expands without end (a zip bomb)
/// costs no more memory than the limit.
pub fn decode_whole(
    encoding: &'static str,
    body: &[u8],
    limit: u64,
) -> Result<Vec<u8>, DecodeError> {
    let reader: Box<dyn Read + '_> = match encoding {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        _ => Box::new(flate2::read::ZlibDecoder::new(body)),
    };
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| DecodeError::Invalid { encoding, source })?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};

    #[test]
    fn gzip_split_anywhere_decodes_the_same() {
        let plain = b"data: {\"usage\":{\"total_tokens\":3}}\n\ndata: [DONE]\n\n".repeat(20);
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(&plain).unwrap();
        let gz = e.finish().unwrap();
        for cut in [0, 1, 10, gz.len() / 2, gz.len()] {
            let mut d = BodyDecoder::for_encoding(Some("gzip")).unwrap();
            let mut out = d.push(&gz[..cut], false).unwrap();
            out.extend(d.push(&gz[cut..], true).unwrap());
            assert_eq!(out, plain);
        }
    }

    #[test]
    fn a_sync_flushed_chunk_decodes_at_once() {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b"data: first\n\n").unwrap();
        e.flush().unwrap(); // Z_SYNC_FLUSH, as a streaming server sends it
        let first = e.get_ref().clone();
        let mut d = BodyDecoder::for_encoding(Some("gzip")).unwrap();
        assert_eq!(d.push(&first, false).unwrap(), b"data: first\n\n");
    }

    #[test]
    fn whole_bodies_decode_within_the_limit_only() {
        let plain = b"{\"model\":\"m\"}".repeat(1000);
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(&plain).unwrap();
        let gz = e.finish().unwrap();
        assert_eq!(
            decode_whole("gzip", &gz, plain.len() as u64).unwrap(),
            plain
        );
        assert!(matches!(
            decode_whole("gzip", &gz, plain.len() as u64 - 1),
            Err(DecodeError::TooLarge(_))
        ));
        // A bomb: 1 GiB of zeros from about 1 MiB, refused after reading the limit.
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(matches!(
            decode_whole("gzip", &bomb, 1 << 20),
            Err(DecodeError::TooLarge(_))
        ));
        assert!(matches!(
            decode_whole("gzip", b"not gzip", 100),
            Err(DecodeError::Invalid { .. })
        ));
        assert_eq!(known_encoding(" GZIP"), Some("gzip"));
        assert_eq!(known_encoding("br"), None);
    }

    #[test]
    fn a_streamed_bomb_stops_at_the_bound_without_allocating_past_it() {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap(); // 64 MiB of zeros in about 64 KiB
        let limit = 1 << 20;
        let mut d = BodyDecoder::with_limit(Some("gzip"), limit).unwrap();
        let mut decoded = 0;
        let mut failed = false;
        for piece in bomb.chunks(4096) {
            match d.push(piece, false) {
                Ok(out) => decoded += out.len() as u64,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed && decoded <= limit, "decoded {decoded}");
        // Whole, in one piece, as a buffered answer arrives.
        let mut d = BodyDecoder::with_limit(Some("gzip"), limit).unwrap();
        assert!(d.push(&bomb, true).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = BodyDecoder::for_encoding(Some("gzip")).unwrap();
        assert!(d.push(b"not gzip at all", true).is_err());
    }
}
