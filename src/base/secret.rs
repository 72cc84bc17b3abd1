//! Where a secret comes from: an environment variable or a file, never a
//! config file itself, argv or a URL.
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a password comes from: never the policy file itself, never argv.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Secret {
    #[default]
    None,
    Env(String),
    File(PathBuf),
}

impl Secret {
    /// Reads the secret. Errors name the variable or file, never the value.
    pub fn read(&self) -> Result<Option<String>> {
        match self {
            Secret::None => Ok(None),
            Secret::Env(var) => match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(Error::Usage(format!("password variable {var} is not set"))),
            },
            Secret::File(path) => {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(path)
                    .map_err(|e| Error::io(format!("password file {}", path.display()), e))?;
                if meta.permissions().mode() & 0o004 != 0 {
                    return Err(Error::Usage(format!(
                        "password file {} is world-readable; chmod o-r it first",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::io(format!("password file {}", path.display()), e))?;
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
        }
    }
}
