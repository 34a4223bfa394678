//! The PostgreSQL ledger (`--ledger postgres://…`), through the real binary
//! against the server `scripts/with-postgres.sh` starts (`make test`):
//! credentials never shown, a wrong password sends nothing, PGPASSWORD, a
//! newer schema refused, the server going away mid-run. Each test skips,
//! saying so, without that server. The nightly semantics, the lock, the
//! report and verify run on both stores in tests/nightly.rs,
//! tests/ledger_cmd.rs and tests/verify.rs.

mod common;
use common::*;

use std::path::Path;
use std::time::Duration;

/// Every file under `dir`, as text.
fn all_files(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            s.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    s
}

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

#[test]
fn the_password_is_never_shown_nor_stored() {
    let Some(url) = pg_ledger("secrets") else {
        return;
    };
    let pw = pg_password(&url);
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "s", 30);
    let metrics = dir.path().join("kycshare.prom");
    let emu = Emu::start(|c| {
        c.fail_rate = 0.3;
        c.seed = Some(7);
    });
    let mut seen = String::new();
    // Failures: next steps are printed (with the ledger in them).
    let out = run(run_cmd(&input, &emu.url)
        .args(["-vv", "--rate", "500/s", "--max-attempts", "1"])
        .args(["--ledger", &url, "--metrics-file"])
        .arg(&metrics));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    seen += &stderr(&out);
    seen += &stdout(&out);
    let out = run(run_cmd(&input, &emu.url)
        .args(["-vv", "--rate", "500/s", "--force", "--json"])
        .args(["--ledger", &url, "--metrics-file"])
        .arg(&metrics));
    assert!(code(&out) <= 1, "{}", stderr(&out));
    seen += &stderr(&out);
    seen += &stdout(&out);
    for args in [vec!["ledger", &url], vec!["ledger", &url, "--json"]] {
        let out = run(bin().args(&args));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        seen += &stdout(&out);
        seen += &stderr(&out);
    }
    let files = all_files(dir.path());
    // The manifest names the ledger, without its password.
    assert!(
        files.contains(&pg_shown(&url)),
        "the manifest keeps the URL"
    );
    assert!(seen.contains(&pg_shown(&url)), "{seen}");
    assert!(!seen.contains(&pw), "the password in an output:\n{seen}");
    assert!(!files.contains(&pw), "the password in a file");
}

#[test]
fn a_wrong_password_is_exit_2_and_nothing_is_sent() {
    let Some(url) = pg_ledger("wrong_password") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "w", 5);
    let emu = Emu::start(|_| {});
    let bad = url.replace(&pg_password(&url), "wrong-pass-7f3a");
    let out = run(run_cmd(&input, &emu.url).args(["--ledger", &bad]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("PGPASSWORD"), "says what to do: {err}");
    assert!(!err.contains("wrong-pass-7f3a"), "{err}");
    assert_eq!(emu.stats().total, 0, "nothing sent");

    // No password at all (none in the URL, no PGPASSWORD): the same.
    let out = run(run_cmd(&input, &emu.url)
        .args(["--ledger", &pg_shown(&url)])
        .env_remove("PGPASSWORD"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(emu.stats().total, 0, "nothing sent");

    // The password from PGPASSWORD: runs.
    let out = run(run_cmd(&input, &emu.url)
        .args(["--ledger", &pg_shown(&url)])
        .env("PGPASSWORD", pg_password(&url)));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(emu.stats().share_requests, 5);
}

#[test]
fn a_ledger_from_a_newer_kycshare_is_refused() {
    let Some(url) = pg_ledger("newer_schema") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "v", 3);
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url).args(["--ledger", &url]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut c = client(&url);
    let v: i32 = c
        .query_one("SELECT max(version) FROM kycshare.schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        v,
        kycshare::ledger::PG_SCHEMA_VERSION,
        "created and versioned"
    );
    c.batch_execute(
        "INSERT INTO kycshare.schema_version (version, written_by) VALUES (99, 'future')",
    )
    .unwrap();
    let before = emu.stats().total;
    for cmd in [
        run_cmd(&input, &emu.url).args(["--force", "--ledger", &url]),
        bin().args(["ledger", &url]),
    ] {
        let out = run(cmd);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "has schema version 99, newer than this kycshare knows ({v})"
            )),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(emu.stats().total, before, "nothing sent");
    // A database with no ledger in it: said so by `kycshare ledger`.
    let empty = pg_ledger("empty_db").unwrap();
    let out = run(bin().args(["ledger", &empty]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("holds no kycshare tables"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_server_going_away_stops_the_run_exit_3_and_resume_completes_it() {
    let Some(url) = pg_ledger("server_gone") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "g", 200);
    let res = dir.path().join("e.results.csv");
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec.clone()));
    let mut child = run_cmd(&input, &emu.url)
        .args(["--rate", "40/s", "--concurrency", "2", "--ledger", &url])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || count_lines(&res) > 20),
        "the run did not progress"
    );
    // The run's session ends (as when the server restarts).
    let mut c = client(&url);
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'kycshare' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the run's one session");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("kycshare resume"), "resumable: {err}");
    assert!(!err.contains(&pg_password(&url)), "{err}");
    let sent = record_lines(&rec).len();
    assert!(sent < 200, "stopped sending ({sent} sent)");
    // Every request sent has its row in the results file: nothing lost.
    assert_one_row_per_record(&res, count_lines(&res) as u64 - 1);
    assert!(count_lines(&res) > sent, "{sent} sent, fewer rows");

    // The server is back (the session, here): resume completes the run.
    let out = run(bin()
        .arg("resume")
        .arg(&res)
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET)
        .env("PGPASSWORD", pg_password(&url)));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(record_lines(&rec).len(), 200, "each row sent once");
    assert_eq!(ids_with_outcome(&res, "accepted").len(), 200);
}

#[test]
fn sslmode_is_honoured() {
    let (Some(url), Ok(ca)) = (pg_ledger("tls_probe"), std::env::var("KYCSHARE_TEST_PG_CA")) else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED sslmode_is_honoured: no TLS test server (scripts/with-postgres.sh with openssl)"
        );
        return;
    };
    // The database that takes TLS connections only.
    let cut = url.rfind('/').unwrap();
    let tls = format!("{}/kycshare_tls", &url[..cut]);
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "t", 2);
    let emu = Emu::start(|_| {});
    let try_with = |query: &str| {
        let out = run(run_cmd(&input, &emu.url)
            .args(["--force", "--ledger"])
            .arg(format!("{tls}?{query}")));
        (code(&out), stderr(&out))
    };
    // Without TLS the server refuses: the runs below did use TLS.
    let (c, err) = try_with("sslmode=disable");
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("no encryption"), "{err}");
    for ok in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
        // The default (prefer) takes TLS when the server offers it.
        "application_name=x".to_string(),
    ] {
        let (c, err) = try_with(&ok);
        assert_eq!(c, 0, "{ok}: {err}");
    }
    // Checked against the built-in roots, the test CA is unknown.
    let before = emu.stats().total;
    let (c, err) = try_with("sslmode=verify-full");
    assert_eq!(c, 2, "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let (c, err) = try_with("sslmode=sometimes");
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("sslmode=sometimes is not one of"), "{err}");
    assert_eq!(emu.stats().total, before, "nothing sent");
}

/// The SQLite ledger's skip rules (src/ledger/store.rs), held by the
/// PostgreSQL store through the library: the same upsert semantics.
#[test]
fn skip_rules_across_runs_match_the_sqlite_ledger() {
    use kycshare::ledger::{Ledger, LedgerLocation, Update};
    use kycshare::model::{fingerprint, Outcome};
    use std::time::SystemTime;
    let Some(url) = pg_ledger("skip_rules") else {
        return;
    };
    let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + s);
    let upd = |id: &str, fp: [u8; 32], outcome: Outcome, at: u64| Update {
        identity_reference: id.into(),
        fingerprint: fp,
        outcome,
        http_status: Some(if outcome == Outcome::Accepted {
            202
        } else {
            500
        }),
        trace_id: format!("tr-{id}-{at}"),
        attempts: 1,
        at: t(at),
    };
    let at = LedgerLocation::parse(&url).unwrap();
    let open = || Ledger::open_at(&at, None).unwrap();
    let a = fingerprint("a@x.io", "61410001000", "sumsub");
    let b = fingerprint("b@x.io", "61410001000", "sumsub");
    {
        let mut l = open();
        l.begin_run("export.csv", t(0)).unwrap();
        for id in ["acc", "changed", "flip"] {
            l.record(upd(id, a, Outcome::Accepted, 1)).unwrap();
        }
        l.record(upd("fail", a, Outcome::Failed, 1)).unwrap();
        l.record(upd("rej", a, Outcome::Rejected, 1)).unwrap();
        l.record(upd("inv", a, Outcome::Invalid, 1)).unwrap();
        assert_eq!(l.pending(), 5, "not sent: ignored");
    }
    {
        let mut l = open();
        let r = l.reader().unwrap();
        assert!(r.should_skip("acc", &a));
        assert!(!r.should_skip("acc", &b), "changed details are sent");
        assert!(!r.should_skip("fail", &a) && !r.should_skip("rej", &a));
        assert!(!r.should_skip("new", &a) && !r.should_skip("inv", &a));
        assert_eq!(r.accepted(), 3);
        assert!(l.lookup("inv").unwrap().is_none());
        l.begin_run("export.csv", t(10)).unwrap();
        l.record(upd("changed", b, Outcome::Failed, 11)).unwrap();
        l.record(upd("flip", b, Outcome::Rejected, 11)).unwrap();
        l.record(upd("fail", a, Outcome::Failed, 11)).unwrap();
        l.record(upd("rej", a, Outcome::Accepted, 11)).unwrap();
        // Twice in one batch: the later wins.
        l.record(upd("twice", a, Outcome::Failed, 11)).unwrap();
        l.record(upd("twice", a, Outcome::Accepted, 12)).unwrap();
        l.flush().unwrap();
        let e = l.lookup("changed").unwrap().unwrap();
        assert_eq!((e.fingerprint, e.last_outcome), (b, Outcome::Failed));
        assert_eq!(e.accepted_fingerprint, Some(a));
        assert_eq!(e.accepted_at, Some(t(1)));
        assert_eq!(e.failing_since, Some(t(11)));
        assert_eq!((e.first_sent_at, e.updated_at), (t(1), t(11)));
        assert_eq!(e.trace_id, "tr-changed-11");
        assert_eq!(e.http_status, Some(500));
        let e = l.lookup("fail").unwrap().unwrap();
        assert_eq!(e.failing_since, Some(t(1)), "since the first failure");
        assert_eq!(e.accepted_fingerprint, None);
        let e = l.lookup("twice").unwrap().unwrap();
        assert_eq!((e.last_outcome, e.failing_since), (Outcome::Accepted, None));
    }
    let mut l = open();
    let r = l.reader().unwrap();
    assert!(!r.should_skip("changed", &b) && !r.should_skip("changed", &a));
    assert!(!r.should_skip("flip", &a));
    assert!(r.should_skip("rej", &a), "accepted after a rejection");
    assert!(r.should_skip("acc", &a), "untouched by the later run");
    // Verification statuses: recorded for the accepted only, reset when
    // accepted again.
    l.record_kyc("acc", "REJECTED", t(20)).unwrap();
    l.record_kyc("fail", "VERIFIED", t(20)).unwrap();
    l.flush().unwrap();
    let rep = l.report().unwrap();
    assert_eq!(rep.kyc.get("REJECTED"), Some(&1));
    assert_eq!(rep.kyc.get("VERIFIED"), None, "fail is not accepted");
    l.begin_run("export.csv", t(30)).unwrap();
    l.record(upd("acc", a, Outcome::Accepted, 31)).unwrap();
    l.flush().unwrap();
    assert_eq!(l.report().unwrap().kyc.get("REJECTED"), None);
}
