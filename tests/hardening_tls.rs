//! Hardening, TLS: `run --ca-cert FILE` trusts a private CA; the emulator
//! serves HTTPS with a certificate generated here (rcgen). A certificate
//! from another CA stops the run at once with a clear error (exit 3,
//! resumable), nothing is marked accepted, and nothing reaches the server.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kycshare::mock::TlsPem;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Pki {
    ca_pem: String,
    server: TlsPem,
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut srv = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    srv.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = srv.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: TlsPem {
            cert_chain: cert.pem().into_bytes(),
            key: key.serialize_pem().into_bytes(),
        },
    }
}

#[test]
fn https_with_a_private_ca_and_a_wrong_certificate_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki("good");
    let other = pki("other");
    let good_ca = dir.path().join("good-ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&good_ca, &good.ca_pem).unwrap();
    std::fs::write(&other_ca, &other.ca_pem).unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.tls = Some(good.server.clone());
        c.record = Some(rec.clone());
    });
    assert!(emu.url.starts_with("https://127.0.0.1:"), "{}", emu.url);
    let input = export(dir.path(), "export.csv", "t", 30);
    let res = dir.path().join("export.results.csv");

    // A certificate from a CA we were not told to trust, or none given.
    for ca in [Some(&other_ca), None] {
        let _ = std::fs::remove_file(&res);
        let t0 = Instant::now();
        let mut cmd = run_cmd(&input, &emu.url);
        cmd.args(["--rate", "1000/s"]);
        if let Some(ca) = ca {
            cmd.arg("--ca-cert").arg(ca);
        }
        let out = run(&mut cmd);
        let err = stderr(&out);
        eprintln!("--- untrusted certificate, stderr:\n{err}");
        assert_eq!(code(&out), 3, "{err}");
        assert!(
            err.contains("certificate") && err.contains("--ca-cert"),
            "a clear error that names the certificate and the fix: {err}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "stopped at once, not after retries with backoff"
        );
        assert!(
            ids_with_outcome(&res, "accepted").is_empty(),
            "nothing marked accepted"
        );
        assert_eq!(
            results(&res).len(),
            0,
            "unsent rows stay out of the results"
        );
        assert_eq!(emu.stats().share_requests, 0, "nothing reached the server");
    }

    // The right CA: every row accepted, over HTTPS; --resume picks up.
    let out = run(run_cmd(&input, &emu.url)
        .args(["--rate", "1000/s", "--resume", "--ca-cert"])
        .arg(&good_ca));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&res, 30);
    assert_eq!(ids_with_outcome(&res, "accepted").len(), 30);
    assert_eq!(emulator_accepted(&rec), ids_with_outcome(&res, "accepted"));
}

#[test]
fn the_mock_command_serves_https_with_tls_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki("flags");
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &p.server.cert_chain).unwrap();
    std::fs::write(&key, &p.server.key).unwrap();
    std::fs::write(&ca, &p.ca_pem).unwrap();
    let mut mock = bin()
        .args(["mock", "--listen", "127.0.0.1:0", "--rate-limit", "off"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(mock.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert!(url.starts_with("https://"), "{url}");
    let input = export(dir.path(), "e.csv", "f", 5);
    let out = run(run_cmd(&input, &url)
        .args(["--rate", "1000/s", "--ca-cert"])
        .arg(&ca));
    signal(&mock, libc::SIGTERM);
    wait_exit(&mut mock, Duration::from_secs(20));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
