//! The `portcullis` binary: everything lives in the library; see `portcullis::cli`.

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
