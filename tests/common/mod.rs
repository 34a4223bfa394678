//! Helpers shared by the integration tests: run the real binary, read the
//! results file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kycshare"));
    c.env_remove("BANXA_API_KEY")
        .env_remove("BANXA_API_SECRET")
        .env_remove("KYCSHARE_BASE_URL")
        .env_remove("SUMSUB_APP_TOKEN")
        .env_remove("SUMSUB_SECRET_KEY");
    c
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run kycshare")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The results file as rows of column name -> value.
pub fn results(path: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).expect("results file");
    let headers = r.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>().join(","),
        "record,line,identityReference,outcome,httpStatus,attempts,traceId,message,errors,latencyMs,completedAt"
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// (record, line, identityReference, outcome, message) sorted by record.
pub fn outcomes(path: &Path) -> Vec<(u64, u64, String, String, String)> {
    let mut v: Vec<_> = results(path)
        .into_iter()
        .map(|r| {
            (
                r["record"].parse().unwrap(),
                r["line"].parse().unwrap(),
                r["identityReference"].clone(),
                r["outcome"].clone(),
                r["message"].clone(),
            )
        })
        .collect();
    v.sort();
    v
}

pub fn o(
    record: u64,
    line: u64,
    id: &str,
    outcome: &str,
    message: &str,
) -> (u64, u64, String, String, String) {
    (record, line, id.into(), outcome.into(), message.into())
}

/// An in-process emulator on a loopback port, with its own runtime.
pub struct Emu {
    rt: tokio::runtime::Runtime,
    server: Option<kycshare::mock::MockServer>,
    pub url: String,
}

pub const KEY: &str = "test-key";
pub const SECRET: &str = "test-secret-value-9d8e7f";

impl Emu {
    pub fn start(f: impl FnOnce(&mut kycshare::mock::MockConfig)) -> Emu {
        Emu::start_on(0, f)
    }

    /// On a given loopback port (0: any).
    pub fn start_on(port: u16, f: impl FnOnce(&mut kycshare::mock::MockConfig)) -> Emu {
        let mut cfg = kycshare::mock::MockConfig::new(KEY, kycshare::secret::Secret::new(SECRET));
        cfg.rate_limit_per_min = None;
        f(&mut cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(kycshare::mock::MockServer::start(
                ([127, 0, 0, 1], port).into(),
                cfg,
            ))
            .unwrap();
        let url = server.base_url();
        Emu {
            rt,
            server: Some(server),
            url,
        }
    }

    pub fn stats(&self) -> kycshare::mock::Stats {
        self.server.as_ref().unwrap().stats()
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

/// `kycshare run` with the test credentials in the environment.
pub fn run_cmd(input: &Path, url: &str) -> Command {
    let mut c = bin();
    c.arg("run")
        .arg(input)
        .arg("--base-url")
        .arg(url)
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET);
    c
}

/// Writes an export of `n` valid rows (ids `{prefix}-1` …) and returns its path.
pub fn export(dir: &Path, name: &str, prefix: &str, n: usize) -> PathBuf {
    let mut s = String::from("identityReference,email,mobileNumber,token,extra\n");
    for i in 1..=n {
        s.push_str(&format!(
            "{prefix}-{i},user{i}.{prefix}@example.com,+61 4{:08},tok-{prefix}-{i}-Zx9,x\n",
            i
        ));
    }
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

/// One line of the emulator's --record file.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rec {
    pub seq: u64,
    pub unix_micros: u64,
    pub identity_reference: Option<String>,
    pub status: u16,
    pub nonce: Option<String>,
    pub payload: Option<serde_json::Value>,
}

pub fn record_lines(path: &Path) -> Vec<Rec> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// ---- helpers for the hardening tests --------------------------------------

/// Lines (LF-terminated) in a file; 0 when it does not exist yet.
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// Sends `sig` to a child process (kill(2)).
pub fn signal(child: &std::process::Child, sig: i32) {
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Polls `cond` every 2 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Waits for a child to exit, at most `limit` (then kills it and panics).
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not exit within {limit:?}");
        }
    }
}

/// Record numbers in the results file, with how often each appears.
pub fn record_counts(path: &Path) -> std::collections::BTreeMap<u64, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in results(path) {
        *m.entry(r["record"].parse::<u64>().unwrap()).or_insert(0) += 1;
    }
    m
}

/// Asserts every record 1..=n has exactly one row in the results file.
pub fn assert_one_row_per_record(path: &Path, n: u64) {
    let counts = record_counts(path);
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "records with more than one row: {twice:?}"
    );
    let missing: Vec<u64> = (1..=n).filter(|r| !counts.contains_key(r)).collect();
    assert!(missing.is_empty(), "records with no row: {missing:?}");
    assert_eq!(counts.len() as u64, n, "rows for records beyond the input");
}

/// identityReferences with `outcome` in the results file.
pub fn ids_with_outcome(path: &Path, outcome: &str) -> std::collections::BTreeSet<String> {
    results(path)
        .into_iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| r["identityReference"].clone())
        .collect()
}

/// identityReferences the emulator answered 202, per its --record file.
pub fn emulator_accepted(record: &Path) -> std::collections::BTreeSet<String> {
    record_lines(record)
        .into_iter()
        .filter(|r| r.status == 202)
        .filter_map(|r| r.identity_reference)
        .collect()
}

/// How many identityReferences reached the emulator more than once, and
/// the total of the extra sends.
pub fn double_sends(record: &Path) -> (usize, usize) {
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in record_lines(record) {
        if let Some(id) = r.identity_reference {
            *per.entry(id).or_insert(0) += 1;
        }
    }
    let ids = per.values().filter(|n| **n > 1).count();
    let extra = per.values().map(|n| n.saturating_sub(1)).sum();
    (ids, extra)
}

/// Runs `cmd` and returns (exit code, peak RSS of the child in KiB, its
/// stderr). Stdout is discarded.
///
/// The peak is the child's own `VmHWM` from /proc, polled while it runs:
/// `wait4`'s `ru_maxrss` would also count the test process's memory at the
/// moment of the spawn (Linux keeps the high-water mark across exec), so a
/// busy test binary would make every child look big.
pub fn run_measured(cmd: &mut Command, dir: &Path) -> (i32, u64, String) {
    use std::process::Stdio;
    let err_path = dir.join("measured.stderr");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    (
        status.code().unwrap_or(-1),
        peak_kib,
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// Runs a command kycshare printed as a next step, verbatim, through the
/// shell, in `dir`, with the test credentials in the environment.
pub fn run_printed(command: &str, dir: &Path) -> Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kycshare"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("KYCSHARE_BASE_URL")
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET)
        .output()
        .expect("sh")
}

/// The `nextCommands` of a `--json` summary on stdout; each also appears,
/// verbatim, in the human summary on stderr.
pub fn next_commands(o: &Output) -> Vec<String> {
    let j: serde_json::Value = serde_json::from_str(stdout(o).trim()).expect("--json summary");
    let cmds: Vec<String> = j["nextCommands"]
        .as_array()
        .expect("nextCommands")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    for c in &cmds {
        assert!(
            stderr(o).contains(c.as_str()),
            "`{c}` is printed: {}",
            stderr(o)
        );
    }
    cmds
}

/// Spawns `run` with stderr read line by line on a thread.
pub fn spawn(
    cmd: &mut std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kycshare run");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(err)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

pub fn collect(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let mut s = String::new();
    while let Ok(l) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// A fresh PostgreSQL database for one test, as a ledger URL (with the
/// password), on the server `scripts/with-postgres.sh` started
/// (`KYCSHARE_TEST_PG_URL`); `None`, saying so, when there is none (plain
/// `cargo test`; `make test` runs them).
pub fn pg_ledger(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("KYCSHARE_TEST_PG_URL") else {
        // Straight to stderr (not eprintln!, which the harness captures):
        // a skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no PostgreSQL (KYCSHARE_TEST_PG_URL unset): run it through scripts/with-postgres.sh, as `make test` does"
        );
        return None;
    };
    let db = format!("kt_{}_{}", test, std::process::id()).to_lowercase();
    let mut c = postgres::Client::connect(&base, postgres::NoTls).expect("the test server");
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let cut = base.rfind('/').unwrap();
    Some(format!("{}/{db}", &base[..cut]))
}

/// The password in a test ledger URL.
pub fn pg_password(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let userinfo = rest.split_once('@').unwrap().0;
    userinfo.split_once(':').unwrap().1.to_string()
}

/// The URL without its password, as kycshare shows it.
pub fn pg_shown(url: &str) -> String {
    url.replace(&format!(":{}@", pg_password(url)), "@")
}
