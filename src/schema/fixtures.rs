//! Test helper: the recorded provider traffic in the shared fixtures directory.

use std::path::PathBuf;

use serde_json::Value;

/// The fixtures directory: `../shared/fixtures` next to the crate, else `/work/shared/fixtures`.
fn fixtures_dir() -> PathBuf {
    let beside = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"));
    if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}

/// One recorded interaction, e.g. `fixture("vertex/generate-content-text.json")`.
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}
