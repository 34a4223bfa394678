//! Reads an emulator `--record` file and reports the request rate Banxa
//! would have seen: requests, span, achieved rate, the most requests in
//! any 1-second and 60-second window, and answers by status.
//!
//! ```text
//! rate_check RECORD.jsonl
//! ```

use std::collections::BTreeMap;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: rate_check RECORD.jsonl");
    let text = std::fs::read_to_string(&path).expect("read the record file");
    let mut t: Vec<u64> = Vec::new();
    let mut status: BTreeMap<u64, u64> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        t.push(v["unixMicros"].as_u64().unwrap_or(0));
        *status.entry(v["status"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    t.sort_unstable();
    let n = t.len();
    if n < 2 {
        println!("requests: {n}");
        return;
    }
    let span = (t[n - 1] - t[0]) as f64 / 1e6;
    let most = |w: u64| {
        let (mut j, mut best) = (0, 0);
        for i in 0..n {
            while t[i] - t[j] >= w {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    };
    println!("requests:        {n}");
    println!("span:            {span:.3} s");
    println!(
        "achieved rate:   {:.3}/s ({:.1}/min)",
        (n - 1) as f64 / span,
        (n - 1) as f64 / span * 60.0
    );
    println!("most in any 1 s: {}", most(1_000_000));
    println!("most in any 60 s: {}", most(60_000_000));
    println!("by status:       {status:?}");
}
