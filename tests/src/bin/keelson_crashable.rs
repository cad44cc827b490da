//! The `keelson` CLI built with crash points (`KEELSON_CRASH_AT=<point>`), for end-to-end tests.
//! Cargo builds it with the rest of the workspace's tests, so they need no nested `cargo build`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keelson::cli::main()
}
