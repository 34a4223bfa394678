//! The plan of a run: what the operator asked for ([`Settings`], no
//! command line in it) resolved once into what the run does ([`Plan`]):
//! defaults applied, URLs checked, credentials read, paths chosen. `run`
//! and `demo` both build `Settings`, so every default is written here
//! only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::credentials::{BanxaCredentials, CredentialError};
use crate::dispatch::concurrency::Concurrency;
use crate::dispatch::limiter::Rate;
use crate::http::HttpOptions;
use crate::input::{InputOptions, Mapping, Source, TokenMode};
use crate::output::results::{looks_like_results, read_prior};
use crate::output::OutputError;
use crate::request::mint::SumsubCredentials;

use super::manifest::{command_line, find_parent, resume_command, shell_line, Manifest};

/// Attempts per row for retryable answers, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Seconds to wait for each answer, by default.
pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
/// Lifetime of a minted token, by default (seconds).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 600;
/// Idle keep-alive connections kept per host.
const MAX_IDLE_PER_HOST: usize = 64;

/// Why a run cannot start (exit 2, nothing sent).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A setting that cannot be used, in words.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// No credentials configured at all.
    #[error("{0}")]
    NoCredentials(String),
    #[error("cannot read the CA certificate {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl PlanError {
    /// See [`super::RunError::class`].
    pub fn class(&self) -> &'static str {
        match self {
            PlanError::Usage(_) => "usage",
            PlanError::Credentials(_) | PlanError::NoCredentials(_) => "credentials",
            PlanError::CaCert { .. } => "tls",
            PlanError::Output(_) => "output",
        }
    }
}

fn usage(s: String) -> PlanError {
    PlanError::Usage(s)
}

/// What the operator asked for: every setting of a run, before defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The export, or `-` for standard input.
    pub input: PathBuf,
    pub maps: Vec<Mapping>,
    pub delimiter: u8,
    pub results: Option<PathBuf>,
    pub retry_file: Option<PathBuf>,
    pub base_url: String,
    /// `None`: by environment ([`default_rate`]).
    pub rate: Option<Rate>,
    pub concurrency: Concurrency,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub resume: bool,
    pub force: bool,
    /// Banxa's credentials given directly (the demo); `None` reads them
    /// from the environment (and `api_secret_file`).
    pub credentials: Option<BanxaCredentials>,
    pub api_secret_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub ledger: Option<crate::ledger::LedgerLocation>,
    pub metrics_file: Option<PathBuf>,
    /// `--metrics-listen`: serve `/metrics` here while the run lasts.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub mint: Option<MintSettings>,
    /// A progress bar (or lines) on stderr.
    pub progress: bool,
    /// Off a terminal, a progress line this often (zero: none).
    pub progress_interval: Duration,
    /// `--limit N`: stop after N records have been sent (a canary). Not
    /// stored in the manifest: `resume` continues the rest.
    pub limit: Option<u64>,
    /// The results file of the run whose retry file the input is (found
    /// when `None`).
    pub parent: Option<PathBuf>,
    /// `--max-outage`: how long nothing may succeed before the run stops.
    pub max_outage: Duration,
    /// `--reshare-unverified AGE` (with `--ledger`): identities accepted at
    /// least AGE ago whose last verification was not `VERIFIED` are sent again.
    pub reshare_unverified: Option<Duration>,
    /// `kycshare resume`: the stored manifest is kept as it is (pacing
    /// overrides are for this session only).
    pub keep_manifest: bool,
}

impl Settings {
    /// The defaults, for this input and base URL.
    pub fn new(input: impl Into<PathBuf>, base_url: impl Into<String>) -> Settings {
        Settings {
            input: input.into(),
            maps: Vec::new(),
            delimiter: b',',
            results: None,
            retry_file: None,
            base_url: base_url.into(),
            rate: None,
            concurrency: Concurrency::Auto,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
            resume: false,
            force: false,
            credentials: None,
            api_secret_file: None,
            ca_cert: None,
            ledger: None,
            metrics_file: None,
            metrics_listen: None,
            mint: None,
            progress: true,
            progress_interval: crate::output::progress::DEFAULT_INTERVAL,
            limit: None,
            parent: None,
            keep_manifest: false,
            max_outage: crate::dispatch::breaker::DEFAULT_MAX_OUTAGE,
            reshare_unverified: None,
        }
    }
}

/// `--mint`, as asked.
#[derive(Debug, Clone, Default)]
pub struct MintSettings {
    pub for_client_id: Option<String>,
    /// `None`: [`DEFAULT_TOKEN_TTL_SECS`].
    pub token_ttl: Option<u64>,
    /// `None`: Sumsub's production API (refused for a loopback Banxa).
    pub sumsub_base_url: Option<String>,
    /// `None`: [`default_mint_rate`].
    pub mint_rate: Option<Rate>,
    /// Sumsub's credentials given directly (the demo); `None` reads them
    /// from the environment (and `sumsub_secret_file`).
    pub credentials: Option<SumsubCredentials>,
    pub sumsub_secret_file: Option<PathBuf>,
}

/// Everything a run needs, checked.
pub struct Plan {
    pub source: Source,
    pub opts: InputOptions,
    pub results: PathBuf,
    pub retry: PathBuf,
    pub resume: bool,
    pub force: bool,
    pub base_url: String,
    pub creds: BanxaCredentials,
    pub rate: Rate,
    pub concurrency: Concurrency,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub http: HttpOptions,
    pub progress: bool,
    pub progress_interval: Duration,
    pub ledger: Option<crate::ledger::LedgerLocation>,
    /// `--reshare-unverified AGE`: identities whose last verification,
    /// made at least AGE after they were accepted, found a status other
    /// than `VERIFIED` are not skipped.
    pub reshare_age: Option<Duration>,
    pub metrics: Option<PathBuf>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub mint: Option<MintPlan>,
    /// Said once at the start (a rate above the published limit).
    pub warnings: Vec<String>,
    /// `--limit N`.
    pub limit: Option<u64>,
    pub max_outage: Duration,
    /// The settings as asked, for the commands printed as next steps.
    pub settings: Settings,
    /// How the run was started: stored beside the results file before the
    /// first request (kept as it is when a run is resumed).
    pub manifest: Manifest,
    /// True when `manifest` is already on disk (a resumed run).
    pub manifest_stored: bool,
}

/// `--mint`: where and how tokens are minted.
pub struct MintPlan {
    pub creds: SumsubCredentials,
    pub base_url: String,
    pub for_client_id: String,
    pub ttl_secs: u64,
    pub rate: Rate,
}

impl Plan {
    /// Applies the defaults and checks everything that can be checked
    /// before the input is opened.
    pub fn resolve(s: Settings) -> Result<Plan, PlanError> {
        let asked = Settings {
            credentials: None,
            mint: s.mint.clone().map(|m| MintSettings {
                credentials: None,
                ..m
            }),
            ..s.clone()
        };
        let base_url = check_base_url(&s.base_url)?;
        if s.reshare_unverified.is_some() && s.ledger.is_none() {
            return Err(usage("--reshare-unverified needs --ledger FILE: the ledger is what knows which identities were accepted and what `kycshare verify --ledger` found".into()));
        }
        let rate = s.rate.unwrap_or_else(|| default_rate(&base_url));
        let warnings = rate_warning(rate, &base_url).into_iter().collect();
        let creds = match s.credentials {
            Some(c) => c,
            None => crate::credentials::banxa(s.api_secret_file.as_deref())?.ok_or_else(|| {
                PlanError::NoCredentials("no credentials: set BANXA_API_KEY and BANXA_API_SECRET (or BANXA_API_KEY and --api-secret-file FILE)".into())
            })?,
        };
        let source = Source::from_arg(&s.input);
        if s.resume && source == Source::Stdin {
            return Err(usage("standard input cannot be resumed (it cannot be read again): save the export to a file and run on that".into()));
        }
        let results = results_path(s.results.as_deref(), &source)?;
        let retry = match (&s.retry_file, &source) {
            (Some(p), _) => p.clone(),
            (None, Source::File(p)) => crate::input::source::beside(p, "retry"),
            (None, Source::Stdin) => crate::input::source::beside(&results, "retry"),
        };
        let (manifest, manifest_stored) = manifest_for(&asked, &source, &results, &retry)?;
        let mint = match s.mint {
            Some(m) => Some(resolve_mint(m, &base_url, rate)?),
            None => None,
        };
        let ca_cert_pem = match &s.ca_cert {
            Some(p) => Some(std::fs::read(p).map_err(|e| PlanError::CaCert {
                path: p.display().to_string(),
                reason: crate::model::describe_io(&e),
            })?),
            None => None,
        };
        Ok(Plan {
            source,
            opts: InputOptions {
                delimiter: s.delimiter,
                maps: s.maps,
                mode: if mint.is_some() {
                    TokenMode::Mint
                } else {
                    TokenMode::Token
                },
            },
            results,
            retry,
            resume: s.resume,
            force: s.force,
            base_url,
            creds,
            rate,
            concurrency: s.concurrency,
            max_attempts: s.max_attempts,
            timeout: s.timeout,
            http: HttpOptions {
                ca_cert_pem,
                max_idle_per_host: MAX_IDLE_PER_HOST,
            },
            progress: s.progress,
            progress_interval: s.progress_interval,
            ledger: s.ledger,
            reshare_age: s.reshare_unverified,
            metrics: s.metrics_file,
            metrics_listen: s.metrics_listen,
            mint,
            warnings,
            limit: s.limit,
            max_outage: s.max_outage,
            settings: asked,
            manifest,
            manifest_stored,
        })
    }
}

/// The manifest of this run: the stored one when resuming (refused when a
/// setting that changes what is sent or where differs), else a new one.
/// Refuses `--resume` without a results file, and a results file that
/// belongs to a run of another input.
fn manifest_for(
    s: &Settings,
    source: &Source,
    results: &Path,
    retry: &Path,
) -> Result<(Manifest, bool), PlanError> {
    let started = crate::model::rfc3339_millis(std::time::SystemTime::now());
    let mut fresh = Manifest::of(s, results, retry, started);
    if s.resume && !results.exists() {
        let mut again = s.clone();
        again.resume = false;
        return Err(usage(format!(
            "--resume: there is no results file {} to continue from, so there is no run to resume (was it started with another --results?). To start the run: {}",
            results.display(),
            shell_line(&command_line(&again, &s.input, s.results.as_deref()))
        )));
    }
    let stored = if results.exists() {
        Manifest::load(results)?
    } else {
        None
    };
    match stored {
        Some(stored) if s.resume => {
            let diff = stored.differences(&fresh);
            if !diff.is_empty() {
                return Err(usage(format!(
                    "--resume: {} was started with other settings, and resuming with these would send other data or send it elsewhere:\n  {}\nContinue the run as it was started with: {}",
                    results.display(),
                    diff.join("\n  "),
                    resume_command(results)
                )));
            }
            if s.keep_manifest {
                return Ok((stored, true));
            }
            // `run … --resume`: the settings that may differ (pacing, the
            // CA, the secret file) are the latest ones from now on.
            fresh.started_at = stored.started_at;
            fresh.parent = stored.parent;
            Ok((fresh, false))
        }
        Some(stored) if !s.force && stored.input != fresh.input && *source != Source::Stdin => {
            let mut own = s.clone();
            own.resume = false;
            let mut own_results = crate::input::source::beside(&s.input, "results");
            if absolute_eq(&own_results, results) {
                own_results = crate::input::source::beside(&s.input, "2.results");
            }
            Err(usage(format!(
                "{} belongs to the run of {} (started {}), not to {}. To continue that run: {}. To send {} instead, give it a results file of its own: {}",
                results.display(),
                stored.input.display(),
                stored.started_at,
                s.input.display(),
                resume_command(results),
                s.input.display(),
                shell_line(&command_line(&own, &s.input, Some(&own_results)))
            )))
        }
        _ => {
            fresh.parent = s.parent.clone().or_else(|| match source {
                Source::File(p) => find_parent(p),
                Source::Stdin => None,
            });
            Ok((fresh, false))
        }
    }
}

fn absolute_eq(a: &Path, b: &Path) -> bool {
    std::path::absolute(a).ok() == std::path::absolute(b).ok()
}

fn resolve_mint(m: MintSettings, base_url: &str, rate: Rate) -> Result<MintPlan, PlanError> {
    let creds = match m.credentials {
        Some(c) => c,
        None => crate::request::mint::credentials(m.sumsub_secret_file.as_deref())?.ok_or_else(|| {
            PlanError::NoCredentials("--mint needs Sumsub credentials: set SUMSUB_APP_TOKEN and SUMSUB_SECRET_KEY (or --sumsub-secret-file FILE)".into())
        })?,
    };
    let for_client_id = m
        .for_client_id
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            usage("--mint needs --for-client-id ID (Banxa's client id in Sumsub)".into())
        })?;
    let sumsub_base = match m.sumsub_base_url {
        Some(u) => u,
        None if is_loopback_url(base_url) => return Err(usage(format!(
            "--mint with a loopback --base-url ({base_url}) needs --sumsub-base-url: a rehearsal must not mint production tokens from {}; point it at the emulator too (e.g. --sumsub-base-url {base_url})",
            crate::request::mint::DEFAULT_BASE_URL
        ))),
        None => crate::request::mint::DEFAULT_BASE_URL.to_string(),
    };
    let base =
        check_base_url(&sumsub_base).map_err(|e| usage(format!("--sumsub-base-url: {e}")))?;
    Ok(MintPlan {
        creds,
        base_url: base,
        for_client_id,
        ttl_secs: m.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL_SECS),
        rate: m.mint_rate.unwrap_or_else(|| default_mint_rate(rate)),
    })
}

/// The results path: the one given, else beside the input. Standard input
/// needs one.
pub fn results_path(given: Option<&Path>, source: &Source) -> Result<PathBuf, PlanError> {
    match (given, source) {
        (Some(p), _) => Ok(p.to_path_buf()),
        (None, Source::File(p)) => Ok(crate::input::source::beside(p, "results")),
        (None, Source::Stdin) => Err(usage(
            "reading standard input (-) needs --results FILE: there is no input file to put the results beside".into(),
        )),
    }
}

/// Refuses to overwrite an existing results file unless it only holds a
/// dry run's rows (nothing was sent: it may be replaced) or `force`.
/// `Ok(true)`: the file exists and may be replaced. `validating`: the
/// caller is `validate` (its advice names only its own flags).
pub fn check_existing_results(
    path: &Path,
    force: bool,
    validating: bool,
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
            Ok(p) if p.only_dry_run() => return Ok(true),
            Ok(p) => format!("the journal of a run ({} rows)", p.rows),
            Err(_) => "an unreadable results file".to_string(),
        }
    };
    let advice = if validating {
        "A dry run does not replace it: write the dry run elsewhere with --results FILE (or replace the file with --force)".to_string()
    } else if super::manifest::manifest_path(path).exists() {
        format!(
            "Continue that run with: {}; or replace the file with --force, or write elsewhere with --results FILE",
            super::manifest::resume_command(path)
        )
    } else {
        "Add --resume to continue that run, --force to replace the file, or --results FILE to write elsewhere".to_string()
    };
    Err(OutputError::Exists {
        path: path.display().to_string(),
        what,
        advice,
    })
}

/// Banxa's sandbox host: 120 requests/min per merchant account there.
pub const SANDBOX_HOST: &str = "api.banxa-sandbox.com";
/// The default `--rate` in production: under Banxa's 500/min per IP, with
/// room for the other endpoints and clock drift.
pub const DEFAULT_RATE: Rate = Rate {
    n: 450,
    per: Duration::from_secs(60),
};
/// The default `--rate` on the sandbox: under its 120/min.
pub const DEFAULT_SANDBOX_RATE: Rate = Rate {
    n: 100,
    per: Duration::from_secs(60),
};
/// Sumsub's limit, 50 POST per 5 s, less a margin: the most `--mint-rate`
/// defaults to.
pub const MAX_DEFAULT_MINT_RATE: Rate = Rate {
    n: 540,
    per: Duration::from_secs(60),
};

fn is_sandbox(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case(SANDBOX_HOST)))
        .unwrap_or(false)
}

/// `--rate` when none is given: 100/min on Banxa's sandbox, else 450/min.
pub fn default_rate(base_url: &str) -> Rate {
    if is_sandbox(base_url) {
        DEFAULT_SANDBOX_RATE
    } else {
        DEFAULT_RATE
    }
}

/// `--mint-rate` when none is given: twice the Banxa rate, at most 540/min.
pub fn default_mint_rate(rate: Rate) -> Rate {
    let doubled = Rate {
        n: rate.n.saturating_mul(2),
        per: rate.per,
    };
    if doubled.per_second() > MAX_DEFAULT_MINT_RATE.per_second() {
        MAX_DEFAULT_MINT_RATE
    } else {
        doubled
    }
}

/// A warning, in words, when `rate` is above Banxa's published limit for
/// `base_url` (loopback emulators have no published limit).
pub fn rate_warning(rate: Rate, base_url: &str) -> Option<String> {
    if is_loopback_url(base_url) {
        return None;
    }
    let (limit, what) = if is_sandbox(base_url) {
        (
            120.0,
            "120 requests per minute per merchant account on the sandbox",
        )
    } else {
        (
            500.0,
            "500 requests per minute per IP, all endpoints together",
        )
    };
    let per_min = f64::from(rate.n) * 60.0 / rate.per.as_secs_f64();
    (per_min > limit).then(|| {
        format!(
            "--rate {rate} ({per_min:.0}/min) is above Banxa's published limit of {what}: expect 429s (each one retried and slowing the run) unless Banxa raised your limit"
        )
    })
}

/// True when the URL's host is a loopback address (or `localhost`).
pub fn is_loopback_url(s: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(s.trim()) else {
        return false;
    };
    let h = url.host_str().unwrap_or("");
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `https://…`, or `http://` to a loopback host only. Returns it without a
/// trailing slash.
pub fn check_base_url(s: &str) -> Result<String, PlanError> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| {
        usage(format!(
            "--base-url `{s}` is not a URL ({e}); expected e.g. https://api.banxa.com"
        ))
    })?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" => {}
        "http" => {
            if !is_loopback_url(s) {
                return Err(usage(format!("refusing to send customer data over plain http to {host}: use https (http is allowed only to a loopback address, for the emulator)")));
            }
        }
        other => {
            return Err(usage(format!(
                "--base-url scheme `{other}` is not supported: use https://"
            )))
        }
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(usage(format!("--base-url must be the base only (e.g. https://api.banxa.com), without a path: got {s}")));
    }
    Ok(s.trim().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn rate_defaults_follow_the_published_limits() {
        assert_eq!(default_rate("https://api.banxa.com"), r("450/min"));
        assert_eq!(default_rate("https://api.banxa-sandbox.com"), r("100/min"));
        assert_eq!(default_rate("https://API.Banxa-Sandbox.com"), r("100/min"));
        assert_eq!(default_rate("http://127.0.0.1:8080"), r("450/min"));
        assert_eq!(default_mint_rate(r("100/min")), r("200/min"));
        assert_eq!(default_mint_rate(r("270/min")), r("540/min"));
        assert_eq!(default_mint_rate(r("450/min")), r("540/min"));
        assert_eq!(default_mint_rate(r("100/s")), r("540/min"));
        assert_eq!(default_mint_rate(r("2/s")), r("4/s"));
    }

    #[test]
    fn a_rate_above_the_limit_is_warned_about() {
        assert!(rate_warning(r("450/min"), "https://api.banxa.com").is_none());
        assert!(rate_warning(r("500/min"), "https://api.banxa.com").is_none());
        let w = rate_warning(r("10/s"), "https://api.banxa.com").unwrap();
        assert!(
            w.contains("600/min") && w.contains("500 requests per minute"),
            "{w}"
        );
        assert!(rate_warning(r("100/min"), "https://api.banxa-sandbox.com").is_none());
        assert!(rate_warning(r("450/min"), "https://api.banxa-sandbox.com")
            .unwrap()
            .contains("120 requests per minute"));
        assert!(rate_warning(r("100/s"), "http://127.0.0.1:1").is_none());
    }
}
