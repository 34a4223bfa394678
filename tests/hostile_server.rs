//! A server (or a proxy in front of Banxa) that misbehaves: `kycshare run`
//! against a raw TCP listener of our own that answers each request in one
//! hostile way. Whatever it sends, the child's peak RSS stays bounded,
//! every record gets exactly one outcome, and nothing panics.
//!
//! The server is plain `std::net` threads writing bytes by hand, so that
//! it can send what no HTTP library would: a 512 MiB body, an endless
//! chunked body, endless headers, garbage, a status line one byte at a time.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the server answers every request.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// 202 announcing (and sending) a 512 MiB body.
    Huge202,
    /// 202 with no length, a body that goes on until the client hangs up.
    Endless202,
    /// 500 with a chunked body that never ends.
    EndlessChunked500,
    /// 202 whose header section never ends.
    EndlessHeaders,
    /// Bytes that are not HTTP, forever.
    Garbage,
    /// A valid 202, one byte every 300 ms.
    Trickle,
    /// 202 naming another customer.
    OtherIdentity,
    /// 307 to another listener (which counts connections).
    Redirect(u16),
    /// 422 with 1,200 error fields (a body under 64 KiB).
    ManyErrors,
    /// 422 with 100,000 error fields (a 3 MB body).
    HugeErrors,
    /// 400 with a 60 KB message.
    LongMessage,
}

struct Server {
    url: String,
    /// Requests read (their headers at least).
    requests: Arc<AtomicU64>,
}

/// Reads one request (headers and a Content-Length body); `None` when the
/// client closed the connection.
/// A request: (is it a GET, its body).
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(bool, Vec<u8>)> {
    let mut len = 0usize;
    let mut first = true;
    let mut get = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if first && line.trim().is_empty() {
            continue;
        }
        if first {
            get = line.starts_with("GET ");
        }
        first = false;
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((get, body))
}

fn json_answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn many_errors(n: usize) -> String {
    let fields: Vec<String> = (0..n)
        .map(|i| format!(r#""field{i}":["The field{i} field is invalid."]"#))
        .collect();
    format!(
        r#"{{"message":"The given data was invalid.","errors":{{{}}},"status":422}}"#,
        fields.join(",")
    )
}

/// Answers one request on `s` as `mode` says; `false` to close.
fn answer(mode: Mode, s: &mut TcpStream) -> bool {
    let chunk = vec![b'x'; 64 * 1024];
    match mode {
        Mode::Huge202 => {
            let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 536870912\r\n\r\n");
            let mut sent = 0usize;
            while sent < 512 << 20 && s.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
            false
        }
        Mode::Endless202 => {
            let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"identityReference\":\"");
            while s.write_all(&chunk).is_ok() {}
            false
        }
        Mode::EndlessChunked500 => {
            let _ = s.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            while s.write_all(&framed).is_ok() {}
            false
        }
        Mode::EndlessHeaders => {
            let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\n");
            let line = format!("X-Padding: {}\r\n", "a".repeat(8000)).into_bytes();
            while s.write_all(&line).is_ok() {}
            false
        }
        Mode::Garbage => {
            let mut x: u32 = 0x1234_5678;
            let mut junk = vec![0u8; 16 * 1024];
            loop {
                for b in junk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                }
                if s.write_all(&junk).is_err() {
                    return false;
                }
            }
        }
        Mode::Trickle => {
            let full = json_answer("202 Accepted", r#"{"identityReference":"x"}"#);
            for b in full {
                if s.write_all(&[b]).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            false
        }
        Mode::OtherIdentity => s
            .write_all(&json_answer(
                "202 Accepted",
                r#"{"identityReference":"someone-else"}"#,
            ))
            .is_ok(),
        Mode::Redirect(port) => s
            .write_all(
                format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}/eapi/v0/identities/token/share\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            )
            .is_ok(),
        Mode::ManyErrors => s
            .write_all(&json_answer("422 Unprocessable Entity", &many_errors(1200)))
            .is_ok(),
        Mode::HugeErrors => s
            .write_all(&json_answer("422 Unprocessable Entity", &many_errors(100_000)))
            .is_ok(),
        Mode::LongMessage => {
            let body = format!(
                r#"{{"message":"{}","status":400,"traceId":"t-1"}}"#,
                "Bad. ".repeat(12_000)
            );
            s.write_all(&json_answer("400 Bad Request", &body)).is_ok()
        }
    }
}

fn serve(mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut s = stream;
                while let Some((get, _)) = read_request(&mut reader) {
                    if get {
                        // The breaker's probe (a GET of an identity that
                        // cannot exist) is answered as Banxa does: the
                        // hostility is the share endpoint's, so the rows
                        // fail on their own and the run does not pause.
                        let answer = json_answer(
                            "404 Not Found",
                            r#"{"message":"Identity not found.","status":404}"#,
                        );
                        if s.write_all(&answer).is_err() {
                            break;
                        }
                        continue;
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    if !answer(mode, &mut s) {
                        break;
                    }
                }
            });
        }
    });
    Server { url, requests }
}

/// A listener that only counts the connections it gets.
fn counting_listener() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            if s.is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (port, n)
}

const ROWS: u64 = 12;

/// Runs an export of ROWS rows against `server`; returns (exit code, peak
/// RSS in MiB, stderr, results rows).
fn run_against(
    server: &Server,
    dir: &Path,
    extra: &[&str],
) -> (
    i32,
    f64,
    String,
    Vec<std::collections::HashMap<String, String>>,
) {
    let input = export(dir, "export.csv", "h", ROWS as usize);
    let results_file = dir.join("export.results.csv");
    let mut cmd = run_cmd(&input, &server.url);
    cmd.args([
        "--rate",
        "200/s",
        "--concurrency",
        "12",
        "--max-attempts",
        "2",
        "--timeout",
        "2",
    ])
    .args(extra);
    let (code, rss_kib, err) = run_measured(&mut cmd, dir);
    assert!(!err.contains("panicked"), "{err}");
    assert_one_row_per_record(&results_file, ROWS);
    let raw = std::fs::read_to_string(&results_file).unwrap();
    for line in raw.lines() {
        assert!(
            line.len() < 8 * 1024,
            "a results row of {} bytes",
            line.len()
        );
    }
    (code, rss_kib as f64 / 1024.0, err, results(&results_file))
}

/// Peak RSS allowed for a 12-row run whatever the server sends. A normal
/// run peaks near 20 MiB; the unbounded reader reached gigabytes.
const RSS_LIMIT_MIB: f64 = 80.0;

fn assert_transport_failures(mode: Mode, expect_in_message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(mode);
    let (code, rss, err, rows) = run_against(&server, dir.path(), &[]);
    eprintln!("{mode:?}: peak RSS {rss:.1} MiB");
    assert!(rss < RSS_LIMIT_MIB, "{mode:?}: peak RSS {rss:.1} MiB");
    assert_eq!(code, 1, "{mode:?}: {err}");
    for r in &rows {
        assert_eq!(r["outcome"], "failed", "{mode:?}: {r:?}");
        // Retried as a transport error: 2 attempts charged. 24 failures in
        // a row over 12 rows open the outage breaker once; the attempts it
        // gives back are sent again (`attempts` counts requests sent).
        let paused = err.contains("Banxa answering again");
        assert!(
            r["attempts"] == "2" || (paused && r["attempts"] == "3"),
            "{mode:?}: retried as a transport error: {r:?}"
        );
        assert!(
            r["message"].contains(expect_in_message),
            "{mode:?}: {}",
            r["message"]
        );
    }
    assert!(dir.path().join("export.retry.csv").exists());
}

#[test]
fn a_202_announcing_512_mib_is_a_transport_error_and_memory_stays_flat() {
    assert_transport_failures(Mode::Huge202, "larger than 64 KiB");
}

#[test]
fn an_endless_202_body_is_cut_at_64_kib() {
    assert_transport_failures(Mode::Endless202, "larger than 64 KiB");
}

#[test]
fn an_endless_chunked_500_is_cut_at_64_kib() {
    assert_transport_failures(Mode::EndlessChunked500, "larger than 64 KiB");
}

#[test]
fn endless_headers_are_a_transport_error() {
    assert_transport_failures(Mode::EndlessHeaders, "connection error");
}

#[test]
fn garbage_is_a_transport_error() {
    assert_transport_failures(Mode::Garbage, "connection error");
}

#[test]
fn a_status_line_trickled_a_byte_at_a_time_times_out() {
    // The timeout covers the whole exchange: 2 s, though a byte arrives
    // every 300 ms.
    assert_transport_failures(Mode::Trickle, "no answer within the timeout");
}

#[test]
fn a_202_for_another_identity_fails_at_once_without_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(Mode::OtherIdentity);
    let (code, _, err, rows) = run_against(&server, dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    for r in &rows {
        assert_eq!(r["outcome"], "failed", "{r:?}");
        assert_eq!(r["attempts"], "1", "not retried: {r:?}");
        assert_eq!(r["httpStatus"], "202");
        assert!(r["message"].contains("`someone-else`"), "{}", r["message"]);
        assert!(!r["message"].contains("gave up"), "{}", r["message"]);
    }
    assert_eq!(server.requests.load(Ordering::Relaxed), ROWS);
    let retry = std::fs::read_to_string(dir.path().join("export.retry.csv")).unwrap();
    assert_eq!(retry.lines().count() as u64, ROWS + 1, "header + every row");
}

#[test]
fn redirects_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (port, target) = counting_listener();
    let server = serve(Mode::Redirect(port));
    let (code, _, err, rows) = run_against(&server, dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    for r in &rows {
        assert_eq!(r["outcome"], "rejected", "{r:?}");
        assert_eq!(r["httpStatus"], "307");
        assert!(r["message"].contains("redirect"), "{}", r["message"]);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        target.load(Ordering::Relaxed),
        0,
        "nothing reached the target"
    );
}

#[test]
fn a_422_with_1200_fields_writes_at_most_4_kib_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(Mode::ManyErrors);
    let (code, _, err, rows) = run_against(&server, dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    for r in &rows {
        assert_eq!(r["outcome"], "rejected", "{r:?}");
        assert!(r["errors"].len() <= 4096, "{}", r["errors"].len());
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r["errors"]).expect("errors stays JSON");
        assert!(v.contains_key("field0"));
        let note = v["…"][0].as_str().unwrap();
        assert!(note.ends_with("more fields not shown"), "{note}");
    }
}

#[test]
fn a_422_of_100000_fields_is_not_read_and_the_row_stays_small() {
    assert_transport_failures(Mode::HugeErrors, "larger than 64 KiB");
}

#[test]
fn a_60_kb_message_is_cut_to_1_kib_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(Mode::LongMessage);
    let (code, _, err, rows) = run_against(&server, dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    for r in &rows {
        assert_eq!(r["outcome"], "rejected");
        assert!(r["message"].len() <= 1024, "{}", r["message"].len());
        assert!(r["message"].ends_with("…[cut]"), "{}", r["message"]);
        assert_eq!(r["traceId"], "t-1");
    }
}
