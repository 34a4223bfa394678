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
