//! The policy's `kubernetes:` block of a source: which namespaces and cluster-scoped kinds to export.

use std::path::PathBuf;

use serde::Deserialize;

use crate::policy::Databases;

/// A Kubernetes cluster: which namespaces (and cluster-scoped kinds) to
/// export. Every resource type the server offers is included, custom
/// resources too, except those that are never configuration (events,
/// endpoints, leases...) and those named in `exclude_resources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSource {
    /// kubeconfig file. Default: KUBECONFIG or ~/.kube/config, then the
    /// Pod's service account when running in the cluster.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context. Default: the current context.
    #[serde(default)]
    pub context: Option<String>,
    /// `all`, or a list of namespace names.
    #[serde(default)]
    pub namespaces: Option<Namespaces>,
    /// Namespaces by label selector instead (`team=payments,env!=dev`).
    #[serde(default)]
    pub namespace_selector: Option<String>,
    /// With `all` or a selector: namespaces left out. Default:
    /// kube-system, kube-public, kube-node-lease.
    #[serde(default)]
    pub exclude_namespaces: Option<Vec<String>>,
    /// Cluster-scoped kinds to export too, by kind or plural name
    /// (`CustomResourceDefinition`, `clusterroles`, `storageclasses`).
    #[serde(default)]
    pub cluster_resources: Vec<String>,
    /// Resource types left out, by kind, plural or short name, optionally
    /// with the group (`secrets`, `certificates.cert-manager.io`), or a
    /// whole API group (`*.metrics.example.io`).
    #[serde(default)]
    pub exclude_resources: Vec<String>,
}

impl KubernetesSource {
    /// The namespaces left out of `all` or a selector.
    pub fn excluded_namespaces(&self) -> Vec<String> {
        self.exclude_namespaces.clone().unwrap_or_else(|| {
            ["kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec()
        })
    }
}

/// Which namespaces a Kubernetes source exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Namespaces {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Databases::deserialize_named(d, "namespaces", "namespace")? {
            Databases::All => Ok(Namespaces::All),
            Databases::List(l) => Ok(Namespaces::List(l)),
        }
    }
}
