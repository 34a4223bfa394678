//! Where credentials come from: the environment or a secret file, never a
//! plain command-line value (it would land in shell history and `ps`).

use std::path::Path;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{var} is not set: export {var}=…{hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("cannot read the secret file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("the secret file {path} is empty")]
    EmptyFile { path: String },
    #[error("{var} is set but empty: export {var}=… with the value (an empty `export {var}=` in a script or unit file?)")]
    Empty { var: &'static str },
}

/// Banxa's API key and secret.
#[derive(Debug, Clone)]
pub struct BanxaCredentials {
    pub api_key: String,
    pub api_secret: Secret,
}

fn env_nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a secret from `file` if given, else from the environment `var`.
pub fn secret_from(
    file: Option<&Path>,
    var: &'static str,
) -> Result<Option<Secret>, CredentialError> {
    if let Some(path) = file {
        let s = Secret::from_file(path).map_err(|e| CredentialError::File {
            path: path.display().to_string(),
            reason: crate::model::describe_io(&e),
        })?;
        if s.is_empty() {
            return Err(CredentialError::EmptyFile {
                path: path.display().to_string(),
            });
        }
        return Ok(Some(s));
    }
    if std::env::var_os(var).is_some() && env_nonempty(var).is_none() {
        return Err(CredentialError::Empty { var });
    }
    Ok(env_nonempty(var).map(|v| Secret::new(v.trim())))
}

/// `BANXA_API_KEY` plus `BANXA_API_SECRET` or `--api-secret-file`.
/// `Ok(None)` when neither key nor secret is configured.
pub fn banxa(secret_file: Option<&Path>) -> Result<Option<BanxaCredentials>, CredentialError> {
    if std::env::var_os("BANXA_API_KEY").is_some() && env_nonempty("BANXA_API_KEY").is_none() {
        return Err(CredentialError::Empty {
            var: "BANXA_API_KEY",
        });
    }
    let key = env_nonempty("BANXA_API_KEY");
    let secret = secret_from(secret_file, "BANXA_API_SECRET")?;
    match (key, secret) {
        (None, None) => Ok(None),
        (Some(k), Some(s)) => Ok(Some(BanxaCredentials {
            api_key: k.trim().to_string(),
            api_secret: s,
        })),
        (None, Some(_)) => Err(CredentialError::Missing {
            var: "BANXA_API_KEY",
            hint: "",
        }),
        (Some(_), None) => Err(CredentialError::Missing {
            var: "BANXA_API_SECRET",
            hint: " (or put the secret in a file and pass --api-secret-file FILE)",
        }),
    }
}
