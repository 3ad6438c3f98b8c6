//! Decoding compressed response bodies incrementally (the OpenAI SDK asks for gzip).

use std::io::{Read, Write};

use flate2::write::{GzDecoder, ZlibDecoder};

/// Most a response may decode to: far above any real completion, and a bound on what a
/// compressed body (a gzip bomb) can make the sidecar allocate.
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// A streaming decoder for one `content-encoding`.
pub struct BodyDecoder {
    inner: Inner,
    decoded: u64,
}

enum Inner {
    Gzip(GzDecoder<Vec<u8>>),
    Deflate(ZlibDecoder<Vec<u8>>),
}

impl BodyDecoder {
    /// A decoder for the encoding, or None for identity (and encodings not handled, whose
    /// bytes then pass untouched and unread).
    pub fn for_encoding(encoding: Option<&str>) -> Option<BodyDecoder> {
        let inner = match known_encoding(encoding?)? {
            "gzip" => Inner::Gzip(GzDecoder::new(Vec::new())),
            _ => Inner::Deflate(ZlibDecoder::new(Vec::new())),
        };
        Some(BodyDecoder { inner, decoded: 0 })
    }

    /// Feeds compressed bytes; returns what they decode to.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> std::io::Result<Vec<u8>> {
        let out = self.decode(chunk, end)?;
        self.decoded += out.len() as u64;
        if self.decoded > MAX_DECODED_BYTES {
            return Err(std::io::Error::other(format!(
                "response decodes to more than {MAX_DECODED_BYTES} bytes"
            )));
        }
        Ok(out)
    }

    fn decode(&mut self, chunk: &[u8], end: bool) -> std::io::Result<Vec<u8>> {
        match &mut self.inner {
            // flate2 keeps what a write decoded in its own buffer until the next write or
            // a flush: flush every time, or a stream would lag one chunk behind.
            Inner::Gzip(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                if end {
                    d.try_finish()?;
                }
                Ok(std::mem::take(d.get_mut()))
            }
            Inner::Deflate(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                if end {
                    d.try_finish()?;
                }
                Ok(std::mem::take(d.get_mut()))
            }
        }
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
    fn garbage_is_an_error_not_a_panic() {
        let mut d = BodyDecoder::for_encoding(Some("gzip")).unwrap();
        assert!(d.push(b"not gzip at all", true).is_err());
    }
}
