//! `bistoury`: run the trading agents. See `orchestrator::cli`.

fn main() -> std::process::ExitCode {
    orchestrator::cli::main()
}
