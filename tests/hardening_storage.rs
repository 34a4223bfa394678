//! Hardening, storage faults: an unwritable results or retry path is found
//! before anything is sent; a write error mid-run (a file-size limit, as a
//! full disk would) stops sending at once, exits 3 and names every record
//! whose outcome could not be written.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::time::Duration;

#[test]
fn unwritable_results_or_retry_paths_fail_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "e.csv", "u", 20);
    // A path under a regular file cannot be created (ENOTDIR), even as root.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cases: Vec<(&str, std::path::PathBuf)> = vec![
        ("--results", file.join("r.csv")),
        ("--results", dir.path().to_path_buf()),
        ("--retry-file", file.join("retry.csv")),
        (
            "--retry-file",
            dir.path().join("no-such-dir").join("retry.csv"),
        ),
    ];
    for (flag, path) in cases {
        let out = run(run_cmd(&input, &emu.url)
            .args(["--rate", "1000/s"])
            .arg(flag)
            .arg(&path));
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{flag} {}: {err}", path.display());
        assert!(
            err.contains(&path.display().to_string()),
            "the message names the path: {err}"
        );
        assert_eq!(emu.stats().share_requests, 0, "nothing sent ({flag})");
    }
}

/// `record N (ID): OUTCOME` entries of the in-doubt list on stderr.
fn in_doubt(err: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for part in err.split("record ").skip(1) {
        if let Some((_, rest)) = part.split_once(" (") {
            if let Some((id, _)) = rest.split_once("): ") {
                ids.insert(id.to_string());
            }
        }
    }
    ids
}

#[test]
fn a_write_error_mid_run_stops_at_once_and_names_the_records_in_doubt() {
    const ROWS: u64 = 1500;
    const LIMIT: u64 = 24_000;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.record = Some(rec.clone());
        c.latency = Duration::from_millis(5);
    });
    let input = export(dir.path(), "export.csv", "w", ROWS as usize);
    let res = dir.path().join("export.results.csv");
    let mut cmd = run_cmd(&input, &emu.url);
    cmd.args(["--rate", "100000/s", "--concurrency", "16"]);
    // The child may write files of at most LIMIT bytes; past it write(2)
    // fails with EFBIG (SIGXFSZ ignored), as on a full disk.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = run(&mut cmd);
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(err.contains("export.results.csv"), "names the file: {err}");
    assert!(err.contains("kycshare resume "), "{err}");
    assert!(
        std::fs::metadata(&res).unwrap().len() <= LIMIT,
        "the limit held"
    );

    // What the emulator accepted but the results file does not hold is
    // exactly what the operator is told is in doubt.
    let doubt = in_doubt(&err);
    let sent = emulator_accepted(&rec);
    // Read the journal as --resume will (a last line cut short discarded).
    let text = std::fs::read_to_string(&res).unwrap();
    let complete = &text[..text.rfind('\n').map(|i| i + 1).unwrap_or(0)];
    let journaled: BTreeSet<String> = complete
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().to_string())
        .collect();
    let unjournaled: BTreeSet<String> = sent.difference(&journaled).cloned().collect();
    assert!(!unjournaled.is_empty(), "the failing write had an outcome");
    assert_eq!(unjournaled, doubt, "stderr: {err}");
    // Stopped at once: nothing sent after the failure beyond what was in flight.
    assert!(
        doubt.len() <= 2 * 16,
        "{} records in doubt: more than were in flight",
        doubt.len()
    );
    assert!((journaled.len() as u64) < ROWS / 2);
    eprintln!(
        "storage fault: {} rows journaled, {} in doubt, {} requests in all",
        journaled.len(),
        doubt.len(),
        record_lines(&rec).len()
    );

    // Once the disk has room, --resume completes the run.
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100000/s", "--resume"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&res, ROWS);
}
