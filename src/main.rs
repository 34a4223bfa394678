//! The binary's edge: parse the command line, set up logging, run the
//! command, and turn its result into an exit code (errors are exit 2).

use clap::Parser;

use kycshare::cli::{Cli, Command};
use kycshare::cmd::{self, Ctx};

fn main() {
    let cli = Cli::parse();
    kycshare::logging::init(cli.log.verbose, cli.log.quiet, cli.log.log_format);
    let ctx = Ctx {
        quiet: cli.log.quiet,
    };
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args, ctx),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
