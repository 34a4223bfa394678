//! The smaller problems a new operator met (issue 12, item 6), each as it
//! behaves now, through the real binary.

mod common;
use common::*;

#[test]
fn an_empty_secret_in_the_environment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "s", 2);
    let out = run(run_cmd(&input, "http://127.0.0.1:1").env("BANXA_API_SECRET", ""));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("BANXA_API_SECRET is set but empty"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secret_spellings_on_the_command_line_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "s", 2);
    for flag in ["--secret", "--api-secret"] {
        let out = run(run_cmd(&input, "http://127.0.0.1:1").args([flag, "x"]));
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("BANXA_API_SECRET") && err.contains("--api-secret-file"),
            "{err}"
        );
    }
    let out = run(run_cmd(&input, "http://127.0.0.1:1").args(["--api-key", "x"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("export BANXA_API_KEY"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_results_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "s", 2);
    let missing = dir.path().join("nowhere");
    let out = run(run_cmd(&input, "http://127.0.0.1:1")
        .arg("--results")
        .arg(missing.join("r.csv")));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("its folder {} does not exist", missing.display())),
        "{err}"
    );
}

#[test]
fn validate_on_a_run_journal_suggests_only_its_own_flags() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "e.csv", "j", 3);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(bin().arg("validate").arg(&input));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the journal of a run"), "{err}");
    assert!(
        !err.contains("--resume") && err.contains("--results"),
        "{err}"
    );
}

#[test]
fn a_semicolon_file_without_delimiter_gets_the_flag_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("semi.csv");
    std::fs::write(
        &input,
        "identityReference;email;mobileNumber;token\nid-1;a@example.com;+61400000001;tok-123456\n",
    )
    .unwrap();
    let out = run(bin().arg("validate").arg(&input));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("add --delimiter ';'"),
        "{}",
        stderr(&out)
    );
    let out = run(bin().arg("validate").arg(&input).args(["--delimiter", ";"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_tsv_gets_results_named_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tab.tsv");
    std::fs::write(
        &input,
        "identityReference\temail\tmobileNumber\ttoken\nid-1\ta@example.com\t+61400000001\ttok-123456\n",
    )
    .unwrap();
    let out = run(bin()
        .arg("validate")
        .arg(&input)
        .args(["--delimiter", "tab"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(dir.path().join("tab.results.csv").exists());
}

#[test]
fn demo_quiet_prints_only_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin()
        .arg("-q")
        .arg("demo")
        .arg("--dir")
        .arg(dir.path())
        .args(["--rate", "400/s"]));
    assert!(matches!(code(&out), 0 | 1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("kycshare demo:") && !err.contains("The emulator saw"),
        "{err}"
    );
    assert!(err.contains("kycshare run finished"), "{err}");
}

#[test]
fn mock_refuses_a_secret_on_the_command_line_with_what_to_do() {
    let out = run(bin().args(["mock", "--listen", "127.0.0.1:0", "--secret", "x"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("BANXA_API_SECRET") && err.contains("--api-secret-file"),
        "{err}"
    );
}
