//! `kycshare::request::mint::credentials`: SUMSUB_APP_TOKEN with SUMSUB_SECRET_KEY
//! or a secret file. One test in its own binary (its own process), because
//! it changes the environment.

use kycshare::credentials::CredentialError;
use kycshare::request::mint::credentials;

#[test]
fn sumsub_credentials_from_the_environment_or_a_file() {
    std::env::remove_var("SUMSUB_APP_TOKEN");
    std::env::remove_var("SUMSUB_SECRET_KEY");
    assert!(credentials(None).unwrap().is_none());

    std::env::set_var("SUMSUB_SECRET_KEY", "env-secret");
    let err = credentials(None).unwrap_err();
    assert!(matches!(
        err,
        CredentialError::Missing {
            var: "SUMSUB_APP_TOKEN",
            ..
        }
    ));

    std::env::set_var("SUMSUB_APP_TOKEN", " sbx:app \n");
    let c = credentials(None).unwrap().unwrap();
    assert_eq!(c.app_token, "sbx:app");
    assert_eq!(c.secret_key.expose(), "env-secret");
    assert!(!format!("{c:?}").contains("env-secret"));

    // The file wins over the environment.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "file-secret\n").unwrap();
    let c = credentials(Some(&file)).unwrap().unwrap();
    assert_eq!(c.secret_key.expose(), "file-secret");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    assert!(matches!(
        credentials(Some(&empty)).unwrap_err(),
        CredentialError::EmptyFile { .. }
    ));
    let missing = dir.path().join("missing");
    assert!(matches!(
        credentials(Some(&missing)).unwrap_err(),
        CredentialError::File { .. }
    ));

    std::env::remove_var("SUMSUB_SECRET_KEY");
    let err = credentials(None).unwrap_err();
    assert!(matches!(
        err,
        CredentialError::Missing {
            var: "SUMSUB_SECRET_KEY",
            ..
        }
    ));
    assert!(err.to_string().contains("--sumsub-secret-file"), "{err}");
}
