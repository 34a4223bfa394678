//! `kycshare demo`: the whole job on the embedded emulator. Starts a local
//! Banxa on a loopback port with throwaway credentials and a few injected
//! 500s, then runs the bundled sample export through the real `run`
//! pipeline, with the progress bar, and prints the summary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::cmd::{print_summary, Ctx};
use crate::credentials::BanxaCredentials;
use crate::dispatch::limiter::Rate;
use crate::mock::{MockConfig, MockServer};
use crate::pipeline::{MintSettings, Plan, Settings};
use crate::request::mint::SumsubCredentials;
use crate::secret::Secret;

/// The bundled sample export: 200 customers, some invalid, some duplicates.
const SAMPLE: &[u8] = include_bytes!("../../fixtures/sample.csv");
/// The same kind of export for `--mint`: Sumsub applicant ids, no tokens.
const SAMPLE_MINT: &[u8] = include_bytes!("../../fixtures/sample-mint.csv");

pub const DEMO_ABOUT: &str = "\
Runs the real import end to end on the embedded emulator: starts a local Banxa
on a loopback port with throwaway credentials and a few injected 500s, sends
the bundled sample export (200 customers, some invalid and duplicate rows)
through the same pipeline as `run`, with the progress bar, and prints the
summary and where the results are; then asks the emulated Banxa whether it
verified each accepted customer (the closed loop of `kycshare verify`: a few
are REJECTED on purpose) and writes the verification file. Needs no network
and no set-up.";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's export copy, results and retry file.
    #[arg(long, default_value = "kycshare-demo", value_name = "DIR")]
    pub dir: PathBuf,
    /// The rate of the demo run.
    #[arg(long, default_value = "100/s", value_name = "N/min|N/s")]
    pub rate: Rate,
    /// Also print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show the just-in-time minting path: the export carries Sumsub
    /// applicant ids and each token is minted from the emulated Sumsub
    /// right before its request.
    #[arg(long)]
    pub mint: bool,
}

pub fn run(args: DemoArgs, ctx: Ctx) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create the demo folder {}", args.dir.display()))?;
    let stem = if args.mint { "sample-mint" } else { "sample" };
    let input = args.dir.join(format!("{stem}.csv"));
    std::fs::write(&input, if args.mint { SAMPLE_MINT } else { SAMPLE })
        .with_context(|| format!("cannot write {}", input.display()))?;
    let results = args.dir.join(format!("{stem}.results.csv"));
    let retry = args.dir.join(format!("{stem}.retry.csv"));

    let rt = crate::cmd::pipeline_runtime()?;
    rt.block_on(async {
        let key = "demo-key".to_string();
        let secret = Secret::new(format!("demo-{:032x}", rand::random::<u128>()));
        let mut cfg = MockConfig::new(key.clone(), secret.clone());
        cfg.fail_rate = 0.05;
        cfg.latency = Duration::from_millis(20);
        cfg.seed = Some(7);
        // The closed loop: Banxa's verification of the accepted shares
        // fails for a few of them (as a Sumsub misconfiguration would).
        cfg.kyc_reject_rate = 0.03;
        // Banxa's limit is per minute; the demo runs faster, and its
        // emulator allows what the demo sends.
        cfg.rate_limit_per_min = Some((args.rate.per_second() * 60.0).ceil() as u32);
        let sumsub_token = "demo-sumsub-app".to_string();
        let sumsub_secret = Secret::new(format!("demo-{:032x}", rand::random::<u128>()));
        if args.mint {
            cfg.sumsub_app_token = Some(sumsub_token.clone());
            cfg.sumsub_secret = Some(sumsub_secret.clone());
            // Banxa accepts only tokens the emulated Sumsub minted, once,
            // before they expire; an injected 500 uses its token up.
            cfg.check_tokens = true;
            cfg.consume_token_on_fault = true;
            cfg.sumsub_latency = Duration::from_millis(30);
        }
        let server = MockServer::start(([127, 0, 0, 1], 0).into(), cfg)
            .await
            .context("cannot start the emulator on a loopback port")?;
        let quiet = ctx.quiet;
        if !quiet {
            eprintln!(
                "kycshare demo: emulator listening on {} (throwaway credentials, 5% injected 500s, 20 ms latency)",
                server.base_url()
            );
        }
        if !quiet {
            eprintln!(
            "kycshare demo: sending {} at {} through the real import pipeline{}\n",
            input.display(),
            args.rate,
            if args.mint {
                ", minting each share token from the emulated Sumsub just before its request"
            } else {
                ""
            }
        );
        }
        let mut settings = Settings::new(&input, server.base_url());
        settings.results = Some(results.clone());
        settings.retry_file = Some(retry);
        settings.force = true;
        settings.rate = Some(args.rate);
        settings.timeout = Duration::from_secs(10);
        settings.progress = !ctx.quiet;
        settings.progress_interval = ctx.progress_interval;
        settings.credentials = Some(BanxaCredentials {
            api_key: key,
            api_secret: secret,
        });
        settings.mint = args.mint.then(|| MintSettings {
            for_client_id: Some("banxa-demo".into()),
            sumsub_base_url: Some(server.base_url()),
            // The emulated Sumsub has no limit of its own: minting keeps
            // pace with the demo's rate (twice it, for the retries).
            mint_rate: Some(Rate {
                n: args.rate.n.saturating_mul(2),
                per: args.rate.per,
            }),
            credentials: Some(SumsubCredentials {
                app_token: sumsub_token,
                secret_key: sumsub_secret,
            }),
            ..MintSettings::default()
        });
        let credentials = settings.credentials.clone();
        let plan = Plan::resolve(settings)?;
        let summary = crate::pipeline::execute(plan, true).await;
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                server.shutdown().await;
                return Err(e.into());
            }
        };
        print_summary(&summary, args.json);
        // The closed loop: did Banxa verify what it accepted?
        let verification = args.dir.join(format!("{stem}.verify.csv"));
        let checked = if summary.aborted.is_none() {
            if !quiet {
                eprintln!(
                    "\nkycshare demo: asking the emulated Banxa whether it verified each accepted customer (kycshare verify {})\n",
                    results.display()
                );
            }
            let v = crate::pipeline::verify::verify(
                crate::pipeline::verify::VerifySettings {
                    results: Some(results.clone()),
                    output: Some(verification.clone()),
                    rate: Some(args.rate),
                    timeout: Duration::from_secs(10),
                    force: true,
                    credentials,
                    progress: !quiet,
                    progress_interval: ctx.progress_interval,
                    ..crate::pipeline::verify::VerifySettings::new()
                },
                true,
            )
            .await;
            match v {
                Ok(v) => {
                    eprint!("{}", v.render());
                    Some(v)
                }
                Err(e) => {
                    eprintln!("the verification pass failed: {e}");
                    None
                }
            }
        } else {
            None
        };
        let stats = server.stats();
        server.shutdown().await;
        if quiet {
            return Ok(summary.exit_code);
        }
        eprintln!(
            "\nThe emulator saw {} requests ({} accepted, {} injected 500s, retried){}. Inspect the results with:\n  column -s, -t < {} | less -S",
            stats.share_requests,
            stats.by_status.get("202").copied().unwrap_or(0),
            stats.by_status.get("500").copied().unwrap_or(0),
            if args.mint {
                format!(", and minted {} single-use tokens", stats.tokens_minted)
            } else {
                String::new()
            },
            results.display()
        );
        if let Some(v) = &checked {
            eprintln!(
                "The verification pass sent {} identity requests: {} of {} accepted customers VERIFIED by Banxa. See {}",
                stats.identity_requests, v.verified, v.checked, verification.display()
            );
        }
        eprintln!(
            "The whole run as one offline HTML page: kycshare report {}",
            crate::pipeline::manifest::shell_word(&results.display().to_string())
        );
        if !args.mint {
            eprintln!("For the just-in-time minting path (tokens minted from Sumsub right before each request): kycshare demo --mint");
        }
        Ok(summary.exit_code)
    })
}
