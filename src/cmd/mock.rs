//! `kycshare mock`: run the local Banxa emulator (see `crate::mock` for what
//! it checks and `docs/emulator.md` for how to rehearse with it).
//!
//! ```text
//! kycshare mock [--listen ADDR] [--api-key KEY] [--api-secret-file FILE]
//!               [--rate-limit N/min|off] [--latency MS] [--fail-rate P]
//!               [--reset-rate P] [--hang-rate P] [--fail-first N]
//!               [--unauth-after N] [--seed S] [--record FILE]
//!               [--sumsub-app-token TOKEN] [--sumsub-secret-file FILE]
//!               [--check-tokens] [--consume-token-on-fault]
//!               [--sumsub-fail-rate P] [--sumsub-latency MS]
//!               [--sumsub-forbidden-client ID] [--latency-jitter MS]
//!               [--tls-cert FILE --tls-key FILE] [--error-codes]
//!               [--outage-after S --outage-for D] [--kyc-delay SECONDS]
//!               [--kyc-reject-rate P]
//! ```
//!
//! This module is wiring only: flags to [`MockConfig`], start, print the
//! address, wait for SIGINT/SIGTERM, shut down.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::mock::{MockConfig, MockServer};
use crate::secret::Secret;

pub const MOCK_ABOUT: &str = "\
A local Banxa: serves POST /eapi/v0/identities/token/share exactly as the API
is documented (HMAC check, nonces, validation with 422, rate limit with 429)
and GET /eapi/v0/identities/{identityReference} (404 until accepted, then
kyc.status), and injects faults and maintenance windows on request, so that a migration can be rehearsed with no
network and no real credentials. Prints `listening on http://ADDR` once ready.

Example:
  BANXA_API_KEY=test BANXA_API_SECRET=test kycshare mock --listen 127.0.0.1:8080 --fail-rate 0.05 --seed 1
  curl http://127.0.0.1:8080/stats";

/// A local Banxa emulator: serves POST /eapi/v0/identities/token/share with
/// Banxa's authentication, validation and rate limit, plus injected faults,
/// Sumsub's POST /resources/accessTokens/shareToken (share-token minting),
/// and GET /stats. Prints `listening on http://ADDR` once ready; stops
/// cleanly on Ctrl-C or SIGTERM.
#[derive(clap::Args, Debug)]
pub struct MockArgs {
    /// Address to listen on. Port 0 picks a free port; the address actually
    /// bound is printed on stdout as `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The API key clients must present (the KEY in
    /// `Authorization: Bearer KEY:SIGNATURE:NONCE`).
    #[arg(
        long,
        env = "BANXA_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// File holding the API secret (first line). Without it the secret is
    /// read from the environment variable BANXA_API_SECRET. The secret is
    /// never accepted as a command-line value.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,

    /// Refused, with what to do: a secret on the command line lands in
    /// shell history and `ps`.
    #[arg(long, hide = true, value_name = "SECRET")]
    pub secret: Option<String>,
    /// Refused, as --secret.
    #[arg(long, hide = true, value_name = "SECRET")]
    pub api_secret: Option<String>,

    /// Requests admitted per sliding 60-second window, all endpoints but
    /// /stats combined; over it, 429 with Retry-After. `N/min` (or just N),
    /// or `off`. Banxa's published limit is 500/min.
    #[arg(long, default_value = "500/min", value_name = "N/min|off", value_parser = parse_rate_limit)]
    pub rate_limit: RateLimit,

    /// Delay added to every Banxa answer, in milliseconds (or with a unit:
    /// 250ms, 2s). Use it to rehearse against a slow API. Sumsub's answers
    /// get --sumsub-latency instead.
    #[arg(long, default_value = "0", value_name = "MS", value_parser = parse_latency)]
    pub latency: Duration,

    /// Probability (0 to 1) that a valid request gets 500 Server Error with
    /// a traceId. Nothing is accepted on a 500: the client may retry.
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_probability)]
    pub fail_rate: f64,

    /// Probability (0 to 1) that a valid request's connection is dropped
    /// without an answer (the client sees a connection error).
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_probability)]
    pub reset_rate: f64,

    /// Probability (0 to 1) that a valid request is never answered (the
    /// client must time out).
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_probability)]
    pub hang_rate: f64,

    /// The first N valid requests of each identityReference get 500, the
    /// next one 202: deterministic retry rehearsals.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_first: u32,
    /// A maintenance window: from SECONDS after the start, every Banxa
    /// request answers 503 for --outage-for.
    #[arg(long, value_name = "SECONDS")]
    pub outage_after: Option<f64>,
    /// The length of the maintenance window (with --outage-after).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub outage_for: f64,
    /// GET of an identity answers kyc.status PENDING until SECONDS after its
    /// last accepted share, then VERIFIED (or REJECTED, --kyc-reject-rate).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub kyc_delay: f64,
    /// Probability (0 to 1) that an accepted identity's KYC ends REJECTED
    /// instead of VERIFIED. Decided per identityReference from --seed, so
    /// the same identities are rejected in every replay.
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_probability)]
    pub kyc_reject_rate: f64,

    /// Every share request after the Nth gets 401 (reason `revoked`), as if
    /// the key were revoked mid-run.
    #[arg(long, value_name = "N")]
    pub unauth_after: Option<u64>,

    /// Seed for the random faults (--fail-rate, --reset-rate, --hang-rate)
    /// and of which identities --kyc-reject-rate rejects, so a run can be
    /// replayed. Without it a seed is picked and printed on
    /// stderr.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Append one JSON line per share request to FILE (sequence, time,
    /// identityReference, status, nonce; the payload of accepted ones), and
    /// per identity GET (with "route":"identity" and "method").
    /// It holds personal data: created with mode 0600.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Sumsub's app token clients must present in X-App-Token on the
    /// share-token endpoint. Without it (and a Sumsub secret) that endpoint
    /// answers 401.
    #[arg(
        long,
        env = "SUMSUB_APP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub sumsub_app_token: Option<String>,

    /// File holding Sumsub's secret key (first line), the HMAC key of
    /// X-App-Access-Sig. Without it the secret is read from the environment
    /// variable SUMSUB_SECRET_KEY; never from the command line.
    #[arg(long, value_name = "FILE")]
    pub sumsub_secret_file: Option<PathBuf>,

    /// The share endpoint accepts only tokens this emulator minted, once,
    /// before they expire; otherwise 422 on provider.token.
    #[arg(long)]
    pub check_tokens: bool,

    /// With --check-tokens: an injected fault (500, reset, hang) uses the
    /// request's token up, as a real failure after Banxa redeemed it would.
    #[arg(long, requires = "check_tokens")]
    pub consume_token_on_fault: bool,

    /// Probability (0 to 1) that a valid Sumsub share-token request gets 500.
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_probability)]
    pub sumsub_fail_rate: f64,

    /// Delay added to every Sumsub answer, in milliseconds (or with a unit).
    /// --latency applies to Banxa's answers only.
    #[arg(long, default_value = "0", value_name = "MS", value_parser = parse_latency)]
    pub sumsub_latency: Duration,

    /// Sumsub answers 403 to share-token requests for this forClientId (a
    /// client the applicant's data may not be shared with).
    #[arg(long, value_name = "ID")]
    pub sumsub_forbidden_client: Option<String>,

    /// A random extra delay added to every Banxa answer, uniform between 0
    /// and this (milliseconds, or with a unit), on top of --latency.
    #[arg(long, default_value = "0", value_name = "MS", value_parser = parse_latency)]
    pub latency_jitter: Duration,

    /// 401 answers carry Banxa's authentication error `code` and a
    /// `request_id`, as Banxa documents them: 40001 nonce not 10/13/16
    /// digits, 40002 nonce too old, 40003 nonce reused, 40100 unknown (or
    /// revoked) key, 40101 malformed header, 40102 header missing, 40103
    /// signature mismatch (a body that is not compact included).
    #[arg(long)]
    pub error_codes: bool,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    /// Clients trust a private CA with `kycshare run --ca-cert FILE`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `--rate-limit`: requests per minute, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit(pub Option<u32>);

fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(RateLimit(None));
    }
    let number = text.strip_suffix("/min").unwrap_or(text);
    match number.parse::<u32>() {
        Ok(n) if n > 0 => Ok(RateLimit(Some(n))),
        _ => Err(format!(
            "expected N/min with N a positive whole number (e.g. 500/min), or off; got {text:?}"
        )),
    }
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "expected a probability between 0 and 1 (e.g. 0.05); got {text:?}"
        )),
    }
}

fn parse_latency(text: &str) -> Result<Duration, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("expected milliseconds (e.g. 250) or a duration (e.g. 2s): {e}"))
}

/// Builds the emulator's configuration from the flags and the environment.
pub fn config(args: &MockArgs) -> anyhow::Result<MockConfig> {
    let Some(api_key) = args.api_key.clone().filter(|k| !k.is_empty()) else {
        bail!("no API key: pass --api-key KEY or set BANXA_API_KEY");
    };
    let api_secret = match &args.api_secret_file {
        Some(path) => Secret::from_file(path)
            .with_context(|| format!("cannot read the API secret file {}", path.display()))?,
        None => match std::env::var("BANXA_API_SECRET") {
            Ok(value) => Secret::new(value),
            Err(_) => bail!(
                "no API secret: set BANXA_API_SECRET or pass --api-secret-file FILE \
                 (the secret is never taken from the command line)"
            ),
        },
    };
    if api_secret.is_empty() {
        bail!("the API secret is empty: check BANXA_API_SECRET or --api-secret-file");
    }
    let mut config = MockConfig::new(api_key, api_secret);
    config.rate_limit_per_min = args.rate_limit.0;
    config.latency = args.latency;
    config.latency_jitter = args.latency_jitter;
    config.error_codes = args.error_codes;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        config.tls = Some(crate::mock::TlsPem {
            cert_chain: read(cert)?,
            key: read(key)?,
        });
    }
    config.fail_rate = args.fail_rate;
    config.reset_rate = args.reset_rate;
    config.hang_rate = args.hang_rate;
    config.fail_first = args.fail_first;
    config.outage_after = args
        .outage_after
        .map(|s| Duration::from_secs_f64(s.max(0.0)));
    config.outage_for = Duration::from_secs_f64(args.outage_for.max(0.0));
    config.kyc_delay = Duration::from_secs_f64(args.kyc_delay.max(0.0));
    config.kyc_reject_rate = args.kyc_reject_rate;
    config.unauth_after = args.unauth_after;
    config.seed = args.seed;
    config.record = args.record.clone();
    let sumsub_secret =
        crate::credentials::secret_from(args.sumsub_secret_file.as_deref(), "SUMSUB_SECRET_KEY")?;
    let sumsub_app_token = args
        .sumsub_app_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match (sumsub_app_token, &sumsub_secret) {
        (Some(_), None) => bail!(
            "a Sumsub app token but no Sumsub secret: set SUMSUB_SECRET_KEY or pass \
             --sumsub-secret-file FILE"
        ),
        (None, Some(_)) => {
            bail!(
                "a Sumsub secret but no app token: pass --sumsub-app-token or set SUMSUB_APP_TOKEN"
            )
        }
        _ => {}
    }
    config.sumsub_app_token = sumsub_app_token.map(str::to_string);
    config.sumsub_secret = sumsub_secret;
    config.check_tokens = args.check_tokens;
    config.consume_token_on_fault = args.consume_token_on_fault;
    config.sumsub_fail_rate = args.sumsub_fail_rate;
    config.sumsub_latency = args.sumsub_latency;
    config.sumsub_forbidden_client = args.sumsub_forbidden_client.clone();
    Ok(config)
}

/// Runs the emulator until SIGINT or SIGTERM. Returns the exit code (0).
pub async fn run(args: MockArgs) -> anyhow::Result<i32> {
    if args.secret.is_some() || args.api_secret.is_some() {
        anyhow::bail!("the emulator's API secret is never taken from the command line (it would land in shell history and `ps`): export BANXA_API_SECRET=… or pass --api-secret-file FILE");
    }
    let config = config(&args)?;
    let random_faults = config.fail_rate > 0.0
        || config.reset_rate > 0.0
        || config.hang_rate > 0.0
        || config.sumsub_fail_rate > 0.0
        || config.kyc_reject_rate > 0.0;
    let sumsub = config.sumsub_app_token.is_some();
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = MockServer::start(args.listen, config)
        .await
        .context("cannot start the emulator")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {scheme}://{}", server.addr())?;
        stdout.flush()?;
    }
    if random_faults && args.seed.is_none() {
        eprintln!("fault seed: {} (pass --seed to replay)", server.seed());
    }
    if !sumsub {
        eprintln!(
            "Sumsub endpoint: no app token and secret (SUMSUB_APP_TOKEN, SUMSUB_SECRET_KEY): \
             it answers 401"
        );
    }
    wait_for_signal().await?;
    let stats = server.stats();
    server.shutdown().await;
    eprintln!(
        "stopped: {} requests, {} share requests, {} identity requests, by status {:?}; Sumsub {:?}, {} tokens minted",
        stats.total,
        stats.share_requests,
        stats.identity_requests,
        stats.by_status,
        stats.sumsub_requests,
        stats.tokens_minted
    );
    Ok(0)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch Ctrl-C")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_forms() {
        assert_eq!(parse_rate_limit("500/min"), Ok(RateLimit(Some(500))));
        assert_eq!(parse_rate_limit("20"), Ok(RateLimit(Some(20))));
        assert_eq!(parse_rate_limit("off"), Ok(RateLimit(None)));
        assert!(parse_rate_limit("0/min").is_err());
        assert!(parse_rate_limit("10/s").is_err());
    }

    #[test]
    fn latency_forms() {
        assert_eq!(parse_latency("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_latency("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_latency("soon").is_err());
    }

    #[test]
    fn probabilities() {
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("NaN").is_err());
    }
}
