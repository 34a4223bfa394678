//! Load client for the emulator: how many valid, signed requests per second
//! can `kycshare mock` verify, validate and accept on loopback?
//!
//! ```text
//! cargo run --release --example mock_bench [-- --seconds 10 --connections 32]
//! cargo run --release --example mock_bench -- --url http://127.0.0.1:8080  # an external `kycshare mock --rate-limit off`
//! ```
//!
//! Without `--url` the emulator runs in this process (rate limit off), on
//! the same runtime and cores as the client: the figure is for both sharing
//! the machine. Every request has a new identityReference, a new strictly
//! increasing microsecond nonce and its own HMAC, computed here with this
//! file's own signing code (not the crate's signer); a request counts only
//! if it was answered 202. The bench fails if any answer is not 202.
//!
//! The client speaks plain HTTP/1.1 over keep-alive connections, one
//! request at a time per connection (no pipelining), so the client side
//! costs as little as possible.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use kycshare::mock::{MockConfig, MockServer};
use kycshare::secret::Secret;

const PATH: &str = "/eapi/v0/identities/token/share";
const KEY: &str = "bench-key";
const SECRET: &str = "bench-secret";

struct Options {
    url: Option<String>,
    seconds: u64,
    connections: usize,
}

fn options() -> Options {
    let mut opts = Options {
        url: None,
        seconds: 10,
        connections: 32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--url" => opts.url = Some(value()),
            "--seconds" => opts.seconds = value().parse().expect("--seconds N"),
            "--connections" => opts.connections = value().parse().expect("--connections N"),
            "--bench" => {} // passed by `cargo bench`-style runners
            other => panic!("unknown argument {other}; see the file's doc comment"),
        }
    }
    opts
}

/// Strictly increasing microsecond nonces shared by all connections.
struct Nonces(AtomicU64);

impl Nonces {
    fn next(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let mut last = self.0.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .0
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

/// This bench's own signer: hex(HMAC-SHA256(secret, "POST\nPATH\nNONCE\nBODY")).
fn sign(keyed: &Hmac<Sha256>, nonce: &str, body: &[u8]) -> String {
    let mut mac = keyed.clone();
    mac.update(b"POST\n");
    mac.update(PATH.as_bytes());
    mac.update(b"\n");
    mac.update(nonce.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Default)]
struct Tally {
    accepted: u64,
    other: u64,
}

async fn worker(
    addr: SocketAddr,
    worker: usize,
    nonces: Arc<Nonces>,
    deadline: Instant,
) -> std::io::Result<Tally> {
    let keyed = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut tally = Tally::default();
    let mut request = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let body = format!(
            r#"{{"identityReference":"bench-{worker}-{i}","email":"user{i}@example.com","mobileNumber":"61410{i:06}","provider":{{"vendor":"sumsub","token":"_act-sbx-jwt-{worker}-{i}"}}}}"#
        );
        let nonce = nonces.next().to_string();
        let signature = sign(&keyed, &nonce, body.as_bytes());
        request.clear();
        request.extend_from_slice(
            format!(
                "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}:{signature}:{nonce}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body.as_bytes());
        stream.write_all(&request).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        if status == 202 {
            tally.accepted += 1;
        } else {
            tally.other += 1;
        }
    }
    Ok(tally)
}

/// Reads one response (headers and a Content-Length body); returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end]).expect("ASCII headers");
        let status: u16 = head[9..12].parse().expect("a status line");
        let body_len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let total = end + 4 + body_len;
        while len < total {
            if total > buf.len() {
                buf.resize(total, 0);
            }
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            len += n;
        }
        return Ok(status);
    }
}

fn main() {
    let opts = options();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (server, addr) = match &opts.url {
            Some(url) => {
                let host = url.trim_start_matches("http://").trim_end_matches('/');
                let addr: SocketAddr = host.parse().expect("--url http://IP:PORT");
                (None, addr)
            }
            None => {
                let mut config = MockConfig::new(KEY, Secret::new(SECRET));
                config.rate_limit_per_min = None;
                let server = MockServer::start("127.0.0.1:0".parse().unwrap(), config)
                    .await
                    .expect("emulator starts");
                let addr = server.addr();
                (Some(server), addr)
            }
        };
        let nonces = Arc::new(Nonces(AtomicU64::new(0)));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(opts.seconds);
        let workers: Vec<_> = (0..opts.connections)
            .map(|w| tokio::spawn(worker(addr, w, Arc::clone(&nonces), deadline)))
            .collect();
        let mut total = Tally::default();
        for w in workers {
            let tally = w.await.unwrap().expect("the emulator answers");
            total.accepted += tally.accepted;
            total.other += tally.other;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "mock_bench: {:.0} valid requests/s ({} accepted in {:.2} s, {} connections, {} not 202) on {} cores",
            total.accepted as f64 / elapsed,
            total.accepted,
            elapsed,
            opts.connections,
            total.other,
            cores
        );
        if let Some(server) = server {
            let stats = server.stats();
            println!(
                "server: {} share requests, by status {:?}, peak in flight {}, max in 1 s {}",
                stats.share_requests, stats.by_status, stats.peak_in_flight, stats.max_in_1s
            );
            assert_eq!(stats.by_status.get("202").copied().unwrap_or(0), total.accepted);
            server.shutdown().await;
        }
        assert_eq!(total.other, 0, "every answer must be 202");
    });
}
