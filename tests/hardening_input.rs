//! Hardening, hostile input: arbitrary bytes as the export never make the
//! real binary panic or hang, and every record gets exactly one outcome
//! (counted by the library's own reader over the same bytes). A 50 MB
//! field is one `invalid` record, memory stays bounded, and the rows after
//! it still go through.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kycshare::input::{Input, InputOptions, Source};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const HEADER: &[u8] = b"identityReference,email,mobileNumber,token\n";

/// Files that are mostly CSV-shaped, with hostile pieces mixed in.
fn hostile_file() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            b",".to_vec(),
            b"\"".to_vec(),
            b"\n".to_vec(),
            b"\r\n".to_vec(),
            b"\r".to_vec(),
            b"\"\"".to_vec(),
            b"\xEF\xBB\xBF".to_vec(),
            b"\xff\xfe".to_vec(),
            b" ".to_vec(),
            b"c-1,a@example.com,61410000001,tok-1-aa\n".to_vec(),
            b"c-2,b@example.com,+61 (4) 1000-0002,tok-2-aa\n".to_vec(),
            b"c-1,dup@example.com,61410000003,tok-3-aa\n".to_vec(),
            "jöhn@example.com".as_bytes().to_vec(),
            b"\"x,\ny\"".to_vec(),
        ]),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    (
        any::<bool>(),
        prop::collection::vec(piece, 0..60),
        any::<bool>(),
    )
        .prop_map(|(header, pieces, no_nul)| {
            let mut v = if header { HEADER.to_vec() } else { Vec::new() };
            for p in pieces {
                v.extend(p);
            }
            if no_nul {
                // NUL makes it a "binary file" (exit 2): mostly avoid it.
                v.retain(|b| *b != 0);
            }
            v
        })
}

/// Records the library reads from `path`, or None when it refuses the file
/// (or a read error stops it): then the binary must exit 2.
fn library_records(path: &Path) -> Option<u64> {
    let mut input =
        Input::open(&Source::File(path.to_path_buf()), &InputOptions::default()).ok()?;
    let mut n = 0;
    loop {
        match input.next_item() {
            Ok(Some(_)) => n += 1,
            Ok(None) => return Some(n),
            Err(_) => return None,
        }
    }
}

/// Runs `cmd` to the end (at most 60 s), returning (code, stderr).
fn run_bounded(cmd: &mut Command, dir: &Path) -> (i32, String) {
    let err_path = dir.join("stderr.txt");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

fn check_case(bytes: &[u8], emu: Option<(&Emu, &Path)>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.csv");
    std::fs::write(&input, bytes).unwrap();
    let res = dir.path().join("x.results.csv");
    let (code, err) = match emu {
        None => run_bounded(bin().arg("validate").arg(&input), dir.path()),
        Some((e, _)) => run_bounded(
            run_cmd(&input, &e.url).args(["--rate", "100000/s"]),
            dir.path(),
        ),
    };
    prop_assert!(!err.contains("panicked"), "panic: {}", err);
    prop_assert!(matches!(code, 0..=2), "exit {}: {}", code, err);
    match library_records(&input) {
        None => prop_assert_eq!(code, 2, "the library refuses the file: {}", err),
        Some(n) => {
            prop_assert!(code != 2, "exit 2 but the library reads it: {}", err);
            let counts = record_counts(&res);
            prop_assert_eq!(counts.len() as u64, n, "one row per record: {}", err);
            prop_assert!(counts.values().all(|c| *c == 1));
            prop_assert!(counts.keys().copied().eq(1..=n));
            if let Some((_, rec)) = emu {
                prop_assert_eq!(emulator_accepted(rec), ids_with_outcome(&res, "accepted"));
            }
        }
    }
    Ok(())
}

#[test]
fn arbitrary_bytes_through_validate_never_panic_and_every_record_has_one_outcome() {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&hostile_file(), |bytes| check_case(&bytes, None))
        .unwrap();
}

#[test]
fn arbitrary_bytes_through_run_against_the_emulator() {
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = hostile_file().prop_map(|mut v| {
        if !v.starts_with(HEADER) {
            let mut h = HEADER.to_vec();
            h.append(&mut v);
            v = h;
        }
        v
    });
    runner
        .run(&strategy, |bytes| {
            let dir = tempfile::tempdir().unwrap();
            let rec = dir.path().join("rec.jsonl");
            let emu = Emu::start(|c| c.record = Some(rec.clone()));
            check_case(&bytes, Some((&emu, &rec)))?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_50_mb_field_is_one_invalid_record_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.csv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        f.write_all(HEADER).unwrap();
        f.write_all(b"b-1,a@example.com,61410000001,tok-1-aa\n")
            .unwrap();
        f.write_all(b"b-2,b@example.com,61410000002,").unwrap();
        let chunk = vec![b'T'; 1 << 20];
        for _ in 0..50 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\nb-3,c@example.com,61410000003,tok-3-aa\n")
            .unwrap();
        f.write_all(b"b-4,d@example.com,61410000004,\"").unwrap();
        for _ in 0..50 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"\nb-5,e@example.com,61410000005,tok-5-aa\n")
            .unwrap();
    }
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec.clone()));
    for validate in [true, false] {
        let res = dir.path().join("big.results.csv");
        let _ = std::fs::remove_file(&res);
        let (code, rss_kib, err) = if validate {
            run_measured(bin().arg("validate").arg(&input), dir.path())
        } else {
            run_measured(
                run_cmd(&input, &emu.url).args(["--rate", "1000/s"]),
                dir.path(),
            )
        };
        let what = if validate { "validate" } else { "run" };
        eprintln!(
            "50 MB field: {what} peak RSS {:.1} MiB",
            rss_kib as f64 / 1024.0
        );
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            rss_kib < 60 * 1024,
            "{what}: peak RSS {rss_kib} KiB for a 100 MB file with 50 MB fields"
        );
        let rows = outcomes(&res);
        let good = if validate { "validated" } else { "accepted" };
        let got: Vec<(u64, String)> = rows.iter().map(|r| (r.0, r.3.clone())).collect();
        assert_eq!(
            got,
            vec![
                (1, good.to_string()),
                (2, "invalid".to_string()),
                (3, good.to_string()),
                (4, "invalid".to_string()),
                (5, good.to_string()),
            ],
            "{what}"
        );
        for r in rows.iter().filter(|r| r.3 == "invalid") {
            assert!(
                r.4.contains("larger than 1048576 bytes"),
                "a clear reason: {}",
                r.4
            );
        }
        // Lines stay right after the big records.
        assert_eq!(rows[2].1, 4);
        assert_eq!(rows[4].1, 6);
    }
    assert_eq!(
        emulator_accepted(&rec).into_iter().collect::<Vec<_>>(),
        vec!["b-1", "b-3", "b-5"]
    );
}
