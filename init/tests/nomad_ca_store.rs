//! A plain-http Nomad client never reads the system CA store (PID 1 builds several per
//! boot, and parsing the bundle cost each tens of ms under TCG); an https one still does.
//! Shown with the real binary and a CA store that holds one broken certificate: reqwest
//! refuses to build a client that would trust it.

use std::process::Command;

/// `nomad-init packs validate` of a missing set against `addr`, with the CA store
/// (SSL_CERT_FILE, SSL_CERT_DIR) pointed at `store`: the client is built first.
fn validate_with_store(addr: &str, store: &std::path::Path) -> String {
    let empty_dir = store.with_extension("d");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nomad-init"))
        .args(["packs", "validate", "/nonexistent/packs.toml"])
        .env_clear()
        .env("NOMAD_ADDR", addr)
        .env("SSL_CERT_FILE", store)
        .env("SSL_CERT_DIR", &empty_dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the set does not exist");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn only_an_https_client_reads_the_system_ca_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("ca-certificates.crt");
    // Valid PEM framing around bytes that are no certificate.
    std::fs::write(
        &store,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    let https = validate_with_store("https://127.0.0.1:4646", &store);
    assert!(
        https.contains("cannot set up the HTTP client"),
        "an https client reads the store: {https}"
    );

    let http = validate_with_store("http://127.0.0.1:4646", &store);
    assert!(
        !http.contains("cannot set up the HTTP client") && http.contains("/nonexistent"),
        "an http client gets as far as the set file: {http}"
    );
}
