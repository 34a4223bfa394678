//! Where a ledger lives, as `--ledger` gives it: a file (SQLite) or a
//! `postgres://` / `postgresql://` URL, parsed once, with the password kept
//! apart in a [`Secret`] so that every form that is shown (logs, errors,
//! the manifest, the results, next-step commands) has none.
//!
//! Not for: connecting (see `pg.rs`) or opening files (`store.rs`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// `--ledger FILE` or `--ledger postgres://USER@HOST:PORT/DB`.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    File(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL ledger's URL: shown without its password, which is kept in
/// a [`Secret`] (from the URL, or `PGPASSWORD` when the URL has none).
#[derive(Clone)]
pub struct PgTarget {
    /// The URL without any password (userinfo or `password=`): what is
    /// shown, stored in the manifest, and parsed to connect.
    shown: String,
    /// The password given in the URL itself.
    url_password: Option<Secret>,
}

impl PartialEq for PgTarget {
    /// Two targets are the same ledger when their shown URLs are equal
    /// (the password does not change which ledger it is).
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown
    }
}
impl Eq for PgTarget {}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.shown)
            .field("password", &self.url_password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    /// Parses a `postgres://` or `postgresql://` URL, taking out its
    /// password. The rest is checked when connecting.
    pub fn parse(url: &str) -> Result<PgTarget, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                "a PostgreSQL ledger URL starts with postgres:// or postgresql://".to_string()
            })?;
        let scheme = &url[..url.len() - rest.len()];
        let (authority_end, _) = rest
            .char_indices()
            .find(|(_, c)| *c == '/' || *c == '?')
            .unwrap_or((rest.len(), ' '));
        let (authority, tail) = rest.split_at(authority_end);
        let mut url_password = None;
        let authority = match authority.rfind('@') {
            Some(at) => {
                let (userinfo, hosts) = authority.split_at(at);
                match userinfo.split_once(':') {
                    Some((user, pw)) => {
                        url_password = Some(Secret::new(percent_decode(pw)));
                        format!("{user}{hosts}")
                    }
                    None => authority.to_string(),
                }
            }
            None => authority.to_string(),
        };
        // `password=` in the query string: taken out too.
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| {
                        let k = kv.split('=').next().unwrap_or("");
                        if k == "password" {
                            if let Some((_, v)) = kv.split_once('=') {
                                url_password = Some(Secret::new(percent_decode(v)));
                            }
                            false
                        } else {
                            !kv.is_empty()
                        }
                    })
                    .collect();
                if kept.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{}", kept.join("&"))
                }
            }
            None => tail.to_string(),
        };
        Ok(PgTarget {
            shown: format!("{scheme}{authority}{tail}"),
            url_password,
        })
    }

    /// The URL as shown: no password in it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The password: the URL's, else `PGPASSWORD` (non-empty), else none.
    pub fn password(&self) -> Option<Secret> {
        self.url_password.clone().or_else(|| {
            std::env::var("PGPASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .map(Secret::new)
        })
    }

    /// A query parameter of the URL (`sslmode`, `sslrootcert`, …).
    pub fn param(&self, key: &str) -> Option<String> {
        let (_, query) = self.shown.split_once('?')?;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| percent_decode(v))
        })
    }

    /// The URL without the given query parameters (for a client that does
    /// not know them).
    pub fn without_params(&self, keys: &[&str]) -> String {
        match self.shown.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| !keys.contains(&kv.split('=').next().unwrap_or("")))
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => self.shown.clone(),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl LedgerLocation {
    /// `--ledger`'s value: a URL for PostgreSQL, otherwise a file path.
    pub fn parse(s: &str) -> Result<LedgerLocation, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            PgTarget::parse(s).map(LedgerLocation::Postgres)
        } else if s.is_empty() {
            Err("the ledger's path is empty".into())
        } else {
            Ok(LedgerLocation::File(PathBuf::from(s)))
        }
    }

    /// How it is shown: the path, or the URL without its password.
    pub fn display(&self) -> impl fmt::Display + '_ {
        self
    }

    /// The file, for an SQLite ledger.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            LedgerLocation::File(p) => Some(p),
            LedgerLocation::Postgres(_) => None,
        }
    }

    /// A file made absolute (as the manifest keeps paths); a URL as it is.
    pub fn absolute(&self) -> LedgerLocation {
        match self {
            LedgerLocation::File(p) => {
                LedgerLocation::File(std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
            }
            LedgerLocation::Postgres(t) => LedgerLocation::Postgres(t.clone()),
        }
    }

    /// Where a file beside the ledger goes (`verify --ledger`'s output):
    /// beside the file, or in the current directory for a URL.
    pub fn beside(&self, ext: &str) -> PathBuf {
        match self {
            LedgerLocation::File(p) => crate::input::source::beside(p, ext),
            LedgerLocation::Postgres(_) => PathBuf::from(format!("ledger.{ext}.csv")),
        }
    }
}

impl From<PathBuf> for LedgerLocation {
    fn from(p: PathBuf) -> Self {
        LedgerLocation::File(p)
    }
}

impl From<&Path> for LedgerLocation {
    fn from(p: &Path) -> Self {
        LedgerLocation::File(p.to_path_buf())
    }
}

impl fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::File(p) => write!(f, "{}", p.display()),
            LedgerLocation::Postgres(t) => t.fmt(f),
        }
    }
}

impl fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::File(p) => write!(f, "File({p:?})"),
            LedgerLocation::Postgres(t) => write!(f, "Postgres({t:?})"),
        }
    }
}

/// Kept in the manifest as text: the path, or the URL without password.
impl serde::Serialize for LedgerLocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LedgerLocation::File(p) => p.serialize(s),
            LedgerLocation::Postgres(t) => s.serialize_str(&t.shown),
        }
    }
}

impl<'de> serde::Deserialize<'de> for LedgerLocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LedgerLocation::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let l = LedgerLocation::parse(
            "postgres://kyc:s3cr%40t@db.internal:5433/ledger?sslmode=require&password=other",
        )
        .unwrap();
        let LedgerLocation::Postgres(t) = &l else {
            panic!()
        };
        assert_eq!(
            t.shown(),
            "postgres://kyc@db.internal:5433/ledger?sslmode=require"
        );
        assert_eq!(t.password().unwrap().expose(), "other");
        for shown in [
            l.to_string(),
            format!("{l:?}"),
            serde_json::to_string(&l).unwrap(),
        ] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(!shown.contains("other"), "{shown}");
        }
        assert_eq!(t.param("sslmode").as_deref(), Some("require"));
        assert_eq!(
            t.without_params(&["sslmode"]),
            "postgres://kyc@db.internal:5433/ledger"
        );
        let p = PgTarget::parse("postgresql://kyc:pw@h/db").unwrap();
        assert_eq!(p.shown(), "postgresql://kyc@h/db");
        assert_eq!(p.password().unwrap().expose(), "pw");
        let round: LedgerLocation =
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(round, l, "the same ledger without its password");
        assert_eq!(
            LedgerLocation::parse("ledger.db").unwrap(),
            LedgerLocation::File("ledger.db".into())
        );
    }
}
