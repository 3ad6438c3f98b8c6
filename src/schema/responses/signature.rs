//! What a reasoning item's `encrypted_content` carries back to the provider on the next
//! turn. The Responses API leaves its content to the service (clients hand it back
//! unread), so the gateway writes what chat's round-trip fields hold: a Claude thinking
//! block's signature as it is, a redacted block's data after `redacted:`, and Gemini's
//! `thoughtSignature` of the function call that follows after `google:`. Claude's
//! signatures are base64, which has no `:`, so the three cannot be confused.

use serde_json::{json, Value};

const REDACTED: &str = "redacted:";
const GEMINI: &str = "google:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A Claude thinking block: its text (the item's summary) and signature.
    Thinking { text: String, signature: String },
    /// A Claude redacted thinking block's data.
    Redacted(String),
    /// Gemini's thought signature for the next function call.
    Gemini(String),
}

/// Reads `encrypted_content`; `summary` is the item's summary text.
pub fn decode(encrypted: &str, summary: String) -> Signature {
    if let Some(data) = encrypted.strip_prefix(REDACTED) {
        Signature::Redacted(data.to_string())
    } else if let Some(sig) = encrypted.strip_prefix(GEMINI) {
        Signature::Gemini(sig.to_string())
    } else {
        Signature::Thinking {
            text: summary,
            signature: encrypted.to_string(),
        }
    }
}

impl Signature {
    /// The `encrypted_content` of the reasoning item that carries it.
    pub fn encode(&self) -> String {
        match self {
            Signature::Thinking { signature, .. } => signature.clone(),
            Signature::Redacted(data) => format!("{REDACTED}{data}"),
            Signature::Gemini(sig) => format!("{GEMINI}{sig}"),
        }
    }

    /// Chat's `thinking_blocks` entry, for Claude's.
    pub fn thinking_block(&self) -> Option<Value> {
        match self {
            Signature::Thinking { text, signature } => {
                Some(json!({"type": "thinking", "thinking": text, "signature": signature}))
            }
            Signature::Redacted(data) => Some(json!({"type": "redacted_thinking", "data": data})),
            Signature::Gemini(_) => None,
        }
    }

    /// A chat `thinking_blocks` entry read back (None when it is neither kind).
    pub fn from_thinking_block(block: &Value) -> Option<Signature> {
        let s = |name: &str| block.get(name).and_then(Value::as_str).map(str::to_string);
        match block.get("type").and_then(Value::as_str)? {
            "thinking" => Some(Signature::Thinking {
                text: s("thinking").unwrap_or_default(),
                signature: s("signature")?,
            }),
            "redacted_thinking" => Some(Signature::Redacted(s("data")?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_comes_back_as_it_went() {
        for sig in [
            Signature::Thinking {
                text: "hmm".into(),
                signature: "EqoBCkgIAR+/=".into(),
            },
            Signature::Redacted("abc".into()),
            Signature::Gemini("CiQB".into()),
        ] {
            assert_eq!(decode(&sig.encode(), "hmm".into()), sig);
        }
    }
}
