//! Notifications: Slack incoming webhooks, generic JSON webhooks (SMS
//! gateways are webhooks) and email over SMTP. Reusable by any command:
//! `deliver()` never fails its caller — a failed notification is logged and
//! returned as a `Delivery` for the caller to record.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::base::{Dur, Secret};
use crate::error::{Error, Result};

/// One `[[channel]]` table; `kind` picks the variant, and a key that does
/// not belong to the kind is an error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ChannelSpec {
    Slack(SlackSpec),
    Webhook(WebhookSpec),
    Email(EmailSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlackSpec {
    pub name: String,
    /// The webhook URL is a secret (it carries its own token): env or file only.
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<PathBuf>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookSpec {
    pub name: String,
    pub url: String,
    /// Plain headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header name → environment variable holding its value (API tokens).
    #[serde(default)]
    pub secret_headers: BTreeMap<String, String>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587); refuses servers without it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on localhost.
    Plain,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmailSpec {
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Option<Dur>,
}

impl ChannelSpec {
    pub fn name(&self) -> &str {
        match self {
            ChannelSpec::Slack(s) => &s.name,
            ChannelSpec::Webhook(s) => &s.name,
            ChannelSpec::Email(s) => &s.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ChannelSpec::Slack(_) => "slack",
            ChannelSpec::Webhook(_) => "webhook",
            ChannelSpec::Email(_) => "email",
        }
    }

    /// Checks that need no I/O; `Err((key, message))`.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        match self {
            ChannelSpec::Slack(s) => {
                if s.webhook_url_env.is_some() == s.webhook_url_file.is_some() {
                    return Err((
                        "webhook-url-env",
                        "set exactly one of webhook-url-env and webhook-url-file (the URL is a secret)"
                            .into(),
                    ));
                }
            }
            ChannelSpec::Webhook(w) => {
                if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                    return Err(("url", format!("{:?} is not an http(s) URL", w.url)));
                }
                for h in w.headers.keys().chain(w.secret_headers.keys()) {
                    if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err(("headers", format!("{h:?} is not a valid header name")));
                    }
                }
            }
            ChannelSpec::Email(e) => {
                if e.to.is_empty() {
                    return Err(("to", "name at least one recipient".into()));
                }
                if e.password_env.is_some() && e.password_file.is_some() {
                    return Err((
                        "password-env",
                        "set password-env or password-file, not both".into(),
                    ));
                }
                if (e.password_env.is_some() || e.password_file.is_some()) && e.username.is_none() {
                    return Err(("username", "a password needs a username".into()));
                }
                for a in e.to.iter().chain(std::iter::once(&e.from)) {
                    if a.parse::<lettre::message::Mailbox>().is_err() {
                        return Err(("to", format!("{a:?} is not an email address")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads this channel's secrets now, so that a missing variable is found
    /// before a failover starts rather than when the first message is due.
    pub fn check_secrets(&self) -> Result<()> {
        match self {
            ChannelSpec::Slack(s) => slack_url(s).map(|_| ()),
            ChannelSpec::Webhook(w) => {
                for var in w.secret_headers.values() {
                    Secret::Env(var.clone()).read()?;
                }
                Ok(())
            }
            ChannelSpec::Email(e) => email_password(e).map(|_| ()),
        }
    }
}

fn slack_url(s: &SlackSpec) -> Result<String> {
    let secret = match (&s.webhook_url_env, &s.webhook_url_file) {
        (Some(v), _) => Secret::Env(v.clone()),
        (_, Some(f)) => Secret::File(f.clone()),
        _ => Secret::None,
    };
    secret.read()?.ok_or_else(|| Error::Failover {
        what: format!("channel {}", s.name),
        msg: "no webhook URL configured".into(),
    })
}

fn email_password(e: &EmailSpec) -> Result<Option<String>> {
    match (&e.password_env, &e.password_file) {
        (Some(v), _) => Secret::Env(v.clone()).read(),
        (_, Some(f)) => Secret::File(f.clone()).read(),
        _ => Ok(None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// Stable for one logical notification: receivers can drop duplicates
    /// by it (sent as `Idempotency-Key` and as the email Message-ID).
    pub id: String,
    pub subject: String,
    pub text: String,
    pub severity: Severity,
    pub fields: BTreeMap<String, String>,
}

/// The outcome of one message on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Parses `[[channel]]` tables (of a runbook or a policy): strict, names
/// unique, errors naming file, line and key.
pub fn parse_channels(
    file: &std::path::Path,
    text: &str,
    tables: Vec<toml::Table>,
) -> Result<Vec<ChannelSpec>> {
    use crate::base::toml_loc::{key_in_message, Spans};
    let spans = Spans::new(text);
    let locate = |i: usize, key: Option<&str>| spans.in_array("channel", i, key);
    let mut channels: Vec<ChannelSpec> = Vec::new();
    for (i, t) in tables.into_iter().enumerate() {
        let c: ChannelSpec = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| {
                let msg = e.message().replace('\n', " ");
                let key = key_in_message(&msg);
                Error::config(
                    file,
                    locate(i, key.as_deref()),
                    key.as_deref(),
                    format!("[[channel]] #{}: {msg}", i + 1),
                )
            })?;
        if let Err((key, msg)) = c.validate() {
            return Err(Error::config(
                file,
                locate(i, Some(key)),
                Some(key),
                format!("channel {:?}: key `{key}`: {msg}", c.name()),
            ));
        }
        if channels.iter().any(|x| x.name() == c.name()) {
            return Err(Error::config(
                file,
                locate(i, Some("name")),
                Some("name"),
                format!("channel {:?}: another channel has the same name", c.name()),
            ));
        }
        channels.push(c);
    }
    Ok(channels)
}

fn http_client(timeout: Option<Dur>) -> Result<reqwest::Client> {
    crate::base::http::client(
        timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        false,
    )
    .map_err(|e| Error::Failover {
        what: "http client".into(),
        msg: e.to_string(),
    })
}

/// Error text of a reqwest error without the URL (a Slack URL is a secret).
fn http_error(e: reqwest::Error) -> String {
    crate::error::one_line(&e.without_url())
}

/// Sends one message; errors name the channel, never a secret.
pub async fn send(channel: &ChannelSpec, msg: &Message) -> Result<()> {
    let fail = |m: String| Error::Failover {
        what: format!("channel {} ({})", channel.name(), channel.kind()),
        msg: m,
    };
    match channel {
        ChannelSpec::Slack(s) => {
            let url = slack_url(s)?;
            let mut text = format!("*{}*\n{}", msg.subject, msg.text);
            for (k, v) in &msg.fields {
                text.push_str(&format!("\n• {k}: {v}"));
            }
            let resp = http_client(s.timeout)?
                .post(url)
                .json(&serde_json::json!({ "text": text }))
                .send()
                .await
                .map_err(|e| fail(http_error(e)))?;
            if !resp.status().is_success() {
                return Err(fail(format!("webhook answered HTTP {}", resp.status())));
            }
            Ok(())
        }
        ChannelSpec::Webhook(w) => {
            let mut req = http_client(w.timeout)?
                .post(&w.url)
                .header("Idempotency-Key", &msg.id)
                .json(&serde_json::json!({
                    "id": msg.id,
                    "subject": msg.subject,
                    "text": msg.text,
                    "severity": msg.severity,
                    "fields": msg.fields,
                    "sent_at": Utc::now(),
                }));
            for (k, v) in &w.headers {
                req = req.header(k, v);
            }
            for (k, var) in &w.secret_headers {
                let v = Secret::Env(var.clone()).read()?.unwrap_or_default();
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| fail(http_error(e)))?;
            if !resp.status().is_success() {
                return Err(fail(format!("webhook answered HTTP {}", resp.status())));
            }
            Ok(())
        }
        ChannelSpec::Email(e) => send_email(e, msg)
            .await
            .map_err(|err| fail(err.to_string())),
    }
}

/// Why an email was not sent; the text is what a delivery records.
#[derive(Debug, thiserror::Error)]
enum EmailError {
    #[error("from: {0}")]
    From(#[source] lettre::address::AddressError),
    #[error("to {to}: {source}")]
    To {
        to: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("{0}")]
    Message(#[source] lettre::error::Error),
    #[error("{0}")]
    Relay(#[source] lettre::transport::smtp::Error),
    #[error("{0}")]
    Password(#[source] Box<Error>),
    #[error("{}", crate::error::one_line(.0))]
    Send(#[source] lettre::transport::smtp::Error),
}

async fn send_email(e: &EmailSpec, msg: &Message) -> std::result::Result<(), EmailError> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    crate::base::http::ensure_crypto_provider();
    let mut body = msg.text.clone();
    body.push('\n');
    for (k, v) in &msg.fields {
        body.push_str(&format!("\n{k}: {v}"));
    }
    let mut b = lettre::Message::builder()
        .from(e.from.parse().map_err(EmailError::From)?)
        .subject(&msg.subject)
        .message_id(Some(format!("<{}@cexdr>", msg.id)))
        .header(ContentType::TEXT_PLAIN);
    for to in &e.to {
        b = b.to(to.parse().map_err(|source| EmailError::To {
            to: to.clone(),
            source,
        })?);
    }
    let email = b.body(body).map_err(EmailError::Message)?;
    let builder = match e.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&e.host)
            .map_err(EmailError::Relay)?
            .port(e.port.unwrap_or(587)),
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&e.host)
            .map_err(EmailError::Relay)?
            .port(e.port.unwrap_or(465)),
        SmtpTls::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.host)
            .port(e.port.unwrap_or(25)),
    };
    let mut builder = builder.timeout(Some(
        e.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(15)),
    ));
    if let (Some(user), Some(pass)) = (
        &e.username,
        email_password(e).map_err(|err| EmailError::Password(Box::new(err)))?,
    ) {
        builder = builder.credentials(Credentials::new(user.clone(), pass));
    }
    builder
        .build()
        .send(email)
        .await
        .map(|_| ())
        .map_err(EmailError::Send)
}

/// Sends and never fails: a failure is logged and returned in the `Delivery`.
pub async fn deliver(channel: &ChannelSpec, msg: &Message) -> Delivery {
    let result = send(channel, msg).await;
    if let Err(e) = &result {
        tracing::warn!(channel = channel.name(), error = %crate::error::one_line(e), "notification failed");
    }
    Delivery {
        channel: channel.name().to_owned(),
        ok: result.is_ok(),
        error: result.err().map(|e| crate::error::one_line(&e)),
        at: Utc::now(),
    }
}
