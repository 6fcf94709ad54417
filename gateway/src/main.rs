//! The `kvgate` command: serve, initialise, administer, demonstrate.

use std::process::ExitCode;

use clap::Parser;
use kvgate::cli::{Cli, Command};
use kvgate::{control, demo, init, serve};

fn main() -> ExitCode {
    kvgate::logging::init();
    let result = match Cli::parse().command {
        Command::Init { dir } => init::run(&dir).map(|outcome| println!("{outcome}")),
        Command::Serve(args) => serve::run(args),
        Command::Demo => demo::run(),
        Command::Admin(command) => return control::run_admin(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kvgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
