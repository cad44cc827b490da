//! The `keelson` binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keelson::cli::main()
}
