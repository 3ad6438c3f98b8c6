//! What every translated embeddings answer shares: OpenAI's `encoding_format` and the
//! vector encoding it selects.

use base64::Engine;
use serde_json::Value;

use crate::api::ApiError;

/// Whether the client asked for base64 vectors (`encoding_format`: float or base64).
pub fn wants_base64(encoding_format: Option<&str>) -> Result<bool, ApiError> {
    match encoding_format {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "`encoding_format` must be float or base64; got `{other}`"
        ))),
    }
}

/// One vector as OpenAI sends it: a float array, or little-endian f32 bytes in base64.
pub fn vector_json(values: &[f64], base64: bool) -> Value {
    if !base64 {
        return values.iter().copied().collect();
    }
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(vector_json(&[1.0], true), "AACAPw==");
        assert_eq!(
            vector_json(&[1.0, 0.5], false),
            serde_json::json!([1.0, 0.5])
        );
        assert!(wants_base64(Some("int8")).is_err());
    }
}
