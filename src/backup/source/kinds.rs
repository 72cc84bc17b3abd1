//! The one list of sources (`sources!`): which spec, source and restore
//! side each kind of the catalog has, and what is derived from the list
//! (`SourceSpec`, `PolicyKeys`, `build`, `Kind::ops` and the kind's policy
//! keys). The catalog's `Kind` names the kinds; each line here names one.
use super::files::{self, FilesSpec};
use super::mysql::{self, MysqlSpec};
use super::redis::{self, RedisSpec};
use super::{files_restore, FromPolicy, PolicyInput, Source, SourceKind, SpecInfo};
use crate::backup::catalog::Kind;
use crate::error::Result;

/// The one list of sources: each line is `Variant(SpecType) => "kind name",
/// SourceType, KindOps;`. It derives `SourceSpec` (one variant per line),
/// `Kind::ops`, the policy keys of
/// each kind (`Kind::policy_keys`, `Kind::read_keys`, [`PolicyKeys`]) and
/// [`build`], so that a new source is its file plus one line here.
/// `SourceType::new(job, spec)` opens backups (`Source`); `KindOps` (a unit
/// struct implementing `SourceKind`) validates, restores and restore-tests
/// them; `SpecType` implements [`FromPolicy`] (its keys of a `[[job]]`
/// table) and [`SpecInfo`].
macro_rules! sources {
    ($($variant:ident($spec:ty) => $name:literal, $source:ty, $ops:expr;)+) => {
        #[derive(Debug, Clone, PartialEq)]
        pub enum SourceSpec {
            $($variant($spec),)+
        }

        impl SourceSpec {
            pub fn kind(&self) -> Kind {
                match self {
                    $(SourceSpec::$variant(_) => Kind::$variant,)+
                }
            }

            /// What the spec tells about itself (`policy check`, drills).
            pub fn info(&self) -> &dyn SpecInfo {
                match self {
                    $(SourceSpec::$variant(spec) => spec,)+
                }
            }
        }

        // Every kind of the catalog has exactly one line in the list and every
        // line names a kind of the catalog: these matches are exhaustive.
        impl Kind {
            /// The one place that chooses what restores and checks a kind's backups.
            pub fn ops(self) -> &'static dyn SourceKind {
                match self {
                    $(Kind::$variant => &$ops,)+
                }
            }

            /// The keys of a `[[job]]` table this kind reads beside the
            /// common ones (kebab-case, in its `FromPolicy::Keys` order).
            pub fn policy_keys(self) -> &'static [&'static str] {
                match self {
                    $(Kind::$variant => crate::base::toml_loc::struct_keys::<<$spec as FromPolicy>::Keys>(),)+
                }
            }

            /// The drill keys this kind reads ([`FromPolicy::DRILL_KEYS`]).
            pub fn drill_keys(self) -> &'static [&'static str] {
                match self {
                    $(Kind::$variant => <$spec as FromPolicy>::DRILL_KEYS,)+
                }
            }

            /// [`FromPolicy::DRILL_TARGET_SCHEME`] of this kind.
            pub fn drill_target_scheme(self) -> Option<&'static str> {
                match self {
                    $(Kind::$variant => <$spec as FromPolicy>::DRILL_TARGET_SCHEME,)+
                }
            }

            /// Deserialises this kind's keys of a job table (strict: a key
            /// it does not read is an error).
            pub fn read_keys(self, keys: toml::Table) -> std::result::Result<PolicyKeys, toml::de::Error> {
                match self {
                    $(Kind::$variant => toml::Value::Table(keys).try_into().map(PolicyKeys::$variant),)+
                }
            }
        }

        /// A job's source keys as read by [`Kind::read_keys`], before
        /// they are checked ([`PolicyKeys::into_spec`]).
        #[derive(Debug)]
        pub enum PolicyKeys {
            $($variant(<$spec as FromPolicy>::Keys),)+
        }

        impl PolicyKeys {
            pub fn into_spec(self, input: &PolicyInput<'_>) -> Result<SourceSpec> {
                match self {
                    $(PolicyKeys::$variant(keys) => <$spec as FromPolicy>::from_policy(keys, input).map(SourceSpec::$variant),)+
                }
            }
        }

        /// The one place that chooses a source implementation.
        pub fn build(job: &str, spec: &SourceSpec) -> Box<dyn Source> {
            let job = job.to_owned();
            match spec {
                $(SourceSpec::$variant(spec) => Box::new(<$source>::new(job, spec.clone())),)+
            }
        }
    };
}

sources! {
    Files(FilesSpec) => "files", files::FilesSource, files_restore::FilesKind;
    Mysql(MysqlSpec) => "mysql", mysql::MysqlSource, mysql::MysqlKind;
    Redis(RedisSpec) => "redis", redis::RedisSource, redis::RedisKind;
}

impl Kind {
    /// Every source key of any kind, each once, in the order of the
    /// `sources!` list and of each kind's keys.
    pub fn all_policy_keys() -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for k in Kind::ALL {
            for key in k.policy_keys() {
                if !out.contains(key) {
                    out.push(key);
                }
            }
        }
        out
    }
}
