//! The `portcullis` binary: everything lives in the library; see `portcullis::cli`.

/// mimalloc: the proxy allocates small, short-lived objects per request (header maps, body
/// frames); glibc malloc spent ~6 % of the edge's CPU on them in the HTTP/1.1 benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
