//! The `bistoury` command line, built inside the end-to-end test package so
//! its tests can run it as a process (`CARGO_BIN_EXE_bistoury-e2e`): the same
//! `orchestrator::cli::main` the real binary calls.

fn main() -> std::process::ExitCode {
    orchestrator::cli::main()
}
