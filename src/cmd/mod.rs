//! One module per command, each holding only that command's wiring; the
//! stages (`input`, `request`, `dispatch`, `output`) hold the logic.

pub mod demo;
pub mod ledger;
pub mod mock;
pub mod run;
pub mod validate;

use clap::Args;

use crate::input::Mapping;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::input::Source;
use crate::output::results::{looks_like_results, read_prior};
use crate::output::OutputError;

/// Settings every command gets from the global flags.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub quiet: bool,
}

/// The results path: `--results`, else beside the input. Standard input
/// needs `--results`.
pub fn results_path(args: &InputArgs, source: &Source) -> anyhow::Result<PathBuf> {
    match (&args.results, source) {
        (Some(p), _) => Ok(p.clone()),
        (None, Source::File(p)) => Ok(crate::input::source::beside(p, "results")),
        (None, Source::Stdin) => {
            bail!("reading standard input (-) needs --results FILE: there is no input file to put the results beside")
        }
    }
}

/// Refuses to overwrite an existing results file unless it only holds a
/// dry run's rows (then `validate` may replace it) or `force`.
pub fn check_existing_results(
    path: &Path,
    force: bool,
    dry_run: bool,
) -> Result<bool, OutputError> {
    if !path.exists() {
        return Ok(false);
    }
    if force {
        return Ok(true);
    }
    let what = if !looks_like_results(path) {
        "something that is not a kycshare results file".to_string()
    } else {
        match read_prior(path, false) {
            Ok(p) if dry_run && p.only_dry_run() => return Ok(true),
            Ok(p) if p.only_dry_run() => format!("the results of a dry run ({} rows)", p.rows),
            Ok(p) => format!("the journal of a run ({} rows)", p.rows),
            Err(_) => "an unreadable results file".to_string(),
        }
    };
    Err(OutputError::Exists {
        path: path.display().to_string(),
        what,
    })
}

/// The async runtime of the commands that talk HTTP (run, demo, mock).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// The human summary on stderr; with `--json` also the JSON object on stdout.
pub fn print_summary(summary: &crate::output::Summary, json: bool) {
    eprint!("{}", summary.render());
    if json {
        match serde_json::to_string(summary) {
            Ok(s) => println!("{s}"),
            Err(e) => tracing::error!("cannot serialise the summary: {e}"),
        }
    }
}

/// Flags shared by the commands that read an export.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// The export: a CSV file, a .gz of one (read decompressed), or - for standard input.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Read FIELD from COLUMN (repeatable). FIELD is one of identityReference,
    /// email, mobileNumber, vendor, token (and applicantId with --mint).
    /// Example: --map identityReference=customer_id --map "email=E-mail".
    #[arg(long = "map", value_name = "FIELD=COLUMN")]
    pub maps: Vec<Mapping>,
    /// The field separator: one character, or `tab`.
    #[arg(long, value_name = "C", default_value = ",", value_parser = parse_delimiter)]
    pub delimiter: u8,
    /// Where to write the per-record results (default: beside the input,
    /// export.csv -> export.results.csv; required when INPUT is -).
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Also print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Replace an existing results file instead of refusing.
    #[arg(long)]
    pub force: bool,
}

pub fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 3600.0 => Ok(t),
        _ => Err(format!("`{s}`: expected seconds, above 0 and at most 3600")),
    }
}

pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => return Ok(b'\t'),
        _ => {}
    }
    let b = s.as_bytes();
    if b.len() == 1 && b[0].is_ascii() && b[0] != b'"' && b[0] != b'\n' && b[0] != b'\r' {
        Ok(b[0])
    } else {
        Err(format!(
            "`{s}`: the delimiter must be one ASCII character other than a quote or a line break (or `tab`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("\"").is_err());
    }
}
