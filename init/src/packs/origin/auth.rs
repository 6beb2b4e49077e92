//! Credentials for an origin, read at fetch time from a file or an environment variable.

use std::fmt;

use crate::packs::model::{Auth, AuthScheme, SecretSource};

/// Bytes a secret file may hold.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A secret value. Its `Debug` prints `***` so it never reaches logs or error chains.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for building the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What goes into the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// Reads the secret named by `auth` and builds the credentials. Error messages name the
/// file or variable, never the content.
pub fn load(auth: &Auth) -> Result<Credentials, String> {
    let secret = read_secret(&auth.secret)?;
    match &auth.scheme {
        AuthScheme::Bearer => Ok(Credentials::Bearer(secret)),
        AuthScheme::Basic {
            username: Some(username),
        } => Ok(Credentials::Basic {
            username: username.clone(),
            password: secret,
        }),
        AuthScheme::Basic { username: None } => match secret.expose().split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials::Basic {
                username: user.to_string(),
                password: Secret::new(password.to_string()),
            }),
            _ => Err(format!(
                "basic auth without a username needs the secret in {} to be `user:password`",
                describe(&auth.secret)
            )),
        },
    }
}

/// "file /x" or "environment variable X", for messages.
pub fn describe(source: &SecretSource) -> String {
    match source {
        SecretSource::File(path) => format!("file {}", path.display()),
        SecretSource::Env(var) => format!("environment variable {var}"),
    }
}

fn read_secret(source: &SecretSource) -> Result<Secret, String> {
    let raw = match source {
        // A token or password, never megabytes; a FIFO or device is refused without blocking.
        SecretSource::File(path) => match crate::fsutil::read_bounded(path, MAX_SECRET_BYTES) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| format!("secret file {} is not UTF-8", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("secret file {} does not exist", path.display()))
            }
            // The io::Error text holds no content, only the reason.
            Err(e) => return Err(format!("cannot read secret file {}: {e}", path.display())),
        },
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(format!("environment variable {var} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("environment variable {var} is not UTF-8"))
            }
        },
    };
    let value = raw.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("secret {} is empty", describe(source)));
    }
    Ok(Secret::new(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret() {
        let c = Credentials::Basic {
            username: "bob".into(),
            password: Secret::new("pa55".into()),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("pa55") && shown.contains("***") && shown.contains("bob"));
    }

    #[test]
    fn file_secret_trimmed_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "user:pw:with:colons\n").unwrap();
        let auth = Auth {
            scheme: AuthScheme::Basic { username: None },
            secret: SecretSource::File(path.clone()),
        };
        match load(&auth).unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "user");
                assert_eq!(password.expose(), "pw:with:colons");
            }
            other => panic!("unexpected {other:?}"),
        }
        std::fs::write(&path, "\n").unwrap();
        let err = load(&auth).unwrap_err();
        assert!(err.contains("is empty") && err.contains(&path.display().to_string()));
        std::fs::write(&path, "nocolon").unwrap();
        let err = load(&auth).unwrap_err();
        assert!(
            err.contains("user:password") && !err.contains("nocolon"),
            "{err}"
        );
    }

    #[test]
    fn missing_sources_named() {
        let err =
            read_secret(&SecretSource::File("/nonexistent/nomados-secret".into())).unwrap_err();
        assert!(err.contains("/nonexistent/nomados-secret"), "{err}");
        let err =
            read_secret(&SecretSource::Env("NOMADOS_TEST_SURELY_UNSET_VAR".into())).unwrap_err();
        assert!(
            err.contains("NOMADOS_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
    }
}
