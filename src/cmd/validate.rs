//! `kycshare validate INPUT`: the dry run. Every record goes through the
//! input and request stages (each valid row's request is built and signed),
//! nothing is sent, and every record gets a row in the results file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use crate::cmd::{Ctx, InputArgs};
use crate::input::{Input, InputOptions, Source, TokenMode};
use crate::output::progress::Progress;
use crate::output::{Counts, ResultsWriter, Summary};
use crate::pipeline::plan::{check_existing_results, results_path};
use crate::request::Signer;
use crate::secret::Secret;

pub const VALIDATE_ABOUT: &str = "\
Dry run: read the whole export, check every row as `run` would, build and sign
each valid row's request (with BANXA_API_KEY/BANXA_API_SECRET if set, else a
throwaway key), and send nothing.

Every record gets one row in the results file with outcome `validated`,
`invalid` (with the reason, e.g. `email: missing domain`) or `duplicate`
(`duplicate of record 12`). Exit 0 when every row is valid, 1 when some are
not, 2 when the file itself cannot be used (missing column, not a CSV, …).

Example:
  kycshare validate export.csv
  kycshare validate export.csv.gz --map identityReference=customer_id --json";

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// The input carries Sumsub's applicantId instead of a token (as for
    /// `run --mint`): check applicantId; nothing is minted, no network.
    #[arg(long)]
    pub mint: bool,
    /// Read the API secret from this file (first line) instead of BANXA_API_SECRET.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,
}

pub fn run(args: ValidateArgs, ctx: Ctx) -> anyhow::Result<i32> {
    let started = Instant::now();
    let source = Source::from_arg(&args.input.input);
    let results = results_path(args.input.results.as_deref(), &source)?;
    let replace = check_existing_results(&results, args.input.force, true)?;
    let opts = InputOptions {
        delimiter: args.input.delimiter,
        maps: args.input.maps.clone(),
        mode: if args.mint {
            TokenMode::Mint
        } else {
            TokenMode::Token
        },
    };
    let mut input = Input::open(&source, &opts)?;

    // Sign with the real credentials when they are configured, so that a
    // bad secret file shows up here; otherwise with a throwaway key.
    let signer = match crate::credentials::banxa(args.api_secret_file.as_deref())? {
        Some(c) => Signer::new(c.api_key, &c.api_secret),
        None => Signer::new(
            "dry-run",
            &Secret::new(format!("{:032x}", rand::random::<u128>())),
        ),
    };
    let writer = ResultsWriter::create(&results, replace)?;

    let counts = Arc::new(Counts::default());
    let progress = Progress::new(!ctx.quiet, None).with_lines(
        !ctx.quiet,
        ctx.progress_interval,
        counts.clone(),
        "checked",
    );
    let found =
        crate::pipeline::dry_run::run(&mut input, writer, signer, args.mint, &counts, &progress)?;
    progress.finish();
    tracing::info!(
        signed_bytes = found.signed_bytes,
        "dry run: requests built and signed"
    );
    let reasons = found.reasons;

    let mut summary = Summary::new(
        "validate",
        &source.display(),
        &results.display().to_string(),
    );
    summary.set_counts(&counts);
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    summary.records_per_second = summary.total as f64 / summary.elapsed_seconds.max(1e-9);
    summary.top_reasons = reasons.top(5);
    summary.exit_code = summary.completed_exit_code();
    let bad = summary.invalid + summary.duplicate;
    if summary.total == 0 {
        summary
            .next_steps
            .push("the file has a header but no records: check the export".into());
    } else if bad > 0 {
        summary.next_steps.push(format!(
            "{bad} row{} would not be sent: see the rows with outcome invalid or duplicate in {} (column message), fix the export, and validate again. `run` sends the {} valid rows and skips these.",
            if bad == 1 { "" } else { "s" },
            results.display(),
            summary.validated
        ));
    } else {
        // The command that sends this file as it was read here: the same
        // mapping and delimiter, to the configured Banxa or the sandbox.
        let base_url = std::env::var("KYCSHARE_BASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "https://api.banxa-sandbox.com".into());
        let mut s = crate::pipeline::Settings::new(&args.input.input, base_url);
        s.maps = args.input.maps.clone();
        s.delimiter = args.input.delimiter;
        let mut words = crate::pipeline::manifest::command_line(&s, &args.input.input, None);
        if args.mint {
            words.extend(["--mint".into(), "--for-client-id".into()]);
            summary.next_steps.push(format!(
                "every row is valid: send them with {} followed by Banxa's client id in Sumsub",
                crate::pipeline::manifest::shell_line(&words)
            ));
        } else {
            summary.step_with_command(
                "every row is valid: send them (first to Banxa's sandbox, unless KYCSHARE_BASE_URL says otherwise) with:",
                crate::pipeline::manifest::shell_line(&words),
            );
        }
    }
    crate::cmd::print_summary(&summary, args.input.json);
    Ok(summary.exit_code)
}
