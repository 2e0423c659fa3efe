//! Progress reports for long steps, and human-readable sizes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Logs progress of a long step every 10 seconds until dropped; the step
/// adds its bytes to [`ProgressTicker::counter`].
pub struct ProgressTicker {
    task: tokio::task::JoinHandle<()>,
    counter: Arc<AtomicU64>,
}

impl ProgressTicker {
    pub fn start(source: String, artifact: String, verb: &'static str) -> Self {
        Self::start_beating(source, artifact, verb, None)
    }

    /// Like `start`, and beats `heartbeat` (a lock's, see
    /// [`crate::lock::Lock::follow_progress`]) every second in which bytes
    /// moved.
    pub fn start_beating(
        source: String,
        artifact: String,
        verb: &'static str,
        heartbeat: Option<crate::lock::Heartbeat>,
    ) -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        let bytes = counter.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            for second in 1u64.. {
                tick.tick().await;
                let n = bytes.load(Ordering::Relaxed);
                if n != last {
                    last = n;
                    if let Some(h) = &heartbeat {
                        h.beat();
                    }
                }
                if second % 10 != 0 {
                    continue;
                }
                let secs = start.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    source = %source,
                    artifact = %artifact,
                    "{} {verb}, {:.1} MiB/s",
                    human_bytes(n),
                    n as f64 / secs / 1048576.0
                );
            }
        });
        ProgressTicker { task, counter }
    }

    /// The byte counter the step updates.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }
}

impl Drop for ProgressTicker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
