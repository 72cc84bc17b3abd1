//! The one list of failover steps (`steps!`): each line names a step kind
//! (its `kind = "…"` in runbooks) and the spec type of its file.
use serde::Deserialize;

use super::{check_primary, dns, exec, fence, notify, promote, rejoin, scale, verify, Step};
use crate::error::Result;

macro_rules! steps {
    ($($variant:ident($ty:ty) = $name:literal,)*) => {
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "kind")]
        pub enum StepKind {
            $(#[serde(rename = $name)] $variant($ty),)*
        }

        impl StepKind {
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The one dispatch: the kind's name and its implementation.
            fn dispatch(&self) -> (&'static str, &dyn Step) {
                match self {
                    $(StepKind::$variant(s) => ($name, s),)*
                }
            }
        }
    };
}

steps! {
    CheckPrimary(check_primary::Spec) = "check-primary",
    FenceMysql(fence::Spec) = "fence-mysql",
    PromoteMysql(promote::Spec) = "promote-mysql",
    RejoinMysql(rejoin::Spec) = "rejoin-mysql",
    DnsSwitch(dns::Spec) = "dns-switch",
    ScaleUp(scale::Spec) = "scale-up",
    Verify(verify::Spec) = "verify",
    Notify(notify::Spec) = "notify",
    Exec(exec::Spec) = "exec",
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        self.dispatch().0
    }

    pub fn step(&self) -> &dyn Step {
        self.dispatch().1
    }

    /// Reads every secret the step needs, before the run touches anything.
    pub fn check_secrets(&self) -> Result<()> {
        for s in self.step().secrets() {
            s.read()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_kind_is_listed_once_and_parses() {
        let mut names = StepKind::NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), StepKind::NAMES.len());
        let k: StepKind = toml::from_str("kind = \"exec\"\nargv = [\"true\"]\n").unwrap();
        assert_eq!(k.name(), "exec");
        assert_eq!(k.step().default_timeout(), Duration::from_secs(300));
    }
}
