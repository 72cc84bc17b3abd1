//! A signed catalog: every manifest and verification record gets a detached
//! Ed25519 signature (`<object>.sig`) from the backup host's key; the public
//! key is published in the store under `keys/`. Each manifest also carries
//! the SHA-256 of the job's previous manifest, so a deleted backup leaves a
//! visible gap (prune records signed tombstones for what it removes).
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A detached signature object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detached {
    pub algorithm: String,
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
}

pub struct Signer {
    key: SigningKey,
    pub key_id: String,
}

/// Short, stable name of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(public.as_bytes()))[..16].to_owned()
}

pub fn parse_public(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

impl Signer {
    fn from_key(key: SigningKey) -> Signer {
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id }
    }

    /// Reads a key file written by `generate` (it must be private: 0600).
    pub fn load(path: &Path) -> Result<Signer> {
        let ctx = || format!("signing key file {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| Error::io(ctx(), e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Usage(format!(
                "signing key file {} is readable by group or others; chmod 600 it first",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(ctx(), e))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        let seed: [u8; 32] = hex::decode(line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "signing key file {} does not hold a cexdr Ed25519 key",
                    path.display()
                ))
            })?;
        Ok(Signer::from_key(SigningKey::from_bytes(&seed)))
    }

    /// Creates a new key file (never overwriting one).
    pub fn generate(path: &Path) -> Result<Signer> {
        let seed: [u8; 32] = rand::random();
        let s = Signer::from_key(SigningKey::from_bytes(&seed));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("creating signing key file {}", path.display()), e))?;
        writeln!(
            f,
            "# cexdr Ed25519 signing key {}; public key {}",
            s.key_id,
            s.public_hex()
        )
        .and_then(|_| writeln!(f, "{}", hex::encode(seed)))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(s)
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    pub fn sign(&self, data: &[u8]) -> Detached {
        Detached {
            algorithm: "ed25519".into(),
            key_id: self.key_id.clone(),
            public_key: self.public_hex(),
            signature: hex::encode(self.key.sign(data).to_bytes()),
        }
    }
}

/// What a signature check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum SigStatus {
    Ok {
        key_id: String,
    },
    Unsigned,
    UnknownKey {
        key_id: String,
    },
    Altered {
        key_id: String,
    },
    /// The object could not be read or parsed: nothing to check.
    Unreadable,
}

impl SigStatus {
    pub fn is_ok(&self) -> bool {
        matches!(self, SigStatus::Ok { .. })
    }
    pub fn word(&self) -> &'static str {
        match self {
            SigStatus::Ok { .. } => "ok",
            SigStatus::Unsigned => "unsigned",
            SigStatus::UnknownKey { .. } => "unknown-key",
            SigStatus::Altered { .. } => "altered",
            SigStatus::Unreadable => "unreadable",
        }
    }
}

/// Checks `data` against its detached signature with the trusted keys only
/// (the key inside the signature object is not trusted by itself).
pub fn check(
    data: &[u8],
    sig: Option<&Detached>,
    trusted: &BTreeMap<String, VerifyingKey>,
) -> SigStatus {
    let Some(sig) = sig else {
        return SigStatus::Unsigned;
    };
    let Some(key) = trusted.get(&sig.key_id) else {
        return SigStatus::UnknownKey {
            key_id: sig.key_id.clone(),
        };
    };
    let ok = hex::decode(&sig.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| key.verify(data, &Signature::from_bytes(&b)).is_ok())
        .unwrap_or(false);
    if ok {
        SigStatus::Ok {
            key_id: sig.key_id.clone(),
        }
    } else {
        SigStatus::Altered {
            key_id: sig.key_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_check_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let s = Signer::generate(&path).unwrap();
        let s2 = Signer::load(&path).unwrap();
        assert_eq!(s.public_hex(), s2.public_hex());
        assert!(Signer::generate(&path).is_err(), "never overwrites a key");
        let sig = s.sign(b"manifest");
        let mut trusted = BTreeMap::new();
        assert_eq!(
            check(b"manifest", Some(&sig), &trusted),
            SigStatus::UnknownKey {
                key_id: s.key_id.clone()
            }
        );
        trusted.insert(s.key_id.clone(), parse_public(&s.public_hex()).unwrap());
        assert!(check(b"manifest", Some(&sig), &trusted).is_ok());
        assert_eq!(check(b"manifesT", Some(&sig), &trusted).word(), "altered");
        assert_eq!(check(b"manifest", None, &trusted), SigStatus::Unsigned);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Signer::load(&path).is_err());
    }
}
