//! What every command that reads the catalog shares: the decryption flags
//! (`--identity`, `--passphrase-env`), opening the policy's catalog with
//! them, and a one-shot job run's environment.
use std::path::PathBuf;

use crate::backup::catalog::Catalog;
use crate::backup::metrics;
use crate::backup::policy::Policy;
use crate::cli::progress;
use crate::error::Result;
use crate::store;

pub(crate) async fn open_catalog(policy: &Policy, cli: &CliKeys) -> Result<Catalog> {
    open_catalog_as(policy, cli, false).await
}

/// With `sign`, the catalog signs what it writes (needs the private key).
pub(crate) async fn open_catalog_as(policy: &Policy, cli: &CliKeys, sign: bool) -> Result<Catalog> {
    let signer = match (&policy.signing_key_file, sign) {
        (Some(f), true) => Some(std::sync::Arc::new(
            crate::backup::catalog::signing::Signer::load(f)?,
        )),
        _ => None,
    };
    let ids = cli.identities()?;
    Ok(Catalog::new(store::build(&policy.store).await?)
        .with_identities(ids)
        .with_signer(signer)
        .with_progress(progress::current()))
}

/// The decryption inputs of the command line.
pub struct CliKeys {
    pub identity: Option<PathBuf>,
    pub passphrase_env: Option<String>,
}

impl CliKeys {
    pub(crate) fn identities(&self) -> Result<Option<crate::pipeline::encrypt::Identities>> {
        Ok(match (&self.identity, &self.passphrase_env) {
            (Some(f), _) => Some(crate::pipeline::encrypt::Identities::from_file(f)?),
            (None, Some(v)) => Some(crate::pipeline::encrypt::Identities::from_passphrase(
                &crate::backup::policy::Secret::Env(v.clone()),
            )?),
            (None, None) => None,
        })
    }

    /// What a one-shot job run needs: the store, the keys, metrics and the
    /// policy's notification channels (delivered before the process ends).
    pub(crate) async fn job_env(
        &self,
        policy: &Policy,
        metrics: Option<metrics::Metrics>,
    ) -> Result<crate::backup::job::JobEnv> {
        let metrics = metrics.unwrap_or_default();
        let notifier = crate::backup::notifier::Notifier::for_policy(policy, Some(metrics.clone()));
        Ok(crate::backup::job::JobEnv {
            policy: std::sync::Arc::new(policy.clone()),
            store: store::build(&policy.store).await?,
            metrics,
            sinks: crate::backup::job::Sinks {
                sinks: vec![std::sync::Arc::new(notifier)],
                wait: true,
            },
            clock: std::sync::Arc::new(crate::backup::job::SystemClock),
            lease_ttl: crate::backup::lease::DEFAULT_TTL,
            prune: false,
            identities: self.identities()?,
            progress: progress::current(),
        })
    }
    pub(crate) fn none() -> Self {
        CliKeys {
            identity: None,
            passphrase_env: None,
        }
    }
}
