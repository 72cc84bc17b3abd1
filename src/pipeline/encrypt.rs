//! Client-side encryption with age: a pipeline stage after compression.
//! The backup host holds only public recipients; restore and verify take an
//! identity file (`--identity`) or the passphrase. The manifest records the
//! recipients, and its SHA-256 is of the encrypted (stored) bytes.
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::stream::{self as pipeline, ChannelWriter};
use crate::base::ByteStream;
use crate::base::Secret;
use crate::error::{Error, Result};

/// age encryption: public recipients only (the backup host never holds a
/// private key), or one passphrase for small setups.
#[derive(Debug, Clone, PartialEq)]
pub enum EncryptionSpec {
    Recipients(Vec<String>),
    Passphrase(Secret),
}

/// What the manifest says about encryption.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EncryptionInfo {
    /// Always "age" (age-encryption.org/v1).
    pub scheme: String,
    /// Public keys the artifact is encrypted to (empty for a passphrase).
    pub recipients: Vec<String>,
    pub passphrase: bool,
}

/// What `encrypt` needs: public keys, or a passphrase read from its secret.
#[derive(Clone)]
pub enum Recipients {
    Keys(Vec<age::x25519::Recipient>),
    Passphrase(SecretString),
}

impl Recipients {
    pub fn from_spec(spec: &EncryptionSpec) -> Result<(Recipients, EncryptionInfo)> {
        match spec {
            EncryptionSpec::Recipients(keys) => {
                let parsed = keys
                    .iter()
                    .map(|k| {
                        age::x25519::Recipient::from_str(k)
                            .map_err(|e| Error::Usage(format!("age recipient {k:?}: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((
                    Recipients::Keys(parsed),
                    EncryptionInfo {
                        scheme: "age".into(),
                        recipients: keys.clone(),
                        passphrase: false,
                    },
                ))
            }
            EncryptionSpec::Passphrase(secret) => {
                let pass = secret
                    .read()?
                    .ok_or_else(|| Error::Usage("encryption passphrase is empty".into()))?;
                Ok((
                    Recipients::Passphrase(SecretString::from(pass)),
                    EncryptionInfo {
                        scheme: "age".into(),
                        recipients: vec![],
                        passphrase: true,
                    },
                ))
            }
        }
    }
}

/// Private keys or a passphrase for reading encrypted backups.
#[derive(Clone)]
pub enum Identities {
    Keys(Arc<Vec<age::x25519::Identity>>),
    Passphrase(SecretString),
}

impl Identities {
    /// Reads an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments).
    /// It must not be readable by others.
    pub fn from_file(path: &Path) -> Result<Identities> {
        use std::os::unix::fs::PermissionsExt;
        let ctx = || format!("identity file {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| Error::io(ctx(), e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Usage(format!(
                "identity file {} is readable by group or others; chmod 600 it first",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(ctx(), e))?;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Never echo the line: it is a private key.
            let key = age::x25519::Identity::from_str(line).map_err(|_| {
                Error::Usage(format!(
                    "identity file {} line {}: not an age secret key",
                    path.display(),
                    n + 1
                ))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(Error::Usage(format!(
                "identity file {} holds no key",
                path.display()
            )));
        }
        Ok(Identities::Keys(Arc::new(keys)))
    }

    pub fn from_passphrase(secret: &Secret) -> Result<Identities> {
        let pass = secret
            .read()?
            .ok_or_else(|| Error::Usage("passphrase is empty".into()))?;
        Ok(Identities::Passphrase(SecretString::from(pass)))
    }
}

fn age_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("age: {e}"))
}

pub use crate::error::DecryptError;

fn decrypt_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        DecryptError::new(format!("age: {e}")),
    )
}

fn encrypt_to<W: Write>(r: &mut impl Read, out: W, recipients: &Recipients) -> io::Result<W> {
    let enc = match recipients {
        Recipients::Keys(keys) => {
            age::Encryptor::with_recipients(keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(age_err)?
        }
        Recipients::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
    };
    let mut w = enc.wrap_output(out)?;
    io::copy(r, &mut w)?;
    w.finish()
}

/// The encryption stage: a blocking thread runs age's STREAM over 64 KiB chunks.
pub fn encrypt(input: ByteStream, recipients: Recipients) -> ByteStream {
    let (writer, out) = ChannelWriter::new(8, 256 << 10);
    let failer = writer.failer();
    tokio::task::spawn_blocking(move || {
        let mut r = pipeline::blocking_reader(input);
        match encrypt_to(&mut r, writer, &recipients) {
            Ok(w) => {
                let _ = w.finish();
            }
            Err(e) => failer.fail(e),
        }
    });
    out
}

/// The decryption stage for restore and verify.
pub fn decrypt(input: ByteStream, identities: Identities) -> ByteStream {
    let (mut writer, out) = ChannelWriter::new(8, 256 << 10);
    let failer = writer.failer();
    tokio::task::spawn_blocking(move || {
        let r = pipeline::blocking_reader(input);
        let res = (|| -> io::Result<()> {
            let dec = age::Decryptor::new(r).map_err(decrypt_err)?;
            let mut reader = match &identities {
                Identities::Keys(keys) => dec.decrypt(keys.iter().map(|k| k as &dyn age::Identity)),
                Identities::Passphrase(p) => {
                    let id = age::scrypt::Identity::new(p.clone());
                    dec.decrypt(std::iter::once(&id as &dyn age::Identity))
                }
            }
            .map_err(decrypt_err)?;
            io::copy(&mut reader, &mut writer)?;
            Ok(())
        })();
        match res {
            Ok(()) => {
                let _ = writer.finish();
            }
            Err(e) => failer.fail(e),
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_with_keys_and_passphrase() {
        let id = age::x25519::Identity::generate();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let enc = pipeline::collect(encrypt(
            pipeline::from_bytes(data.clone()),
            Recipients::Keys(vec![id.to_public()]),
        ))
        .await
        .unwrap();
        assert!(enc.starts_with(b"age-encryption.org/v1"));
        assert!(!enc.windows(64).any(|w| w == &data[1000..1064]));
        let dec = pipeline::collect(decrypt(
            pipeline::from_bytes(enc.clone()),
            Identities::Keys(Arc::new(vec![id])),
        ))
        .await
        .unwrap();
        assert_eq!(dec, data);
        // The wrong key is an error, not garbage.
        let other = age::x25519::Identity::generate();
        assert!(pipeline::collect(decrypt(
            pipeline::from_bytes(enc),
            Identities::Keys(Arc::new(vec![other]))
        ))
        .await
        .is_err());

        let pass = SecretString::from("correct horse".to_owned());
        let enc = pipeline::collect(encrypt(
            pipeline::from_bytes(data.clone()),
            Recipients::Passphrase(pass.clone()),
        ))
        .await
        .unwrap();
        let dec = pipeline::collect(decrypt(
            pipeline::from_bytes(enc),
            Identities::Passphrase(pass),
        ))
        .await
        .unwrap();
        assert_eq!(dec, data);
    }
}
