//! A run remembers how it was started (SPEC "Resume and crash safety"):
//! the manifest, `kycshare resume`, the refusals of `run … --resume`, the
//! canary (`--limit`), and next steps that run as printed.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `kycshare run INPUT` in `dir` (paths relative to it, as an operator types them).
fn run_in(dir: &Path, input: &str, url: &str) -> Command {
    let mut c = run_cmd(Path::new(input), url);
    c.current_dir(dir);
    c
}

fn resume_in(dir: &Path, results: &str) -> Command {
    let mut c = bin();
    c.current_dir(dir)
        .args(["resume", results])
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET);
    c
}

#[test]
fn the_manifest_is_written_before_the_first_request_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    export(dir.path(), "export.csv", "m", 5);
    let out = run(run_in(dir.path(), "export.csv", &emu.url).args([
        "--rate",
        "50/s",
        "--map",
        "token=token",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let path = dir.path().join("export.results.manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["baseUrl"], emu.url.as_str());
    assert_eq!(m["rate"], "50/s");
    assert_eq!(m["maps"], serde_json::json!(["token=token"]));
    assert!(Path::new(m["input"].as_str().unwrap()).is_absolute());
    assert!(!text.contains(SECRET) && !text.contains(KEY), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_canary_then_the_printed_resume_sends_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec.clone()));
    export(dir.path(), "export.csv", "c", 60);
    let out = run(run_in(dir.path(), "export.csv", &emu.url).args([
        "--rate",
        "200/s",
        "--concurrency",
        "4",
        "--max-attempts",
        "3",
        "--results",
        "work.results.csv",
        "--limit",
        "10",
        "--json",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("--limit"), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["accepted"], 10);
    assert_eq!(j["limitReached"], 10);
    let cmds = next_commands(&out);
    assert_eq!(cmds, vec!["kycshare resume work.results.csv".to_string()]);
    assert_eq!(record_lines(&rec).len(), 10);

    let out = run_printed(&cmds[0], dir.path());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(double_sends(&rec), (0, 0), "no row sent twice");
    assert_eq!(emulator_accepted(&rec).len(), 60);
    assert_one_row_per_record(&dir.path().join("work.results.csv"), 60);
}

#[test]
fn sigint_then_the_printed_command_verbatim_completes_without_double_sends() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec.clone()));
    export(dir.path(), "slow.csv", "s", 128);
    let results = dir.path().join("work").join("r2.results.csv");
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let mut cmd = run_in(dir.path(), "slow.csv", &emu.url);
    cmd.args([
        "--rate",
        "20/s",
        "--results",
        "work/r2.results.csv",
        "--retry-file",
        "work/r2.retry.csv",
        "--max-attempts",
        "3",
        "--map",
        "token=token",
        "--concurrency",
        "4",
        "--json",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(20), || count_lines(
        &results
    ) > 10));
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let cmds = next_commands(&out);
    assert_eq!(
        cmds,
        vec!["kycshare resume work/r2.results.csv".to_string()]
    );

    let out = run_printed(&cmds[0], dir.path());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(double_sends(&rec), (0, 0), "no token sent twice");
    assert_eq!(emulator_accepted(&rec).len(), 128);
    assert_one_row_per_record(&results, 128);
}

#[test]
fn resume_after_sigkill_completes() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec.clone()));
    export(dir.path(), "export.csv", "k", 100);
    let results = dir.path().join("export.results.csv");
    let mut child = run_in(dir.path(), "export.csv", &emu.url)
        .args(["--rate", "40/s", "--concurrency", "2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || count_lines(
        &results
    ) > 15));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(resume_in(dir.path(), "export.results.csv").args(["--rate", "200/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&results, 100);
    // At most the requests in flight at the kill were sent twice.
    assert!(double_sends(&rec).1 <= 2, "{:?}", double_sends(&rec));
}

#[test]
fn resume_is_refused_when_what_is_sent_or_where_differs() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    export(dir.path(), "export.csv", "r", 30);
    let out =
        run(run_in(dir.path(), "export.csv", &emu.url).args(["--rate", "200/s", "--limit", "5"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Another base URL.
    let other = Emu::start(|_| {});
    let out = run(run_in(dir.path(), "export.csv", &other.url).arg("--resume"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--base-url: the run sent to"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("kycshare resume export.results.csv"),
        "{}",
        stderr(&out)
    );
    // Another mapping.
    let out =
        run(run_in(dir.path(), "export.csv", &emu.url).args(["--resume", "--map", "token=extra"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("column mapping"), "{}", stderr(&out));
    // Another delimiter.
    let out =
        run(run_in(dir.path(), "export.csv", &emu.url).args(["--resume", "--delimiter", ";"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--delimiter"), "{}", stderr(&out));
    // A ledger now.
    let out =
        run(run_in(dir.path(), "export.csv", &emu.url).args(["--resume", "--ledger", "l.db"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--ledger"), "{}", stderr(&out));
    // Mint settings now.
    let out = run(run_in(dir.path(), "export.csv", &emu.url)
        .args([
            "--resume",
            "--mint",
            "--for-client-id",
            "banxa",
            "--sumsub-base-url",
            &emu.url,
        ])
        .env("SUMSUB_APP_TOKEN", "a")
        .env("SUMSUB_SECRET_KEY", "b"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("mint settings"), "{}", stderr(&out));
    // Nothing was sent by any refused command, and pacing may change.
    assert_eq!(emu.stats().share_requests, 5);
    assert_eq!(other.stats().share_requests, 0);
    let out = run(run_in(dir.path(), "export.csv", &emu.url).args(["--resume", "--rate", "300/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&dir.path().join("export.results.csv"), 30);
}

#[test]
fn resume_without_a_results_file_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    export(dir.path(), "export.csv", "n", 3);
    let out = run(run_in(dir.path(), "export.csv", &emu.url).arg("--resume"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("no results file"), "{}", stderr(&out));
    let out = run(&mut resume_in(dir.path(), "export.results.csv"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert_eq!(emu.stats().share_requests, 0);
    assert!(!dir.path().join("export.results.csv").exists());
}

#[test]
fn a_results_file_of_another_input_gets_advice_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    export(dir.path(), "export.csv", "a", 8);
    export(dir.path(), "different.csv", "b", 4);
    let out =
        run(run_in(dir.path(), "export.csv", &emu.url).args(["--rate", "200/s", "--limit", "2"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(run_in(dir.path(), "different.csv", &emu.url).args([
        "--results",
        "export.results.csv",
        "--resume",
        "--rate",
        "200/s",
    ]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("input: the run read"), "{err}");
    let out = run(run_in(dir.path(), "different.csv", &emu.url).args([
        "--results",
        "export.results.csv",
        "--rate",
        "200/s",
    ]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("belongs to the run of"), "{err}");
    // Both commands it advises run as printed.
    let own = err
        .split("give it a results file of its own: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim();
    let out = run_printed(own, dir.path());
    assert_eq!(code(&out), 0, "{own}: {}", stderr(&out));
    assert_one_row_per_record(&dir.path().join("different.results.csv"), 4);
    let out = run_printed("kycshare resume export.results.csv", dir.path());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&dir.path().join("export.results.csv"), 8);
}

#[test]
fn the_printed_retry_command_runs_and_remembers_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| {
        c.fail_first = 1;
    });
    export(dir.path(), "export.csv", "f", 12);
    let out = run(run_in(dir.path(), "export.csv", &emu.url).args([
        "--rate",
        "200/s",
        "--max-attempts",
        "1",
        "--map",
        "token=token",
        "--json",
    ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let cmds = next_commands(&out);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(
        cmds[0].starts_with("kycshare run export.retry.csv --base-url "),
        "{}",
        cmds[0]
    );
    assert!(cmds[0].contains("--map token=token"), "{}", cmds[0]);
    assert!(cmds[0].contains("--max-attempts 1"), "{}", cmds[0]);
    let out = run_printed(&cmds[0], dir.path());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&dir.path().join("export.retry.results.csv"), 12);
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("export.retry.results.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        Path::new(m["parent"].as_str().unwrap()),
        std::fs::canonicalize(dir.path())
            .unwrap()
            .join("export.results.csv")
    );
}

#[test]
fn the_run_command_printed_by_validate_keeps_the_maps_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    std::fs::write(
        dir.path().join("odd cols.csv"),
        "cust;mail;phone;tok\nv-1;a@example.com;+61400000001;tok-v-1-Zx9\nv-2;b@example.com;+61400000002;tok-v-2-Zx9\n",
    )
    .unwrap();
    let mut cmd = bin();
    cmd.current_dir(dir.path())
        .env("KYCSHARE_BASE_URL", &emu.url)
        .args([
            "validate",
            "odd cols.csv",
            "--delimiter",
            ";",
            "--map",
            "identityReference=cust",
            "--map",
            "email=mail",
            "--map",
            "mobileNumber=phone",
            "--map",
            "token=tok",
            "--json",
        ]);
    let out = run(&mut cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let cmds = next_commands(&out);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(
        cmds[0].contains("--map identityReference=cust"),
        "{}",
        cmds[0]
    );
    let out = run_printed(&cmds[0], dir.path());
    assert_eq!(code(&out), 0, "{}: {}", cmds[0], stderr(&out));
    assert_eq!(emu.stats().by_status.get("202").copied(), Some(2));
}
