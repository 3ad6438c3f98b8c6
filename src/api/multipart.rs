//! `multipart/form-data` bodies (OpenAI's audio transcriptions and translations): the
//! few text fields the gateway reads (`model`, `stream`), found in the buffered body
//! where they are, so that the file is neither copied nor decoded and a
//! `modelNameOverride` splices one value (RFC 7578).

use std::ops::Range;

use memchr::memmem;

use super::ApiError;

/// The text fields the gateway reads, as byte ranges of the body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FormFields {
    pub model: Option<Range<usize>>,
    pub stream: Option<Range<usize>>,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Result<&str, ApiError> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(ApiError::BadRequest(format!(
            "this API takes a multipart/form-data body, not `{}`",
            super::printable(kind)
        )));
    }
    let boundary = params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| {
            ApiError::BadRequest(
                "the multipart/form-data content type has no valid `boundary`".into(),
            )
        })?;
    Ok(boundary)
}

/// Finds the fields in `body`. Every part is walked once with a substring search for
/// the next delimiter, so a file part costs one scan and no copy.
pub fn fields(body: &[u8], boundary: &str) -> Result<FormFields, ApiError> {
    let malformed = |what: &str| {
        ApiError::BadRequest(format!("the multipart/form-data body is malformed: {what}"))
    };
    let dash = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    let finder = memmem::Finder::new(delimiter.as_bytes());
    // The first delimiter may open the body (no CRLF before it).
    let mut at = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        finder
            .find(body)
            .map(|i| i + delimiter.len())
            .ok_or_else(|| malformed("no boundary delimiter"))?
    };
    let mut found = FormFields::default();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(found); // the close delimiter
        }
        let Some(rest) = rest.strip_prefix(b"\r\n") else {
            return Err(malformed("a delimiter is not followed by a line break"));
        };
        let start = at + 2;
        let headers_end = memmem::find(rest, b"\r\n\r\n")
            .ok_or_else(|| malformed("a part's headers never end"))?;
        let headers = std::str::from_utf8(&rest[..headers_end])
            .map_err(|_| malformed("a part's headers are not text"))?;
        let content_start = start + headers_end + 4;
        let content_len = finder
            .find(&body[content_start..])
            .ok_or_else(|| malformed("the body ends inside a part"))?;
        let content = content_start..content_start + content_len;
        match field_name(headers) {
            Some("model") => found.model = Some(content),
            Some("stream") => found.stream = Some(content),
            _ => {}
        }
        at = content_start + content_len + delimiter.len();
    }
}

/// The `name` of a part's `Content-Disposition: form-data` header.
fn field_name(headers: &str) -> Option<&str> {
    let disposition = headers.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(value)
    })?;
    disposition.split(';').find_map(|p| {
        let (key, value) = p.split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--X not the boundary\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\ncontent-disposition: form-data; name=stream\r\n\r\ntrue\r\n--XyZ--\r\n";

    #[test]
    fn finds_the_fields_past_a_file() {
        let f = fields(BODY, "XyZ").unwrap();
        assert_eq!(&BODY[f.model.unwrap()], b"whisper-1");
        assert_eq!(&BODY[f.stream.unwrap()], b"true");
    }

    #[test]
    fn reads_the_boundary_and_refuses_what_is_not_a_form() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\"").unwrap(),
            "XyZ"
        );
        assert_eq!(boundary("Multipart/Form-Data;boundary=a-b").unwrap(), "a-b");
        assert_eq!(boundary("application/json").unwrap_err().status(), 400);
        assert_eq!(boundary("multipart/form-data").unwrap_err().status(), 400);
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in [
            &b"no delimiter"[..],
            b"--XyZ\r\nno end of headers",
            b"--XyZ\r\n\r\nno end of part",
        ] {
            assert_eq!(fields(body, "XyZ").unwrap_err().status(), 400);
        }
        assert_eq!(fields(BODY, "other").unwrap_err().status(), 400);
    }
}
