//! Generates a realistic export for tests and benchmarks (the data is not
//! committed, except the small sample in fixtures/).
//!
//! ```text
//! cargo run --release --example gen_export -- ROWS [--bad-every N] [--dup-every N] [--seed S] [--applicant] > export.csv
//! ```
//!
//! About 250 bytes a row: identityReference, email, mobileNumber, vendor,
//! token (a Sumsub-like share token), plus two columns kycshare ignores.
//! With --bad-every N, every Nth row has one realistic defect; with
//! --dup-every N, every Nth row repeats an earlier identityReference.

use std::io::{BufWriter, Write};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut rows: u64 = 1000;
    let mut bad_every = 0u64;
    let mut dup_every = 0u64;
    let mut seed = 1u64;
    let mut applicant = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bad-every" => bad_every = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--dup-every" => dup_every = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--applicant" => applicant = true,
            n => rows = n.parse().expect("ROWS must be a number"),
        }
    }
    let out = std::io::stdout();
    let mut w = BufWriter::with_capacity(1 << 20, out.lock());
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let last = if applicant { "applicantId" } else { "token" };
    writeln!(
        w,
        "identityReference,email,mobileNumber,vendor,{last},country,createdAt"
    )
    .unwrap();
    const FIRST: [&str; 12] = [
        "olivia", "noah", "amelia", "liam", "isla", "jack", "mia", "william", "ava", "henry",
        "zoe", "lucas",
    ];
    const DOMAINS: [&str; 6] = [
        "example.com",
        "mail.example.org",
        "example.net",
        "inbox.example.com.au",
        "example.co.uk",
        "corp.example.io",
    ];
    const COUNTRIES: [&str; 5] = ["AU", "GB", "US", "NZ", "DE"];
    for i in 1..=rows {
        let mut id = format!("c-{}", 100_000 + i);
        let name = FIRST[(rng.next() % FIRST.len() as u64) as usize];
        let mut email = format!(
            "{name}.{}@{}",
            rng.next() % 10_000,
            DOMAINS[(rng.next() % DOMAINS.len() as u64) as usize]
        );
        let mut mobile = format!(
            "+61 4{:02} {:03} {:03}",
            rng.next() % 100,
            rng.next() % 1000,
            rng.next() % 1000
        );
        let mut vendor = "sumsub".to_string();
        let mut token = if applicant {
            format!("{:024x}", (rng.next() as u128) << 32 | rng.next() as u128)
        } else {
            let mut t = String::from("_act-sbx-jwt-eyJhbGciOiJub25lIn0.eyJqdGkiOiJfYWN0LXNieC");
            while t.len() < 160 {
                t.push_str(&format!("{:016x}", rng.next()));
            }
            t.truncate(160);
            t
        };
        if dup_every > 0 && i % dup_every == 0 && i > 1 {
            id = format!("c-{}", 100_000 + 1 + rng.next() % (i - 1));
        } else if bad_every > 0 && i % bad_every == 0 {
            match (i / bad_every) % 6 {
                0 => email = email.replace('@', "_at_"),
                1 => mobile = "04 1234".into(),
                2 => id = format!("c_{}", 100_000 + i),
                3 => token.clear(),
                4 => email = email.split('@').next().unwrap_or("x").to_string() + "@",
                _ => vendor = "onfido".into(),
            }
        }
        let created = 1_700_000_000 + rng.next() % 60_000_000;
        writeln!(
            w,
            "{id},{email},{mobile},{vendor},{token},{},{created}",
            COUNTRIES[(rng.next() % COUNTRIES.len() as u64) as usize]
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
