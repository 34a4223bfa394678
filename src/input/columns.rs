//! Which input column holds which API field: the header names, their
//! aliases, and `--map FIELD=COLUMN`.

use std::fmt;

use super::InputError;

/// A field kycshare reads from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    IdentityReference,
    Email,
    MobileNumber,
    Vendor,
    Token,
    ApplicantId,
}

impl Field {
    pub const ALL: [Field; 6] = [
        Field::IdentityReference,
        Field::Email,
        Field::MobileNumber,
        Field::Vendor,
        Field::Token,
        Field::ApplicantId,
    ];

    /// The name used in messages, in `--map` and as the default column.
    pub fn name(self) -> &'static str {
        match self {
            Field::IdentityReference => "identityReference",
            Field::Email => "email",
            Field::MobileNumber => "mobileNumber",
            Field::Vendor => "vendor",
            Field::Token => "token",
            Field::ApplicantId => "applicantId",
        }
    }

    /// Column names recognised without `--map`, best first.
    fn default_columns(self) -> &'static [&'static str] {
        match self {
            Field::IdentityReference => &["identityReference"],
            Field::Email => &["email"],
            Field::MobileNumber => &["mobileNumber"],
            Field::Vendor => &["vendor", "provider.vendor"],
            Field::Token => &["token", "provider.token"],
            Field::ApplicantId => &["applicantId"],
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        let s = s.trim();
        Field::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .or(match s {
                "provider.vendor" => Some(Field::Vendor),
                "provider.token" => Some(Field::Token),
                _ => None,
            })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the share token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenMode {
    /// The input carries `token` (a share token minted up front).
    #[default]
    Token,
    /// The input carries Sumsub's `applicantId`; tokens are minted just in time.
    Mint,
}

/// A parsed `--map FIELD=COLUMN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub field: Field,
    pub column: String,
}

impl std::str::FromStr for Mapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (f, c) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected FIELD=COLUMN, e.g. email=Email Address"))?;
        let field = Field::parse(f).ok_or_else(|| {
            format!(
                "`{f}` is not a field; fields are identityReference, email, mobileNumber, vendor, token, applicantId"
            )
        })?;
        let column = c.trim();
        if column.is_empty() {
            return Err(format!("`{s}`: the column name is empty"));
        }
        Ok(Mapping {
            field,
            column: column.to_string(),
        })
    }
}

/// Column index of each field in the input.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    idx: [Option<usize>; 6],
    /// Number of columns in the header.
    pub width: usize,
}

impl Columns {
    /// Resolves the header against the defaults and `--map`. A required
    /// column that is missing is an error naming it and listing the headers
    /// found.
    pub fn resolve(
        headers: &[String],
        maps: &[Mapping],
        mode: TokenMode,
        source: &str,
    ) -> Result<Columns, InputError> {
        let mut cols = Columns {
            idx: [None; 6],
            width: headers.len(),
        };
        let find = |name: &str| -> Option<usize> {
            headers
                .iter()
                .position(|h| h == name)
                .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(name)))
        };
        let mut missing = Vec::new();
        for field in Field::ALL {
            let mapped: Vec<&Mapping> = maps.iter().filter(|m| m.field == field).collect();
            let found = if let Some(m) = mapped.last() {
                match find(&m.column) {
                    Some(i) => Some(i),
                    None => {
                        missing.push(format!("`{}` (mapped to {} by --map)", m.column, field));
                        continue;
                    }
                }
            } else {
                field.default_columns().iter().find_map(|c| find(c))
            };
            cols.idx[field as usize] = found;
        }
        let required: &[Field] = match mode {
            TokenMode::Token => &[
                Field::IdentityReference,
                Field::Email,
                Field::MobileNumber,
                Field::Token,
            ],
            TokenMode::Mint => &[
                Field::IdentityReference,
                Field::Email,
                Field::MobileNumber,
                Field::ApplicantId,
            ],
        };
        for f in required {
            if cols.idx[*f as usize].is_none() && !maps.iter().any(|m| m.field == *f) {
                let alts = f.default_columns().join("` or `");
                missing.push(format!("`{alts}` (for {f})"));
            }
        }
        if !missing.is_empty() {
            // One header cell holding every required name, joined by
            // another separator: the file is not comma-separated.
            if let [only] = headers {
                for sep in [';', '\t', '|'] {
                    let parts: Vec<&str> = only.split(sep).map(str::trim).collect();
                    let all = required.iter().all(|f| {
                        f.default_columns()
                            .iter()
                            .any(|c| parts.iter().any(|p| p.eq_ignore_ascii_case(c)))
                    });
                    if parts.len() > 1 && all {
                        let shown = if sep == '\t' {
                            "tab".to_string()
                        } else {
                            format!("'{sep}'")
                        };
                        missing.insert(0, format!(
                            "all of them, because the file is not comma-separated (its header is one column holding every required name separated by `{}`: add --delimiter {shown})",
                            if sep == '\t' { "\\t".to_string() } else { sep.to_string() }
                        ));
                        break;
                    }
                }
            }
            return Err(InputError::MissingColumns {
                path: source.to_string(),
                missing,
                found: headers.to_vec(),
            });
        }
        Ok(cols)
    }

    pub fn get(&self, f: Field) -> Option<usize> {
        self.idx[f as usize]
    }
}

/// `--delimiter C`: one ASCII character other than a quote or a line
/// break, or `tab`.
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => return Ok(b'\t'),
        _ => {}
    }
    let b = s.as_bytes();
    if b.len() == 1 && b[0].is_ascii() && b[0] != b'"' && b[0] != b'\n' && b[0] != b'\r' {
        Ok(b[0])
    } else {
        Err(format!(
            "`{s}`: the delimiter must be one ASCII character other than a quote or a line break (or `tab`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_aliases_and_maps() {
        let c = Columns::resolve(
            &h(&["id", "Email", "mobileNumber", "provider.token", "x"]),
            &["identityReference=id".parse().unwrap()],
            TokenMode::Token,
            "f",
        )
        .unwrap();
        assert_eq!(c.get(Field::IdentityReference), Some(0));
        assert_eq!(c.get(Field::Email), Some(1));
        assert_eq!(c.get(Field::Token), Some(3));
        assert_eq!(c.get(Field::Vendor), None);
    }

    #[test]
    fn missing_columns_are_named_with_the_headers_found() {
        let e = Columns::resolve(&h(&["id", "mail"]), &[], TokenMode::Token, "export.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("identityReference"), "{e}");
        assert!(e.contains("`email`"), "{e}");
        assert!(e.contains("id, mail"), "{e}");
    }

    #[test]
    fn bad_map_values_are_refused() {
        assert!("nope=x".parse::<Mapping>().is_err());
        assert!("email".parse::<Mapping>().is_err());
        assert!("email=".parse::<Mapping>().is_err());
        assert_eq!(
            "provider.token=tok".parse::<Mapping>().unwrap().field,
            Field::Token
        );
    }
}
