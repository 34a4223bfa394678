//! Per-row cost of the offline work: parsing, validation, body and
//! signature. `make bench` runs it; see docs/performance.md.

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kycshare::input::{Input, InputOptions, Source, Verdict};
use kycshare::request::{NonceSource, Signer, SHARE_PATH};
use kycshare::secret::Secret;

const ROWS: u64 = 100_000;

fn export() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let mut w = std::io::BufWriter::new(f.as_file_mut());
    writeln!(
        w,
        "identityReference,email,mobileNumber,vendor,token,country,createdAt"
    )
    .unwrap();
    for i in 0..ROWS {
        writeln!(
            w,
            "c-{},customer.{}@mail.example.com,+61 4{:02} {:03} {:03},sumsub,_act-sbx-jwt-eyJhbGciOiJub25lIn0.eyJqdGkiOiJfYWN0LXNieC{:0>104x},AU,{}",
            100_000 + i,
            i,
            i % 100,
            i % 1000,
            (i * 7) % 1000,
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            1_700_000_000 + i
        )
        .unwrap();
    }
    drop(w);
    f
}

fn per_row(c: &mut Criterion) {
    let file = export();
    let source = Source::File(file.path().to_path_buf());
    let signer = Signer::new("bench-key", &Secret::new("bench-secret-0123456789"));
    let nonces = NonceSource::new();

    let mut g = c.benchmark_group("per_row");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(20);
    g.bench_function("parse_validate_body_sign", |b| {
        b.iter(|| {
            let mut input = Input::open(&source, &InputOptions::default()).unwrap();
            let mut body = Vec::with_capacity(512);
            let mut n = 0u64;
            while let Some(item) = input.next_item().unwrap() {
                if let Verdict::Valid(row) = item.verdict {
                    row.share_request().write_body(&mut body);
                    let auth = signer.authorization(SHARE_PATH, nonces.next(), &body);
                    n += black_box(auth).len() as u64;
                }
            }
            assert!(n > 0);
        })
    });
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let mut input = Input::open(&source, &InputOptions::default()).unwrap();
            let mut valid = 0u64;
            while let Some(item) = input.next_item().unwrap() {
                valid += u64::from(matches!(item.verdict, Verdict::Valid(_)));
            }
            assert_eq!(valid, ROWS);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(1));
    let body = br#"{"identityReference":"c-100001","email":"customer.1@mail.example.com","mobileNumber":"61401001007","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0.eyJqdGkiOiJfYWN0LXNieC00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}}"#;
    g.bench_function("sign", |b| {
        b.iter(|| black_box(signer.authorization(SHARE_PATH, nonces.next(), black_box(body))))
    });
    g.finish();
}

criterion_group!(benches, per_row);
criterion_main!(benches);
