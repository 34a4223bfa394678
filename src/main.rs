//! The binary's edge: parse the command line, set up logging, run the
//! command, and turn its result into an exit code (errors are exit 2).

use clap::Parser;

use kycshare::cli::{Cli, Command};
use kycshare::cmd::{self, Ctx};

/// jemalloc, not the system allocator: every row's buffers are allocated
/// on the reading thread and freed on the runtime's (and the journal's),
/// and glibc's malloc takes the owning arena's lock for each such free:
/// futex waits between the threads, measured in docs/performance.md.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    kycshare::logging::init(
        cli.log.verbose,
        cli.log.quiet,
        cli.log.log_format,
        cli.log.color,
    );
    let ctx = Ctx {
        quiet: cli.log.quiet,
        progress_interval: cli.log.progress_interval,
    };
    // With --json a machine reads stdout: it gets a JSON object even when
    // the command fails before its summary (exit 2).
    let json = match &cli.command {
        Command::Validate(a) => Some(("validate", a.input.json)),
        Command::Run(a) => Some(("run", a.input.json)),
        Command::Resume(a) => Some(("resume", a.json)),
        Command::Demo(a) => Some(("demo", a.json)),
        Command::Ledger(a) => Some(("ledger", a.json)),
        Command::Mock(_) => None,
        Command::Check(a) => Some(("check", a.json)),
        Command::Status(a) => Some(("status", a.json)),
        Command::Report(a) => Some(("report", a.json)),
        Command::Verify(a) => Some(("verify", a.json)),
    };
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args, ctx),
        Command::Run(args) => cmd::run::run(args, ctx),
        Command::Resume(args) => cmd::resume::run(args, ctx),
        Command::Check(args) => cmd::check::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Verify(args) => cmd::verify::run(args, ctx),
        Command::Demo(args) => cmd::demo::run(args, ctx),
        Command::Ledger(args) => cmd::ledger::run(args),
        Command::Mock(args) => cmd::runtime().and_then(|rt| rt.block_on(cmd::mock::run(args))),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some((command, true)) = json {
                let obj = serde_json::json!({
                    "command": command,
                    "exitCode": 2,
                    "error": format!("{e:#}"),
                });
                println!("{obj}");
            }
            2
        }
    };
    std::process::exit(code);
}
