//! The `drill:` section: scratch servers and the checks a drill runs.

use super::*;
use crate::kinds::postgres::config::default_pg_port;

/// Restore drills: where the scratch targets run and what is checked
/// beyond every object's hashes and the inventory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// When `lifeboat run` drills the policy's PostgreSQL sources
    /// (Kubernetes CronJob syntax, read in the policy's `timezone`), e.g.
    /// `"0 5 1 * *"` for 05:00 on the 1st of each month. Needs `identity`.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// The age identity file the daemon's scheduled drills decrypt with
    /// (relative paths are relative to the policy file). Keep it readable
    /// by the daemon only; `lifeboat drill` takes `--identity` instead.
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// Folder for scratch servers' data directories (default: the system
    /// temp folder). It needs room for the largest restored database.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// The throwaway PostgreSQL cluster drills restore into.
    #[serde(default)]
    pub postgres: ScratchPostgresConfig,
    /// The throwaway MariaDB server MySQL/MariaDB drills restore into.
    #[serde(default)]
    pub mariadb: ScratchMariaDbConfig,
    /// The scratch namespaces Kubernetes drills restore into.
    #[serde(default)]
    pub kubernetes: ScratchKubernetesConfig,
    /// A drill fails when the restored data is older than this (the
    /// recovery point objective, e.g. `26h` for nightly backups).
    #[serde(default)]
    pub max_rpo: Option<HumanDuration>,
    /// Queries run on the restored data.
    #[serde(default)]
    pub checks: Vec<DrillCheck>,
}

/// The throwaway PostgreSQL cluster of a drill (initdb and pg_ctl).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchPostgresConfig {
    /// Folder holding initdb, pg_ctl and postgres (default: Debian's
    /// `/usr/lib/postgresql/N/bin` for the backup's major version or newer).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Port on 127.0.0.1 (default: a free one).
    #[serde(default)]
    pub port: Option<u16>,
    /// The system user the cluster runs as when lifeboat runs as root
    /// (PostgreSQL refuses root). Default: `postgres`.
    #[serde(default)]
    pub run_as: Option<String>,
    /// Instead of a throwaway cluster: scratch databases
    /// `lifeboat_drill_<id>_<database>` on this server, dropped afterwards
    /// (dumps only; base backups always get a throwaway cluster).
    #[serde(default)]
    pub server: Option<ScratchServer>,
}

/// A PostgreSQL server drills may create and drop databases on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchServer {
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// A role with CREATEDB (it owns what the drill restores: roles of the
    /// backup are not restored onto a shared server).
    pub user: String,
    #[serde(default)]
    pub password: Option<SecretRef>,
}

/// Where MySQL/MariaDB drills' throwaway server comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchMariaDbConfig {
    /// Folder holding mariadb-install-db, mariadbd and mariadb (default:
    /// PATH, then /usr/sbin).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Port on 127.0.0.1 (default: a free one).
    #[serde(default)]
    pub port: Option<u16>,
    /// The system user mariadbd runs as when lifeboat runs as root.
    /// Default: `mysql`.
    #[serde(default)]
    pub run_as: Option<String>,
}

/// How Kubernetes drills get the right to restore into their scratch
/// namespaces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchKubernetesConfig {
    /// The account the drill runs as (`namespace/name`, e.g.
    /// `lifeboat/lifeboat-drill`): each scratch namespace gets a
    /// RoleBinding of `cluster_role` to it before anything is restored.
    /// Leave it out when the drill's credentials may already write there.
    #[serde(default)]
    pub service_account: Option<String>,
    /// The ClusterRole bound in each scratch namespace (default
    /// `lifeboat-drill-scratch`, from deploy/drill/).
    #[serde(default)]
    pub cluster_role: Option<String>,
}

impl ScratchKubernetesConfig {
    /// `(namespace, name)` of the account to bind, if any.
    pub fn account(&self) -> Option<(&str, &str)> {
        self.service_account
            .as_deref()
            .and_then(|s| s.split_once('/'))
    }

    pub fn cluster_role(&self) -> &str {
        self.cluster_role
            .as_deref()
            .unwrap_or("lifeboat-drill-scratch")
    }
}

/// A query run on a drill's restored data, and what its result must be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillCheck {
    /// Shown in the report (`orders in the last day`).
    pub name: String,
    /// The source whose restored backup is queried.
    pub source: Name,
    /// The database queried (default: the backup's only database).
    #[serde(default)]
    pub database: Option<String>,
    /// One query; the first column of the first row is compared. For
    /// database sources.
    #[serde(default)]
    pub sql: String,
    /// For Kubernetes sources: a kind (`Deployment`, or its plural); the
    /// number of objects of that kind restored into the scratch namespaces
    /// is compared.
    #[serde(default)]
    pub kind: Option<String>,
    /// `> 0`, `>= 1000`, `== 42`, `!= 0`, `< 5`, `<= 5`, or `== text`.
    pub expect: Expectation,
}

impl DrillCheck {
    /// A check of a database source: a query, no `kind:` (`Err` is the
    /// message).
    pub fn validate_sql(&self) -> Result<(), String> {
        if self.kind.is_some() {
            return Err(format!(
                "`kind:` is for checks of Kubernetes sources; source '{}' is a database: give `sql:`",
                self.source
            ));
        }
        if self.sql.trim().is_empty() {
            return Err("sql is empty".into());
        }
        Ok(())
    }
}

/// A comparison a check's result must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub op: CompareOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.value)
    }
}

impl FromStr for Expectation {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        // Two-character operators first.
        let ops = [
            (">=", CompareOp::Ge),
            ("<=", CompareOp::Le),
            ("==", CompareOp::Eq),
            ("!=", CompareOp::Ne),
            (">", CompareOp::Gt),
            ("<", CompareOp::Lt),
            ("=", CompareOp::Eq),
        ];
        let (op, rest) = ops
            .iter()
            .find_map(|(sym, op)| t.strip_prefix(sym).map(|rest| (*op, rest.trim())))
            .ok_or_else(|| {
                format!("expect '{text}' has no comparison; write e.g. '> 0', '>= 1000', '== 42' or '== text'")
            })?;
        if rest.is_empty() {
            return Err(format!(
                "expect '{text}' has nothing to compare with; write e.g. '{} 0'",
                op.symbol()
            ));
        }
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) && rest.parse::<f64>().is_err() {
            return Err(format!(
                "expect '{text}': {} needs a number, '{rest}' is not one",
                op.symbol()
            ));
        }
        Ok(Expectation {
            op,
            value: rest.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for Expectation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `expect: 5` arrives as a number.
        let v = yaml_serde::Value::deserialize(d)?;
        let text = match v {
            yaml_serde::Value::String(s) => s,
            yaml_serde::Value::Number(n) => format!("== {n}"),
            yaml_serde::Value::Bool(b) => format!("== {b}"),
            _ => {
                return Err(serde::de::Error::custom(
                    "expect must be a comparison such as '> 0' or '== 42'",
                ))
            }
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Expectation {
    /// Whether `actual` (the query's result as text; `None` for SQL NULL
    /// or no row) satisfies it. Numbers compare as numbers; text only with
    /// `==` and `!=`.
    pub fn holds(&self, actual: Option<&str>) -> Result<bool, String> {
        let Some(actual) = actual else {
            return Ok(self.op == CompareOp::Ne);
        };
        let actual = actual.trim();
        if let (Ok(a), Ok(b)) = (actual.parse::<f64>(), self.value.parse::<f64>()) {
            return Ok(match self.op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
            });
        }
        match self.op {
            CompareOp::Eq => Ok(actual == self.value),
            CompareOp::Ne => Ok(actual != self.value),
            op => Err(format!(
                "the result '{actual}' is not a number, so it cannot be compared with {} {}",
                op.symbol(),
                self.value
            )),
        }
    }
}
