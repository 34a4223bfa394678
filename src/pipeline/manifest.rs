//! The run manifest: how a run was started, stored beside its results file
//! before the first request (`export.results.csv` ->
//! `export.results.manifest.json`, written atomically, mode 0600, no
//! secret: the secret files' paths at most). `kycshare resume RESULTS`
//! continues a run with exactly these settings; `run … --resume` is
//! refused when a setting that changes what is sent or where differs; the
//! next steps a run prints are rendered from them ([`command_line`]), so
//! that every printed command runs as printed.
//!
//! Paths are stored absolute, so that `resume` works from any directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::{
    MintSettings, PlanError, Settings, DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_SECS,
    DEFAULT_TOKEN_TTL_SECS,
};
use crate::dispatch::concurrency::Concurrency;
use crate::input::Mapping;

/// The format of the manifest file; a newer one is refused with a reason.
pub const MANIFEST_VERSION: u32 = 1;

/// What `run` stores about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    /// The kycshare that started the run.
    pub kycshare: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    pub input: PathBuf,
    /// `FIELD=COLUMN`, as given.
    pub maps: Vec<String>,
    /// The field separator (one character; `\t` for tab).
    pub delimiter: String,
    pub results: PathBuf,
    pub retry_file: PathBuf,
    pub base_url: String,
    /// `None`: the default for the base URL.
    pub rate: Option<String>,
    pub concurrency: String,
    pub max_attempts: u32,
    pub timeout_seconds: f64,
    /// `--max-outage` (absent in manifests of older runs: the default).
    #[serde(default)]
    pub max_outage_seconds: Option<u64>,
    pub api_secret_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub ledger: Option<crate::ledger::LedgerLocation>,
    pub metrics_file: Option<PathBuf>,
    /// `--metrics-listen` (absent in manifests of older runs).
    #[serde(default)]
    pub metrics_listen: Option<String>,
    pub mint: Option<StoredMint>,
    /// `--reshare-unverified AGE` in seconds (absent in manifests of older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshare_unverified_seconds: Option<u64>,
    /// The results file of the run whose retry file this run's input is.
    pub parent: Option<PathBuf>,
}

/// `--mint` and its settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredMint {
    pub for_client_id: Option<String>,
    pub token_ttl: Option<u64>,
    pub sumsub_base_url: Option<String>,
    pub mint_rate: Option<String>,
    pub sumsub_secret_file: Option<PathBuf>,
}

/// `export.results.csv` -> `export.results.manifest.json`.
pub fn manifest_path(results: &Path) -> PathBuf {
    let name = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".csv").unwrap_or(&name);
    results.with_file_name(format!("{stem}.manifest.json"))
}

fn absolute(p: &Path) -> PathBuf {
    if p == Path::new("-") {
        return p.to_path_buf();
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn delimiter_text(d: u8) -> String {
    if d == b'\t' {
        "\\t".into()
    } else {
        (d as char).to_string()
    }
}

fn concurrency_text(c: Concurrency) -> String {
    match c {
        Concurrency::Auto => "auto".into(),
        Concurrency::Fixed(n) => n.to_string(),
    }
}

impl Manifest {
    /// The manifest of a run started with `s`, whose results and retry
    /// files are `results` and `retry`.
    pub fn of(s: &Settings, results: &Path, retry: &Path, started_at: String) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            kycshare: env!("CARGO_PKG_VERSION").into(),
            started_at,
            input: absolute(&s.input),
            maps: s
                .maps
                .iter()
                .map(|m| format!("{}={}", m.field, m.column))
                .collect(),
            delimiter: delimiter_text(s.delimiter),
            results: absolute(results),
            retry_file: absolute(retry),
            base_url: s.base_url.trim().trim_end_matches('/').to_string(),
            rate: s.rate.map(|r| r.to_string()),
            concurrency: concurrency_text(s.concurrency),
            max_attempts: s.max_attempts,
            timeout_seconds: s.timeout.as_secs_f64(),
            max_outage_seconds: Some(s.max_outage.as_secs()),
            api_secret_file: s.api_secret_file.as_deref().map(absolute),
            ca_cert: s.ca_cert.as_deref().map(absolute),
            ledger: s.ledger.as_ref().map(|l| l.absolute()),
            metrics_file: s.metrics_file.as_deref().map(absolute),
            metrics_listen: s.metrics_listen.map(|a| a.to_string()),
            mint: s.mint.as_ref().map(|m| StoredMint {
                for_client_id: m.for_client_id.clone(),
                token_ttl: m.token_ttl,
                sumsub_base_url: m
                    .sumsub_base_url
                    .as_ref()
                    .map(|u| u.trim().trim_end_matches('/').to_string()),
                mint_rate: m.mint_rate.map(|r| r.to_string()),
                sumsub_secret_file: m.sumsub_secret_file.as_deref().map(absolute),
            }),
            reshare_unverified_seconds: s.reshare_unverified.map(|d| d.as_secs()),
            parent: None,
        }
    }

    /// Reads the manifest beside `results`: `Ok(None)` when there is none.
    pub fn load(results: &Path) -> Result<Option<Manifest>, PlanError> {
        let path = manifest_path(results);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(PlanError::Usage(format!(
                    "cannot read the run manifest {}: {}",
                    path.display(),
                    crate::model::describe_io(&e)
                )))
            }
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            PlanError::Usage(format!(
                "the run manifest {} is damaged ({e}): it records how the run was started; restore it, or continue with `kycshare run INPUT --results {} --resume` and the settings the run was started with",
                path.display(),
                results.display()
            ))
        })?;
        if m.version > MANIFEST_VERSION {
            return Err(PlanError::Usage(format!(
                "the run manifest {} was written by a newer kycshare ({}, format {}): continue the run with that version",
                path.display(),
                m.kycshare,
                m.version
            )));
        }
        Ok(Some(m))
    }

    /// Writes the manifest beside `results`, atomically, mode 0600.
    pub fn store(&self, results: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = manifest_path(results);
        // A fixed name beside it (the run holds the results file's lock, so
        // no other run writes it): a kill mid-write leaves at most this one
        // file, which the next store replaces.
        let tmp = crate::output::retry::temp_path(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The settings to continue this run with (`resume`): exactly those it
    /// was started with, `resume` set.
    pub fn settings(&self) -> Result<Settings, PlanError> {
        let bad = |what: &str, e: String| {
            PlanError::Usage(format!(
                "the run manifest of {} has a bad {what}: {e}",
                self.results.display()
            ))
        };
        let mut s = Settings::new(&self.input, &self.base_url);
        s.maps = self
            .maps
            .iter()
            .map(|m| m.parse::<Mapping>().map_err(|e| bad("mapping", e)))
            .collect::<Result<_, _>>()?;
        s.delimiter =
            crate::input::parse_delimiter(&self.delimiter).map_err(|e| bad("delimiter", e))?;
        s.results = Some(self.results.clone());
        s.retry_file = Some(self.retry_file.clone());
        s.rate = match &self.rate {
            Some(r) => Some(r.parse().map_err(|e: String| bad("rate", e))?),
            None => None,
        };
        s.concurrency = self
            .concurrency
            .parse()
            .map_err(|e: String| bad("concurrency", e))?;
        s.max_attempts = self.max_attempts;
        s.timeout = Duration::try_from_secs_f64(self.timeout_seconds)
            .map_err(|e| bad("timeout", e.to_string()))?;
        if let Some(m) = self.max_outage_seconds {
            s.max_outage = Duration::from_secs(m);
        }
        s.resume = true;
        s.api_secret_file = self.api_secret_file.clone();
        s.ca_cert = self.ca_cert.clone();
        s.ledger = self.ledger.clone();
        s.metrics_file = self.metrics_file.clone();
        s.metrics_listen = self.metrics_listen.as_deref().and_then(|a| a.parse().ok());
        s.mint = match &self.mint {
            Some(m) => Some(MintSettings {
                for_client_id: m.for_client_id.clone(),
                token_ttl: m.token_ttl,
                sumsub_base_url: m.sumsub_base_url.clone(),
                mint_rate: match &m.mint_rate {
                    Some(r) => Some(r.parse().map_err(|e: String| bad("mint rate", e))?),
                    None => None,
                },
                credentials: None,
                sumsub_secret_file: m.sumsub_secret_file.clone(),
            }),
            None => None,
        };
        s.reshare_unverified = self.reshare_unverified_seconds.map(Duration::from_secs);
        s.parent = self.parent.clone();
        Ok(s)
    }

    /// The settings that change what is sent or where, where `self` (the
    /// stored run) and `other` (the one asked for) differ, in words.
    pub fn differences(&self, other: &Manifest) -> Vec<String> {
        let mut d = Vec::new();
        let shown = |p: &Option<crate::ledger::LedgerLocation>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into())
        };
        if self.input != other.input {
            d.push(format!(
                "input: the run read {}, this command reads {}",
                self.input.display(),
                other.input.display()
            ));
        }
        if self.base_url != other.base_url {
            d.push(format!(
                "--base-url: the run sent to {}, this command to {}",
                self.base_url, other.base_url
            ));
        }
        let mut a = self.maps.clone();
        let mut b = other.maps.clone();
        a.sort();
        b.sort();
        if a != b {
            let show = |m: &[String]| {
                if m.is_empty() {
                    "none".to_string()
                } else {
                    m.iter()
                        .map(|x| format!("--map {x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            };
            d.push(format!(
                "column mapping: the run used {}, this command {}",
                show(&self.maps),
                show(&other.maps)
            ));
        }
        if self.delimiter != other.delimiter {
            d.push(format!(
                "--delimiter: the run used `{}`, this command `{}`",
                self.delimiter, other.delimiter
            ));
        }
        let mint_key = |m: &Option<StoredMint>| {
            m.as_ref().map(|m| {
                (
                    m.for_client_id.clone(),
                    m.sumsub_base_url.clone(),
                    m.token_ttl,
                )
            })
        };
        if mint_key(&self.mint) != mint_key(&other.mint) {
            let show = |m: &Option<StoredMint>| match m {
                None => "no --mint".to_string(),
                Some(m) => format!(
                    "--mint --for-client-id {} --sumsub-base-url {} --token-ttl {}",
                    m.for_client_id.as_deref().unwrap_or("(none)"),
                    m.sumsub_base_url.as_deref().unwrap_or("(default)"),
                    m.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL_SECS)
                ),
            };
            d.push(format!(
                "mint settings: the run used {}, this command {}",
                show(&self.mint),
                show(&other.mint)
            ));
        }
        if self.ledger != other.ledger {
            d.push(format!(
                "--ledger: the run used {}, this command {}",
                shown(&self.ledger),
                shown(&other.ledger)
            ));
        }
        if self.reshare_unverified_seconds != other.reshare_unverified_seconds {
            let show = |a: Option<u64>| match a {
                Some(a) => format!("--reshare-unverified {a}s"),
                None => "no --reshare-unverified".to_string(),
            };
            d.push(format!(
                "--reshare-unverified: the run used {}, this command {}",
                show(self.reshare_unverified_seconds),
                show(other.reshare_unverified_seconds)
            ));
        }
        d
    }
}

/// Quotes one word for a POSIX shell when it needs it: as it is when
/// every character is one no shell treats specially, else in single
/// quotes (a quote inside as `'\''`).
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,^".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A shell command line from words, each quoted as needed.
pub fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `kycshare resume RESULTS`, as an operator types it.
pub fn resume_command(results: &Path) -> String {
    shell_line(&[
        "kycshare".into(),
        "resume".into(),
        results.display().to_string(),
    ])
}

/// `kycshare run INPUT …` with every setting of `s` that changes what is
/// sent, where, or how: the words of a command that runs as printed
/// (credentials aside). `input` replaces the settings' input (the retry
/// file, for a retry run); `results` is left to its default unless given.
pub fn command_line(s: &Settings, input: &Path, results: Option<&Path>) -> Vec<String> {
    let mut w: Vec<String> = vec!["kycshare".into(), "run".into(), input.display().to_string()];
    let flag = |w: &mut Vec<String>, name: &str, value: String| {
        w.push(name.into());
        w.push(value);
    };
    flag(
        &mut w,
        "--base-url",
        s.base_url.trim().trim_end_matches('/').to_string(),
    );
    for m in &s.maps {
        flag(&mut w, "--map", format!("{}={}", m.field, m.column));
    }
    if s.delimiter != b',' {
        flag(
            &mut w,
            "--delimiter",
            if s.delimiter == b'\t' {
                "tab".into()
            } else {
                (s.delimiter as char).to_string()
            },
        );
    }
    if let Some(r) = results {
        flag(&mut w, "--results", r.display().to_string());
    }
    if let Some(r) = s.rate {
        flag(&mut w, "--rate", r.to_string());
    }
    if let Concurrency::Fixed(n) = s.concurrency {
        flag(&mut w, "--concurrency", n.to_string());
    }
    if s.max_outage != crate::dispatch::breaker::DEFAULT_MAX_OUTAGE {
        flag(
            &mut w,
            "--max-outage",
            humantime::format_duration(s.max_outage).to_string(),
        );
    }
    if s.max_attempts != DEFAULT_MAX_ATTEMPTS {
        flag(&mut w, "--max-attempts", s.max_attempts.to_string());
    }
    if (s.timeout.as_secs_f64() - DEFAULT_TIMEOUT_SECS).abs() > 1e-9 {
        flag(&mut w, "--timeout", format!("{}", s.timeout.as_secs_f64()));
    }
    if let Some(p) = &s.api_secret_file {
        flag(&mut w, "--api-secret-file", p.display().to_string());
    }
    if let Some(p) = &s.ca_cert {
        flag(&mut w, "--ca-cert", p.display().to_string());
    }
    if let Some(p) = &s.ledger {
        flag(&mut w, "--ledger", p.display().to_string());
    }
    if let Some(a) = s.reshare_unverified {
        flag(&mut w, "--reshare-unverified", format!("{}s", a.as_secs()));
    }
    if let Some(m) = &s.mint {
        w.push("--mint".into());
        if let Some(c) = &m.for_client_id {
            flag(&mut w, "--for-client-id", c.clone());
        }
        if let Some(t) = m.token_ttl.filter(|t| *t != DEFAULT_TOKEN_TTL_SECS) {
            flag(&mut w, "--token-ttl", t.to_string());
        }
        if let Some(u) = &m.sumsub_base_url {
            flag(&mut w, "--sumsub-base-url", u.clone());
        }
        if let Some(r) = m.mint_rate {
            flag(&mut w, "--mint-rate", r.to_string());
        }
        if let Some(p) = &m.sumsub_secret_file {
            flag(&mut w, "--sumsub-secret-file", p.display().to_string());
        }
    }
    w
}

/// The run whose retry file is `input`, if its manifest is in the same
/// folder as `input`'s default place for one (beside its results file,
/// which by default is beside its input, which is where its retry file
/// goes by default): its results file.
pub fn find_parent(input: &Path) -> Option<PathBuf> {
    let input = absolute(input);
    let dir = input.parent()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(".manifest.json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Ok(m) = serde_json::from_str::<Manifest>(&text) {
            if m.retry_file == input {
                return Some(m.results);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_sits_beside_the_results() {
        assert_eq!(
            manifest_path(Path::new("/x/export.results.csv")),
            PathBuf::from("/x/export.results.manifest.json")
        );
        assert_eq!(
            manifest_path(Path::new("r")),
            PathBuf::from("r.manifest.json")
        );
    }

    #[test]
    fn settings_survive_the_round_trip() {
        let mut s = Settings::new("in.csv", "http://127.0.0.1:9/");
        s.maps = vec!["email=E mail".parse().unwrap()];
        s.delimiter = b'\t';
        s.rate = Some("20/s".parse().unwrap());
        s.concurrency = Concurrency::Fixed(4);
        s.max_attempts = 3;
        s.mint = Some(MintSettings {
            for_client_id: Some("banxa".into()),
            token_ttl: Some(60),
            sumsub_base_url: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        });
        let m = Manifest::of(&s, Path::new("r.csv"), Path::new("x.csv"), "t".into());
        let back = m.settings().unwrap();
        let m2 = Manifest::of(&back, Path::new("r.csv"), Path::new("x.csv"), "t".into());
        assert_eq!(m, m2);
        assert!(m.differences(&m2).is_empty());
        let mut other = s.clone();
        other.delimiter = b',';
        other.mint = None;
        let d = m.differences(&Manifest::of(
            &other,
            Path::new("r.csv"),
            Path::new("x.csv"),
            "t".into(),
        ));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("--delimiter") && d[1].contains("--mint"),
            "{d:?}"
        );
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("token=token"), "token=token");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a;b"), "'a;b'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
    }

    #[test]
    fn commands_are_quoted_for_the_shell() {
        let mut s = Settings::new("my export.csv", "https://api.banxa.com");
        s.maps = vec!["email=E-mail address".parse().unwrap()];
        let line = shell_line(&command_line(&s, Path::new("my export.retry.csv"), None));
        assert_eq!(
            line,
            "kycshare run 'my export.retry.csv' --base-url https://api.banxa.com --map 'email=E-mail address'"
        );
    }
}
