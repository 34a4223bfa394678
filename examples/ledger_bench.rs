//! The ledger's figures for a nightly run: fills a ledger with N accepted
//! identities (default 1,000,000), then measures how long `Ledger::open`
//! takes (it loads the accepted set) and how many `should_skip` lookups per
//! second a reader answers.
//!
//! ```text
//! cargo run --release --example ledger_bench [-- N [LEDGER]]
//! ```
//!
//! LEDGER defaults to a temporary file; an existing one of the right size is
//! reused (so the fill is not repeated).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use kycshare::ledger::{Ledger, Update};
use kycshare::model::{fingerprint, Outcome};

fn id(i: usize) -> String {
    format!("c-{i:08}")
}

fn fp(i: usize) -> [u8; 32] {
    fingerprint(&format!("user{i}@example.com"), "61410001000", "sumsub")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let _tmp;
    let path = match args.next() {
        Some(p) => PathBuf::from(p),
        None => {
            _tmp = tempfile::tempdir().unwrap();
            _tmp.path().join("ledger.db")
        }
    };

    let t = Instant::now();
    let mut l = Ledger::open(&path).unwrap();
    let have = l.reader().unwrap().accepted();
    if have < n {
        let run = l.begin_run("bench", SystemTime::now()).unwrap();
        for i in have..n {
            l.record(Update {
                identity_reference: id(i),
                fingerprint: fp(i),
                outcome: Outcome::Accepted,
                http_status: Some(202),
                trace_id: String::new(),
                attempts: 1,
                at: SystemTime::now(),
            })
            .unwrap();
        }
        l.end_run(run, SystemTime::now(), &Default::default(), 0)
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "fill: {} identities recorded in {s:.2} s ({:.0} records/s, batches of {})",
            n - have,
            (n - have) as f64 / s,
            kycshare::ledger::BATCH_ROWS
        );
    }
    drop(l);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("ledger: {} ({:.1} MB)", path.display(), size as f64 / 1e6);

    let t = Instant::now();
    let l = Ledger::open(&path).unwrap();
    let open = t.elapsed();
    let r = l.reader().unwrap();
    println!(
        "open: {:.3} s (lock, migrate, load {} accepted identities into memory)",
        open.as_secs_f64(),
        r.accepted()
    );

    // Precompute the keys so only the lookup is timed; a run's order is the
    // export's, here a scattered one.
    let m = n.min(1_000_000);
    let ids: Vec<(String, [u8; 32])> = (0..m)
        .map(|k| {
            let i = (k.wrapping_mul(2_654_435_761)) % n;
            (id(i), fp(i))
        })
        .collect();
    let lookups = |what: &str, f: &dyn Fn(&str, &[u8; 32]) -> bool, expect: bool| {
        let t = Instant::now();
        let mut hits = 0usize;
        for (i, f_) in &ids {
            hits += f(black_box(i), black_box(f_)) as usize;
        }
        let d: Duration = t.elapsed();
        assert_eq!(hits, if expect { ids.len() } else { 0 });
        println!(
            "should_skip ({what}): {} lookups in {:.3} s = {:.0} lookups/s, {:.0} ns each",
            ids.len(),
            d.as_secs_f64(),
            ids.len() as f64 / d.as_secs_f64(),
            d.as_nanos() as f64 / ids.len() as f64
        );
    };
    lookups("reader, all skipped", &|i, f| r.should_skip(i, f), true);
    let other = fingerprint("changed@example.com", "61410001000", "sumsub");
    lookups(
        "reader, all changed",
        &|i, _| r.should_skip(i, &other),
        false,
    );
    // From another thread, as the pipeline does.
    let r2 = r.clone();
    let ids2 = ids.clone();
    let t = Instant::now();
    let hits = std::thread::spawn(move || {
        ids2.iter()
            .filter(|(i, f)| r2.should_skip(black_box(i), black_box(f)))
            .count()
    })
    .join()
    .unwrap();
    let d = t.elapsed();
    assert_eq!(hits, ids.len());
    println!(
        "should_skip (reader in another thread): {:.0} ns each",
        d.as_nanos() as f64 / ids.len() as f64
    );

    // For comparison: the SQL lookup (prepared, cached statement).
    let k = ids.len().min(200_000);
    let t = Instant::now();
    for (i, _) in &ids[..k] {
        black_box(l.lookup(i).unwrap());
    }
    let d = t.elapsed();
    println!(
        "lookup (SQL, cached statement): {:.0} ns each over {k}",
        d.as_nanos() as f64 / k as f64
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(String::from));
    if let Some(rss) = rss {
        println!("peak memory: {}", rss.trim_start_matches("VmHWM:").trim());
    }
}
