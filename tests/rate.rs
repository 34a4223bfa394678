//! The rate as the emulator sees it. In a test binary of its own: cargo
//! runs test binaries one after another, so no load test shares the two
//! cores with this timing measurement.

mod common;
use common::*;

#[test]
fn the_rate_is_never_exceeded_in_any_second() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.record = Some(record.clone());
        c.latency = std::time::Duration::from_millis(30);
    });
    let input = export(dir.path(), "e.csv", "r", 400);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "50/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut t: Vec<u64> = record_lines(&record)
        .iter()
        .map(|r| r.unix_micros)
        .collect();
    assert_eq!(t.len(), 400);
    t.sort();
    let mut j = 0;
    let mut most = (0, 0, 0);
    for i in 0..t.len() {
        while t[i] - t[j] >= 1_000_000 {
            j += 1;
        }
        if i - j + 1 > most.0 {
            most = (i - j + 1, j, i);
        }
    }
    let (n, first, last) = most;
    assert!(
        n <= 50,
        "{n} requests in one second: requests {first}..={last} at {:?} ms from the start",
        t[first..=last]
            .iter()
            .map(|x| (x - t[0]) / 1000)
            .collect::<Vec<_>>()
    );
    // And the rate is held: 400 at 50/s take about 8 s, not much more.
    let span = (t[399] - t[0]) as f64 / 1e6;
    assert!(span > 7.8 && span < 8.4, "{span}");
    assert!(emu.stats().max_in_1s <= 50);
}
