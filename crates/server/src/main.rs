//! The `sente-lite` binary: parse flags, load the configuration, run the
//! server until SIGINT or SIGTERM, stop gracefully.

use std::process::ExitCode;

fn main() -> ExitCode {
    sente_lite_server::cli::main()
}
