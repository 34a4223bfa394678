//! `kycshare report` on real runs against the emulator: a run with
//! accepted, invalid, duplicate, rejected (422) and failed rows and its
//! retry run; the counts against the results files, every chart, the 422
//! fields, the not-accepted table, no PII and nothing from the network;
//! the cap of the table; the default path and mode; bad arguments.

mod common;
use common::*;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const OUTCOMES: [&str; 7] = [
    "accepted",
    "invalid",
    "duplicate",
    "rejected",
    "failed",
    "skipped",
    "validated",
];

/// The export: 20 accepted, 2 failed (the emulator fails them always), 2
/// refused with 422 (a non-ASCII email local part, valid locally), 2
/// invalid locally, 1 duplicate.
fn mixed_export(dir: &Path) -> std::path::PathBuf {
    let mut s = String::from("identityReference,email,mobileNumber,token\n");
    for i in 1..=20 {
        s.push_str(&format!(
            "a-{i},user{i}.a@example.com,+61 4{i:08},tok-a-{i}-Qw7\n"
        ));
    }
    s.push_str("f-1,fail1@example.com,+61 411100001,tok-f-1-Qw7\n");
    s.push_str("r-1,jöhn1@example.com,+61 411200001,tok-r-1-Qw7\n");
    s.push_str("i-1,not-an-email,+61 411300001,tok-i-1-Qw7\n");
    s.push_str("a-3,dup3@example.com,+61 411400003,tok-dup-3-Qw7\n");
    s.push_str("f-2,fail2@example.com,+61 411100002,tok-f-2-Qw7\n");
    s.push_str("r-2,jöhn2@example.com,+61 411200002,tok-r-2-Qw7\n");
    s.push_str("i-2,ok.i2@example.com,+61 4111 3333 5555 7777 99,tok-i-2-Qw7\n");
    let p = dir.join("export.csv");
    std::fs::write(&p, s).unwrap();
    p
}

/// Counts by outcome of a results file, read with the csv crate.
fn file_counts(path: &Path) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    for r in results(path) {
        *c.entry(r["outcome"].clone()).or_insert(0) += 1;
    }
    c
}

fn assert_counts(json: &serde_json::Value, expected: &BTreeMap<String, u64>, what: &str) {
    for o in OUTCOMES {
        let want = expected.get(o).copied().unwrap_or(0);
        let got = json.get(o).and_then(|v| v.as_u64()).unwrap_or(0);
        assert_eq!(got, want, "{what}: {o} in {json}");
    }
}

/// The part of the page from the `<tag … id="id">` to the tag's end.
fn section<'a>(html: &'a str, tag: &str, id: &str) -> &'a str {
    let at = html
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no id=\"{id}\" in the page"));
    let start = html[..at].rfind('<').unwrap();
    assert!(
        html[start..].starts_with(&format!("<{tag}")),
        "id {id} is on a <{tag}>"
    );
    let rest = &html[start..];
    let end = rest.find(&format!("</{tag}>")).expect("closed");
    &rest[..end]
}

/// The text of each cell of each `<tr class="row">` of a table.
fn table_rows(table: &str) -> Vec<Vec<String>> {
    table
        .split("<tr class=\"row\">")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').unwrap() + 1..];
                    text[..text.find("</td>").unwrap()].to_string()
                })
                .collect()
        })
        .collect()
}

fn report(args: &[&std::ffi::OsStr]) -> (serde_json::Value, String) {
    let out = run(bin().arg("report").args(args).arg("--json"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON");
    (json, stderr(&out))
}

#[test]
fn a_run_and_its_retry_run_in_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| c.fail_always = vec!["f-1".into(), "f-2".into()]);
    let input = mixed_export(dir.path());
    let out =
        run(run_cmd(&input, &emu.url).args(["--rate", "100/s", "--max-attempts", "2", "--json"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let res1 = dir.path().join("export.results.csv");
    let retry = dir.path().join("export.retry.csv");
    assert!(retry.exists(), "the failed rows are queued for retry");
    // The retry run, the command the summary prints, against an emulator
    // that now accepts them.
    let printed = next_commands(&out)
        .into_iter()
        .find(|c| c.starts_with("kycshare run") && c.contains("export.retry.csv"))
        .expect("the retry command");
    let emu2 = Emu::start(|_| {});
    let out = run_printed(&printed.replace(&emu.url, &emu2.url), dir.path());
    assert_eq!(code(&out), 0, "{printed}: {}", stderr(&out));
    let res2 = dir.path().join("export.retry.results.csv");

    let page = dir.path().join("migration.html");
    let (j, err) = report(&[
        res1.as_os_str(),
        res2.as_os_str(),
        "-o".as_ref(),
        page.as_os_str(),
    ]);
    assert!(err.contains("report written to"), "{err}");
    assert_eq!(j["report"], page.display().to_string());

    // Counts: per file, all rows, and the final state, as the files say.
    let c1 = file_counts(&res1);
    let c2 = file_counts(&res2);
    assert_eq!(c1["accepted"], 20, "{c1:?}");
    assert_eq!(c1["failed"], 2, "{c1:?}");
    assert_eq!(c1["rejected"], 2, "{c1:?}");
    assert_eq!(c1["invalid"], 2, "{c1:?}");
    assert_eq!(c1["duplicate"], 1, "{c1:?}");
    assert_eq!(c2["accepted"], 2, "{c2:?}");
    assert_counts(&j["files"][0]["counts"], &c1, "first file");
    assert_counts(&j["files"][1]["counts"], &c2, "retry file");
    assert_eq!(j["files"][0]["rows"], results(&res1).len() as u64);
    assert_eq!(j["files"][1]["rows"], results(&res2).len() as u64);
    let mut all = c1.clone();
    for (k, v) in &c2 {
        *all.entry(k.clone()).or_insert(0) += v;
    }
    assert_counts(&j["counts"], &all, "all rows");
    let mut last: HashMap<String, String> = HashMap::new();
    let mut dups = 0;
    for r in results(&res1).into_iter().chain(results(&res2)) {
        if r["outcome"] == "duplicate" {
            dups += 1;
        } else {
            last.insert(r["identityReference"].clone(), r["outcome"].clone());
        }
    }
    let mut fin: BTreeMap<String, u64> = BTreeMap::new();
    for o in last.values() {
        *fin.entry(o.clone()).or_insert(0) += 1;
    }
    fin.insert("duplicate".into(), dups);
    assert_eq!(fin["accepted"], 22, "f-1 and f-2 accepted by the retry run");
    assert_counts(&j["finalCounts"], &fin, "final state");

    // The per-minute series add up to the rows, and the percentiles hold.
    let per_minute = j["perMinute"].as_array().unwrap();
    assert!(!per_minute.is_empty());
    let total: u64 = per_minute
        .iter()
        .flat_map(|m| m["counts"].as_object().unwrap().values())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, all.values().sum::<u64>());
    let sent = results(&res1)
        .into_iter()
        .chain(results(&res2))
        .filter(|r| !r["latencyMs"].is_empty())
        .count() as u64;
    let lat = &j["latencyMs"];
    assert_eq!(lat["count"], sent, "{lat}");
    let (p50, p95, p99) = (
        lat["p50"].as_u64().unwrap(),
        lat["p95"].as_u64().unwrap(),
        lat["p99"].as_u64().unwrap(),
    );
    assert!(
        p50 <= p95 && p95 <= p99 && p99 <= lat["max"].as_u64().unwrap(),
        "{lat}"
    );
    assert_eq!(
        j["attempts"]["2"], 2,
        "f-1 and f-2 took 2 attempts: {}",
        j["attempts"]
    );
    assert_eq!(
        j["attempts"]["0"], 3,
        "invalid and duplicate rows: {}",
        j["attempts"]
    );
    assert!(
        per_minute[0]["configuredPerMinute"].as_f64() == Some(6000.0),
        "100/s"
    );

    // The 422 field names, in the JSON and on the page.
    assert_eq!(j["fields"]["email"], 2, "{}", j["fields"]);
    let rejected = j["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "rejected")
        .expect("a rejected reason");
    assert_eq!(rejected["httpStatus"], 422);
    assert_eq!(rejected["fields"]["email"], 2);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        section(&html, "table", "reasons").contains("<code class=\"field\">email</code>"),
        "the 422 field in the reasons table"
    );

    // Every chart, each with its data drawn (colours from report::charts).
    let charts = [
        (
            "chart-outcomes",
            vec!["fill=\"#2E7D32\"", "fill=\"#C62828\"", "fill=\"#EF6C00\""],
        ),
        ("chart-rate", vec!["fill=\"#1565C0\"", "stroke=\"#C62828\""]),
        ("chart-latency", vec!["<circle", "fill=\"#EF6C00\""]),
        ("chart-latency-distribution", vec!["fill=\"#1565C0\""]),
        ("chart-attempts", vec!["fill=\"#1565C0\""]),
    ];
    for (id, marks) in charts {
        let fig = section(&html, "figure", id);
        assert!(fig.contains("<svg"), "{id} has its SVG");
        for m in marks {
            assert!(fig.contains(m), "{id} draws {m}");
        }
    }
    assert!(
        html.contains("id=\"final-state\""),
        "several files: the final state"
    );
    assert!(section(&html, "p", "pauses").contains("No pause"));

    // The table: the final not-accepted records, f-1 and f-2 no longer.
    let rows = table_rows(section(&html, "table", "not-accepted"));
    let mut ids: Vec<(String, String)> =
        rows.iter().map(|r| (r[3].clone(), r[4].clone())).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("a-3", "duplicate"),
            ("i-1", "invalid"),
            ("i-2", "invalid"),
            ("r-1", "rejected"),
            ("r-2", "rejected"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let r1 = rows.iter().find(|r| r[3] == "r-1").unwrap();
    let want = results(&res1)
        .into_iter()
        .find(|r| r["identityReference"] == "r-1")
        .unwrap();
    assert_eq!(r1[1], want["record"], "record");
    assert_eq!(r1[2], want["line"], "line");
    assert_eq!(r1[6], want["message"], "message");
    assert_eq!(j["notAccepted"]["total"], 5);
    assert_eq!(j["notAccepted"]["leftOut"], 0);

    // No PII, no secret: every email, mobile number and token of the input.
    let stdout_json = j.to_string();
    let mut csv = csv::Reader::from_path(&input).unwrap();
    let headers = csv.headers().unwrap().clone();
    let mut checked = 0;
    for rec in csv.records() {
        let rec = rec.unwrap();
        for (h, v) in headers.iter().zip(rec.iter()) {
            if matches!(h, "email" | "mobileNumber" | "token") && !v.is_empty() {
                assert!(!html.contains(v), "the page holds {h} {v}");
                assert!(!stdout_json.contains(v), "the JSON holds {h} {v}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 27 * 3);
    assert!(!html.contains(SECRET) && !html.contains(KEY));
    // Self-contained: nothing to fetch, nothing to run.
    for bad in [
        "<script", "http://", "https://", "src=", "href=", "<link", "@import", "url(",
    ] {
        assert!(!html.contains(bad), "the page holds {bad}");
    }
    let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "it holds identityReferences");
}

#[test]
fn one_file_default_path_and_a_stopped_run() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| c.fail_always = vec!["s-3".into()]);
    let input = export(dir.path(), "export.csv", "s", 6);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100/s", "--max-attempts", "1"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let res = dir.path().join("export.results.csv");
    let (j, _) = report(&[res.as_os_str()]);
    let page = dir.path().join("export.results.report.html");
    assert_eq!(j["report"], page.display().to_string());
    let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_counts(&j["counts"], &file_counts(&res), "counts");
    assert_eq!(
        j["finalCounts"], j["counts"],
        "one file: its own final state"
    );
    assert_eq!(j["files"][0]["exitCode"], 1);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("id=\"final-state\""),
        "one file: no final-state row"
    );
    let rows = table_rows(section(&html, "table", "not-accepted"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][2], "s-3");
    assert_eq!(rows[0][3], "failed");
    // A second report replaces the first.
    let (j2, _) = report(&[res.as_os_str()]);
    assert_eq!(j2["counts"], j["counts"]);
}

#[test]
fn the_table_is_capped_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    // 1,005 rows invalid locally (never sent: fast), 2 accepted.
    let mut s = String::from("identityReference,email,mobileNumber,token\n");
    for i in 1..=1005 {
        s.push_str(&format!("bad-{i},nobody,+61 4{i:08},tok-{i}\n"));
    }
    s.push_str("ok-1,ok1@example.com,+61 499900001,tok-ok-1\nok-2,ok2@example.com,+61 499900002,tok-ok-2\n");
    let input = dir.path().join("big.csv");
    std::fs::write(&input, s).unwrap();
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let res = dir.path().join("big.results.csv");
    let page = dir.path().join("big.html");
    let (j, _) = report(&[res.as_os_str(), "-o".as_ref(), page.as_os_str()]);
    assert_eq!(j["notAccepted"]["total"], 1005);
    assert_eq!(j["notAccepted"]["shown"], 1000);
    assert_eq!(j["notAccepted"]["leftOut"], 5);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        table_rows(section(&html, "table", "not-accepted")).len(),
        1000
    );
    assert!(
        html.contains("<strong>5 left out</strong>"),
        "the note on the cap"
    );
    // Nothing sent but two rows: the latency charts still have data.
    assert_eq!(j["latencyMs"]["count"], 2);
    assert_eq!(j["attempts"]["0"], 1005);
}

#[test]
fn a_missing_or_foreign_file_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin()
        .arg("report")
        .arg(dir.path().join("nope.results.csv"))
        .arg("--json"));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no such results file"),
        "{}",
        stderr(&out)
    );
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["command"], "report");
    let other = dir.path().join("export.csv");
    std::fs::write(&other, "identityReference,email\nx,y\n").unwrap();
    let out = run(bin().arg("report").arg(&other));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("is not a kycshare results file"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("export.report.html").exists());
    let out = run(bin().arg("report"));
    assert_eq!(code(&out), 2, "RESULTS is required");
}

#[test]
fn the_breakers_pauses_come_from_the_events_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "p", 100);
    let emu = Emu::start(|c| {
        c.outage_after = Some(std::time::Duration::from_secs(1));
        c.outage_for = std::time::Duration::from_secs(3);
    });
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "40/s", "--max-attempts", "1"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let res = dir.path().join("export.results.csv");
    let events: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("export.results.events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let paused: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "paused").collect();
    let resumed: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "resumed").collect();
    assert!(!paused.is_empty(), "the outage paused the run: {events:?}");
    let (j, _) = report(&[res.as_os_str()]);
    let pauses = j["pauses"].as_array().unwrap();
    assert_eq!(pauses.len(), paused.len(), "{}", j["pauses"]);
    for (i, p) in pauses.iter().enumerate() {
        assert_eq!(p["start"], paused[i]["time"]);
        assert_eq!(p["end"], resumed[i]["time"]);
        assert_eq!(p["seconds"], resumed[i]["pausedSeconds"]);
        assert_eq!(p["message"], paused[i]["message"]);
    }
    let html = std::fs::read_to_string(dir.path().join("export.results.report.html")).unwrap();
    let table = section(&html, "table", "pauses");
    assert!(
        table.contains(paused[0]["time"].as_str().unwrap()),
        "{table}"
    );
    // The band behind the time charts (report::charts' PAUSE colour).
    for id in ["chart-outcomes", "chart-rate", "chart-latency"] {
        assert!(
            section(&html, "figure", id).contains("fill=\"#FFC107\""),
            "{id}"
        );
    }
}
