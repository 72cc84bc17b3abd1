//! The one HTTP client setup (webhooks, Slack, health checks, Kubernetes).
use std::time::Duration;

/// Both TLS stacks (ring via reqwest/lettre, aws-lc via the AWS SDK) are in
/// the binary, so rustls cannot pick a default on its own.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client with a whole-request timeout (and the same connect timeout when
/// `connect` is set) and cexdr's user agent.
pub fn client(timeout: Duration, connect: bool) -> Result<reqwest::Client, reqwest::Error> {
    ensure_crypto_provider();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("cexdr/", env!("CARGO_PKG_VERSION")));
    if connect {
        b = b.connect_timeout(timeout);
    }
    b.build()
}
