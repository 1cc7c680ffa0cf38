//! Command line of the operator: `crd`, `render` (offline) and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "matrixrtc-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the MatrixRTCTransport CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would apply for a MatrixRTCTransport file (offline).
    Render(matrixrtc_operator::render::RenderArgs),
    /// Run the operator: reconcile MatrixRTCTransports until SIGTERM.
    Run(matrixrtc_operator::run::RunArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => matrixrtc_operator::crdgen::main(),
        Command::Render(args) => matrixrtc_operator::render::main(args),
        Command::Run(args) => matrixrtc_operator::run::main(args),
    }
}
