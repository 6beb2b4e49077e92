//! Errors of one API call. They name the request (method and path, or the whole URL when
//! the connection itself failed) and never contain the token: it only travels in a header.

use reqwest::{Method, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path}: Nomad answered {status}: {body}{}", hint(*status))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    /// No HTTP answer: connection refused, TLS handshake failed, timed out...
    #[error("{method} {url}: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
        /// The TLS handshake failed (certificate not trusted or for another name, or no
        /// TLS on the other side): waiting will not fix it.
        tls: bool,
    },
    #[error("{method} {path}: the response is larger than {limit} bytes; refusing to read it")]
    TooLarge {
        method: Method,
        path: String,
        limit: usize,
    },
    #[error("{method} {path}: unexpected response: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
    #[error("invalid Nomad address `{0}`: expected http://host:port or https://host:port")]
    Address(String),
    /// The client could not be set up: a token, CA or certificate file is unusable.
    #[error("{0}")]
    Setup(String),
}

fn hint(status: StatusCode) -> &'static str {
    if status == StatusCode::FORBIDDEN {
        " (permission denied: the ACL token is missing, unknown or lacks this permission; \
         set NOMAD_TOKEN, --token or the token file)"
    } else {
        ""
    }
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the connection failed in the TLS handshake (wrong CA, wrong name, an
    /// agent without TLS): a setup mistake to report loudly, not a start-up delay.
    pub fn is_tls_failure(&self) -> bool {
        matches!(self, ApiError::Transport { tls: true, .. })
    }

    /// The plain-text body Nomad answered with, if it answered with an error status.
    pub fn body(&self) -> Option<&str> {
        match self {
            ApiError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// True when Nomad refused a register because the job's modify index moved
    /// (another writer got there first).
    pub fn is_index_conflict(&self) -> bool {
        self.body()
            .is_some_and(|b| b.contains("Enforcing job modify index"))
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

/// A transport error as one line: reqwest's own words and every cause below them, plus a
/// hint for the mistakes people make with TLS. The URL is left out (the caller names it).
/// The flag says whether it was one of those TLS mistakes.
pub(crate) fn describe(
    e: &reqwest::Error,
    timeout: std::time::Duration,
    https: bool,
) -> (String, bool) {
    if e.is_timeout() {
        return (
            format!("no answer within {} s", timeout.as_secs_f64()),
            false,
        );
    }
    let mut parts = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let top = e.to_string();
    // reqwest's top line repeats the URL: "error sending request for url (...)".
    parts.push(match top.find(" for url (") {
        Some(i) => top[..i].to_string(),
        None => top,
    });
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        source = s.source();
    }
    let mut message = parts.join(": ");
    let lower = message.to_ascii_lowercase();
    let mut tls = true;
    if https && (lower.contains("certificate") || lower.contains("unknownissuer")) {
        message.push_str(
            " (the server's TLS certificate is not trusted or does not match: check the CA \
             file (NOMAD_CACERT / ca_file) and the TLS server name)",
        );
    } else if https && (lower.contains("corrupt message") || lower.contains("invalidcontenttype")) {
        message.push_str(" (the server does not speak TLS: does it serve plain http?)");
    } else if !https && lower.contains("invalid http version") {
        message.push_str(" (the server does not speak plain HTTP: does it serve https?)");
    } else {
        tls = false;
    }
    (message, tls)
}
