//! `kycshare check --base-url URL`: the preflight. Settings, credentials,
//! reachability, TLS and the clock, by one signed request that changes
//! nothing (a `GET` of an identity that cannot exist: 404 means Banxa
//! accepted the credentials); with `--mint`, Sumsub's credentials too.
//! Exit 0 ready, 2 not (saying why).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;

use crate::cmd::parse_timeout;
use crate::dispatch::client::{BanxaClient, Probe};
use crate::http::{http_client, HttpOptions};
use crate::pipeline::plan::{check_base_url, is_loopback_url};
use crate::request::{NonceSource, Signer};

pub const CHECK_ABOUT: &str = "\
Preflight before a run: are the settings, the credentials, the network path,
TLS and this host's clock good enough to send? Sends nothing that changes
data: one signed GET of an identity that cannot exist (Banxa answers 404
when it accepted the credentials), and with --mint one signed read from
Sumsub. Exit 0: ready. Exit 2: not ready, with the reason and what to do.

Examples:
  kycshare check --base-url https://api.banxa-sandbox.com
  kycshare check --base-url https://api.banxa.com --api-secret-file /run/secrets/banxa
  kycshare check --base-url https://api.banxa.com --mint --for-client-id banxa";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Banxa's base URL, as for `run`.
    #[arg(long, env = "KYCSHARE_BASE_URL", value_name = "URL")]
    pub base_url: String,
    /// Read the API secret from this file instead of BANXA_API_SECRET.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) too, as for `run`.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 15.0, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: f64,
    /// Check Sumsub's credentials too (SUMSUB_APP_TOKEN, SUMSUB_SECRET_KEY).
    #[arg(long)]
    pub mint: bool,
    /// With --mint: Banxa's client id in Sumsub (checked for presence only).
    #[arg(long, value_name = "ID")]
    pub for_client_id: Option<String>,
    /// With --mint: Sumsub's API base URL (default https://api.sumsub.com;
    /// required when --base-url is a loopback emulator).
    #[arg(long, value_name = "URL")]
    pub sumsub_base_url: Option<String>,
    /// With --mint: read the Sumsub secret key from this file.
    #[arg(long, value_name = "FILE")]
    pub sumsub_secret_file: Option<PathBuf>,
    /// Print the checks as one JSON object on stdout too.
    #[arg(long)]
    pub json: bool,
}

/// One line of the preflight.
#[derive(Debug, Serialize)]
struct Item {
    name: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    ready: bool,
    #[serde(rename = "baseUrl")]
    base_url: String,
    checks: Vec<Item>,
}

/// How far this host's clock may be from Banxa's before nonces are refused
/// (the emulator, like Banxa, allows 5 minutes).
const SKEW_LIMIT: Duration = Duration::from_secs(300);
/// Past this, say so (a clock drifting towards the limit).
const SKEW_WARN: Duration = Duration::from_secs(30);

pub fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let rt = crate::cmd::pipeline_runtime()?;
    let report = rt.block_on(check(&args));
    for c in &report.checks {
        eprintln!(
            "{} {:<12} {}",
            if c.ok { "ok " } else { "NO " },
            c.name,
            c.detail
        );
    }
    if report.ready {
        eprintln!(
            "ready: a run with these settings can send (kycshare run INPUT --base-url {})",
            report.base_url
        );
    } else {
        eprintln!("not ready: fix what is marked NO above, then check again");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(if report.ready { 0 } else { 2 })
}

async fn check(args: &CheckArgs) -> Report {
    let mut checks = Vec::new();
    let push =
        |checks: &mut Vec<Item>, name, ok, detail: String| checks.push(Item { name, ok, detail });
    let base_url = match check_base_url(&args.base_url) {
        Ok(u) => {
            let how = if u.starts_with("http://") {
                "plain http to a loopback address (the emulator)"
            } else {
                "https"
            };
            push(
                &mut checks,
                "settings",
                true,
                format!("--base-url {u} ({how})"),
            );
            u
        }
        Err(e) => {
            push(&mut checks, "settings", false, e.to_string());
            return finish(args.base_url.clone(), checks);
        }
    };
    let creds = match crate::credentials::banxa(args.api_secret_file.as_deref()) {
        Ok(Some(c)) => {
            let from = match &args.api_secret_file {
                Some(f) => format!("the secret from {}", f.display()),
                None => "BANXA_API_SECRET from the environment".into(),
            };
            push(
                &mut checks,
                "credentials",
                true,
                format!("BANXA_API_KEY from the environment, {from}"),
            );
            c
        }
        Ok(None) => {
            push(&mut checks, "credentials", false, "none: set BANXA_API_KEY and BANXA_API_SECRET (or BANXA_API_KEY and --api-secret-file FILE)".into());
            return finish(base_url, checks);
        }
        Err(e) => {
            push(&mut checks, "credentials", false, e.to_string());
            return finish(base_url, checks);
        }
    };
    let ca_cert_pem = match &args.ca_cert {
        Some(p) => match std::fs::read(p) {
            Ok(pem) => Some(pem),
            Err(e) => {
                push(
                    &mut checks,
                    "tls",
                    false,
                    format!(
                        "cannot read --ca-cert {}: {}",
                        p.display(),
                        crate::model::describe_io(&e)
                    ),
                );
                return finish(base_url, checks);
            }
        },
        None => None,
    };
    let http = match http_client(&HttpOptions {
        ca_cert_pem,
        max_idle_per_host: 1,
    }) {
        Ok(h) => h,
        Err(e) => {
            push(&mut checks, "tls", false, e);
            return finish(base_url, checks);
        }
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    let client = BanxaClient::new(
        http.clone(),
        &base_url,
        Signer::new(creds.api_key.clone(), &creds.api_secret),
        Arc::new(NonceSource::new()),
        timeout,
    );
    let answer = client.probe().await;
    let reply = &answer.reply;
    let ms = reply.latency.as_millis();
    match (&answer.probe, reply.status()) {
        (_, Some(404)) | (_, Some(200)) => {
            if base_url.starts_with("https://") {
                push(&mut checks, "tls", true, "certificate trusted".into());
            }
            push(&mut checks, "banxa", true, format!("a signed GET of an identity that cannot exist answered {} in {ms} ms: the credentials were accepted", reply.status().unwrap_or(0)));
        }
        (_, Some(401)) => push(&mut checks, "banxa", false, format!(
            "answered 401{}: {}",
            reply.code.as_deref().map(|c| format!(" (code {c})")).unwrap_or_default(),
            crate::dispatch::policy::explain_auth_code(reply.code.as_deref())
        )),
        (_, Some(403)) => push(&mut checks, "banxa", false, "answered 403: this key may not use the identity API from here (IP allow-list?); ask Banxa".into()),
        (_, Some(s)) if s == 429 || s >= 500 => push(&mut checks, "banxa", false, format!("answered {s}: Banxa is busy or down right now; check again in a few minutes")),
        (_, Some(s)) => push(&mut checks, "banxa", false, format!("answered {s} to a signed GET of an identity that cannot exist (expected 404): is --base-url Banxa's API? {}", reply.message)),
        (_, None) => {
            let name = if reply.answer == crate::model::Answer::Untrusted { "tls" } else { "reach" };
            let why = if let Probe::Down(w) = &answer.probe { w.clone() } else { reply.message.clone() };
            push(&mut checks, name, false, format!(
                "{} unreachable: {why}; {}",
                client.address(),
                crate::dispatch::unreachable_hint(&why)
            ));
        }
    }
    if let Some(date) = answer.date {
        let now = SystemTime::now();
        let (skew, ahead) = match now.duration_since(date) {
            Ok(d) => (d, true),
            Err(e) => (e.duration(), false),
        };
        // The Date header has a 1-second resolution.
        let shown = format!(
            "this host's clock is {:.0} s {} the server's",
            skew.as_secs_f64(),
            if ahead { "ahead of" } else { "behind" }
        );
        if skew > SKEW_LIMIT {
            push(&mut checks, "clock", false, format!("{shown}: Banxa refuses nonces more than 5 minutes off (401, code 40002); sync the clock (NTP, `timedatectl status`)"));
        } else if skew > SKEW_WARN {
            push(
                &mut checks,
                "clock",
                true,
                format!("{shown}: within Banxa's 5 minutes, but sync it (NTP) before a long run"),
            );
        } else {
            push(&mut checks, "clock", true, shown);
        }
    }
    if args.mint {
        check_sumsub(args, &base_url, http, timeout, &mut checks).await;
    }
    finish(base_url, checks)
}

async fn check_sumsub(
    args: &CheckArgs,
    base_url: &str,
    http: reqwest::Client,
    timeout: Duration,
    checks: &mut Vec<Item>,
) {
    let mut push = |name, ok, detail: String| checks.push(Item { name, ok, detail });
    let creds = match crate::request::mint::credentials(args.sumsub_secret_file.as_deref()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return push("sumsub", false, "--mint needs SUMSUB_APP_TOKEN and SUMSUB_SECRET_KEY (or --sumsub-secret-file FILE)".into());
        }
        Err(e) => return push("sumsub", false, e.to_string()),
    };
    let client_id = args.for_client_id.clone().filter(|c| !c.trim().is_empty());
    if client_id.is_none() {
        push(
            "sumsub",
            false,
            "--mint needs --for-client-id ID (Banxa's client id in Sumsub)".into(),
        );
    }
    let sumsub_base = match &args.sumsub_base_url {
        Some(u) => u.clone(),
        None if is_loopback_url(base_url) => {
            return push("sumsub", false, format!("--mint with a loopback --base-url needs --sumsub-base-url (e.g. --sumsub-base-url {base_url}): a rehearsal must not touch production Sumsub"));
        }
        None => crate::request::mint::DEFAULT_BASE_URL.to_string(),
    };
    let sumsub_base = match check_base_url(&sumsub_base) {
        Ok(u) => u,
        Err(e) => return push("sumsub", false, format!("--sumsub-base-url: {e}")),
    };
    let client = crate::request::mint::SumsubClient::new(
        &sumsub_base,
        creds,
        client_id.unwrap_or_default(),
        60,
        http,
    );
    match client.check(timeout).await {
        Ok((s @ (404 | 200), _)) => push("sumsub", true, format!("{sumsub_base}: a signed read of an applicant that cannot exist answered {s}: the app token and secret were accepted")),
        Ok((401, text)) => push("sumsub", false, format!("{sumsub_base} answered 401 {text}: SUMSUB_APP_TOKEN or SUMSUB_SECRET_KEY is wrong (or this host's clock is more than a minute off)")),
        Ok((s, text)) => push("sumsub", false, format!("{sumsub_base} answered {s} {text} (expected 404)")),
        Err(why) => push("sumsub", false, format!("{sumsub_base} unreachable: {why}")),
    }
}

fn finish(base_url: String, checks: Vec<Item>) -> Report {
    Report {
        ready: checks.iter().all(|c| c.ok),
        base_url,
        checks,
    }
}
