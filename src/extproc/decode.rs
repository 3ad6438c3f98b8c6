//! Decoding compressed response bodies incrementally (the OpenAI SDK asks for gzip).

use std::io::Write;

use flate2::write::{GzDecoder, ZlibDecoder};

/// A streaming decoder for one `content-encoding`.
pub enum BodyDecoder {
    Gzip(GzDecoder<Vec<u8>>),
    Deflate(ZlibDecoder<Vec<u8>>),
}

impl BodyDecoder {
    /// A decoder for the encoding, or None for identity (and encodings not handled, whose
    /// bytes then pass untouched and unread).
    pub fn for_encoding(encoding: Option<&str>) -> Option<BodyDecoder> {
        match encoding?.trim() {
            "gzip" | "x-gzip" => Some(BodyDecoder::Gzip(GzDecoder::new(Vec::new()))),
            "deflate" => Some(BodyDecoder::Deflate(ZlibDecoder::new(Vec::new()))),
            _ => None,
        }
    }

    /// Feeds compressed bytes; returns what they decode to.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> std::io::Result<Vec<u8>> {
        match self {
            // flate2 keeps what a write decoded in its own buffer until the next write or
            // a flush: flush every time, or a stream would lag one chunk behind.
            BodyDecoder::Gzip(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                if end {
                    d.try_finish()?;
                }
                Ok(std::mem::take(d.get_mut()))
            }
            BodyDecoder::Deflate(d) => {
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
    fn garbage_is_an_error_not_a_panic() {
        let mut d = BodyDecoder::for_encoding(Some("gzip")).unwrap();
        assert!(d.push(b"not gzip at all", true).is_err());
    }
}
