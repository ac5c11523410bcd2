//! `sente-lite-node`: the `sente-lite` binary, built inside the tests
//! package so that its integration tests can start real server processes
//! (`env!("CARGO_BIN_EXE_sente-lite-node")`, see `external::node_bin!`) and
//! SIGKILL them. It runs exactly the same program: `sente_lite_server::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    sente_lite_server::cli::main()
}
