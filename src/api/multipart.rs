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

/// One part of a form: its field name and where it lies in the body.
struct Part<'a> {
    name: Option<&'a str>,
    /// From its first header line to the end of its content.
    whole: Range<usize>,
    content: Range<usize>,
}

/// Every part of `body`. Each is walked once with a substring search for the next
/// delimiter, so a file part costs one scan and no copy.
fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, ApiError> {
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
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts); // the close delimiter
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
        let end = content_start + content_len;
        parts.push(Part {
            name: field_name(headers),
            whole: start..end,
            content: content_start..end,
        });
        at = end + delimiter.len();
    }
}

/// Finds the fields the gateway reads in `body`.
pub fn fields(body: &[u8], boundary: &str) -> Result<FormFields, ApiError> {
    let mut found = FormFields::default();
    for part in parts(body, boundary)? {
        match part.name {
            Some("model") => found.model = Some(part.content),
            Some("stream") => found.stream = Some(part.content),
            _ => {}
        }
    }
    Ok(found)
}

/// The form with the fields in `remove` and `set` left out, then each of `set` added as
/// a text field (name, value), under the same boundary.
pub fn edited(
    body: &[u8],
    boundary: &str,
    remove: &dyn Fn(&str) -> bool,
    set: &[(&str, &str)],
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(body.len() + 128);
    let replaced = |name: &str| remove(name) || set.iter().any(|(n, _)| *n == name);
    for part in parts(body, boundary)? {
        if part.name.is_some_and(replaced) {
            continue;
        }
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(&body[part.whole]);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in set {
        let header =
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n");
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out)
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
    fn an_edit_keeps_the_other_parts_as_they_were() {
        let out = edited(
            BODY,
            "XyZ",
            &|n| n == "stream",
            &[("model", "whisper-2"), ("language", "en")],
        )
        .unwrap();
        let f = fields(&out, "XyZ").unwrap();
        assert_eq!(&out[f.model.unwrap()], b"whisper-2");
        assert_eq!(f.stream, None);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--X not the boundary\r\n--XyZ"));
        assert!(text.contains("name=\"language\"\r\n\r\nen\r\n") && text.ends_with("--XyZ--\r\n"));
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
