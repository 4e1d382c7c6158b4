//! The `portcullis` binary: everything lives in the library; see `portcullis::cli`.

use std::os::unix::process::CommandExt;

/// mimalloc: the proxy allocates small, short-lived objects per request (header maps, body
/// frames); glibc malloc spent ~6 % of the edge's CPU on them in the HTTP/1.1 benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The mimalloc option that commits arena memory on demand instead of eagerly.
const EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

fn main() -> std::process::ExitCode {
    commit_on_demand();
    portcullis::cli::main()
}

/// By default mimalloc commits its arena eagerly: ~7 MiB of an idle edge's 9 MiB of
/// anonymous memory was committed and never used (`docs/PERFORMANCE.md`). mimalloc reads its
/// options from the environment before `main` runs, so the process re-executes itself once
/// (same PID, same arguments) with commit-on-demand set. An explicit setting is respected;
/// if the re-execution fails, the edge simply runs with the default.
fn commit_on_demand() {
    if std::env::var_os(EAGER_COMMIT).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` only returns on failure.
    let _failed = command.args(args).env(EAGER_COMMIT, "0").exec();
}
