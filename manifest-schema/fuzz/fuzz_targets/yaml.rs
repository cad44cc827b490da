//! Arbitrary bytes through the span-aware YAML parser. Any panic is a bug — including one the
//! parser's own `catch_unwind` would turn into a `yaml.internal` diagnostic, because
//! libfuzzer-sys aborts in the panic hook before unwinding.
#![no_main]

use keelson_manifest::yaml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(docs) = yaml::parse("fuzz.yaml", data) {
        // Walk the spans so a bad pointer or position surfaces here, not in a caller.
        for doc in &docs {
            let _ = doc.spans.locate_value("/spec/a/b");
            let _ = doc.spans.locate_key("/metadata/name");
            let _ = serde_json::to_string(&doc.value);
        }
    }
});
