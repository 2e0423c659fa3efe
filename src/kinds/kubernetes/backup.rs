//! Kubernetes backups: the cluster's objects exported as YAML into a tar, streamed through the pipeline.

use chrono::Utc;

use crate::backup::{BackupError, Run};
use crate::kinds::kubernetes::config::KubernetesSource;
use crate::pipeline;
use crate::repository::{self, Manifest};

/// Exports a Kubernetes source: objects stream from the API server into a
/// tar (on a blocking thread) and through the pipeline into storage; the
/// manifest records counts per namespace and kind.
pub(crate) async fn backup_kubernetes(
    run: &mut Run<'_>,
    k: &KubernetesSource,
    started_at: chrono::DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    use crate::kinds::kubernetes::export as kube_src;
    use crate::kube::{Cluster, ConnectOptions};
    let cluster = Cluster::connect(&ConnectOptions::from_source(k)).await?;
    let version = cluster.version().await?;
    let source_name = run.source.name.to_string();
    tracing::info!(source = %source_name, backup = %run.id, server = %cluster.server, version = %version, "backup started");

    let key = run.key("objects.tar");
    let writer = run.repo.store().create(&key).await?;
    let (files_tx, files_rx) = tokio::sync::mpsc::channel(256);
    let (tar_in, tar_out) = tokio::io::duplex(256 << 10);
    let bridge = tokio_util::io::SyncIoBridge::new(tar_in);
    let mtime = started_at.timestamp().max(0) as u64;
    let tar = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut out = kube_src::write_tar(files_rx, bridge, mtime)?;
        out.flush()?;
        out.shutdown()
    });
    let ticker = run.ticker("objects.tar".into());
    let (exported, encoded) = tokio::join!(
        kube_src::export(&cluster, k, files_tx),
        pipeline::encode(tar_out, &run.settings, &key, writer, Some(ticker.counter()))
    );
    let tar = tar
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    // The storage error comes first: it is also why the export stopped.
    let pending = encoded?;
    let summary = match (exported, tar) {
        (Ok(s), Ok(())) => s,
        // The export stopped because the tar writer did: its error is the cause.
        (Err(crate::kube::KubeError::SinkClosed), Err(e)) => {
            pending.abort().await;
            return Err(BackupError::Tar(e));
        }
        (Err(e), _) => {
            pending.abort().await;
            return Err(e.into());
        }
        (Ok(_), Err(e)) => {
            pending.abort().await;
            return Err(BackupError::Tar(e));
        }
    };
    let enc = pending.commit().await?;
    tracing::info!(source = %source_name, objects = summary.objects(), namespaces = summary.namespaces.len(), plaintext = %crate::progress::human_bytes(enc.plaintext.size), stored = %crate::progress::human_bytes(enc.stored.size), "cluster configuration exported");
    run.record("objects".into(), "kubernetes-yaml-tar", None, key, enc);
    Ok(Manifest {
        kubernetes: Some(summary),
        ..run.manifest(
            repository::ManifestKind::KubernetesExport,
            started_at,
            format!("Kubernetes {version}"),
            "lifeboat kubernetes export (kube-rs 2)".into(),
        )
    })
}
