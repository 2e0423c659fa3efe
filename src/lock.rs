//! Per-source locks in the repository, so two lifeboat processes (two pods,
//! a CronJob that overlaps itself) never back up the same source at once.
//!
//! Stores cannot be trusted with conditional writes: Garage 2.5 accepts
//! `If-None-Match: *` and `If-Match` on PutObject and ignores them (it
//! overwrites; measured by the tests of this project), so a lock cannot be
//! "create this key unless it exists". Instead every contender writes its
//! own claim under a unique key and then lists the claims; the live claim
//! with the earliest `since` (ties: the holder id) holds the lock, the
//! others withdraw their claim. A claim is live while its lease runs; the
//! holder renews it (a new claim object, the old one deleted) every third
//! of the lease, and a claim whose lease ran out (a killed process) is
//! taken over with a warning. So is, at once, a live claim of a process
//! that is provably gone: made on this host, in this boot and this PID
//! namespace, by a pid that no longer runs with the start time it had.
//!
//! Key: `locks/<policy>/<source>/<renewed-at>-<holder>.json`.
//!
//! A lease follows progress: work that registers a [`Heartbeat`] (a backup
//! beats it as bytes move) keeps its lease only while it beats. After
//! `stall_after` without a beat the renewal stops, [`Lock::stalled`]
//! resolves so the work can fail, and the lease lapses, so a stuck run (a
//! dead connection that no deadline caught) never blocks the next one.
//!
//! The window: two contenders that write their claims within the store's
//! listing delay of each other could both see only their own claim. Object
//! stores with read-after-write listing (S3, Garage single-region, a local
//! folder) close it; the claim is also re-checked before work starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::storage::{ObjectStore, StorageError};

/// Errors taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("source '{source_name}' is locked by {} (pid {} on {}, {} since {}); another lifeboat is working on it. If that process is gone, the lock expires at {} (its lease of {} after the last renewal); a holder on this host whose process is gone is taken over at once", .holder.holder, .holder.pid, .holder.host, .holder.operation, .holder.since.unwrap_or(.holder.renewed_at).format("%Y-%m-%d %H:%M:%S UTC"), .holder.expires_at().format("%Y-%m-%d %H:%M:%S UTC"), humantime::format_duration(Duration::from_secs(.holder.lease_secs)))]
    Held {
        source_name: String,
        holder: Box<Claim>,
    },
    #[error("cannot read or write the lock of source '{source_name}': {error}")]
    Storage {
        source_name: String,
        error: StorageError,
    },
}

impl crate::outcome::Classify for LockError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Held { .. } => Outcome::Refused,
            Self::Storage { error, .. } => error.outcome(),
        }
    }
}

/// One contender's claim on a source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    /// A random id for this process's claim.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// What it is doing: `backup`, `prune`.
    pub operation: String,
    /// When the store first recorded this process's claim (its clock, one
    /// for all contenders): decides between them. Unset in the first claim
    /// object, whose own store time is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// When the claim was last renewed.
    pub renewed_at: DateTime<Utc>,
    pub lease_secs: u64,
    /// Which process exactly, for telling on the same host that it is
    /// gone (absent in claims of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessId>,
}

/// A process, unambiguously on its host: the boot, the PID namespace (two
/// pods with host networking share a host name, not their pids) and the
/// start time (pids are reused).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessId {
    pub boot_id: String,
    pub pid_namespace: String,
    /// Field 22 of `/proc/PID/stat`: clock ticks since boot.
    pub start: u64,
}

impl ProcessId {
    /// This process, if /proc tells.
    pub fn current() -> Option<ProcessId> {
        Some(ProcessId {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()?
                .trim()
                .to_string(),
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .ok()?
                .to_string_lossy()
                .into_owned(),
            start: process_start(std::process::id())?,
        })
    }
}

impl Claim {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at() > now
    }

    /// When the claim lapses unless renewed.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.renewed_at + chrono::Duration::seconds(self.lease_secs as i64)
    }

    /// Whether the claim's process is provably gone: it ran on this host,
    /// in this boot and PID namespace (`me`), and its pid no longer runs
    /// with the start time it had. A claim without the process's identity
    /// is never judged gone this way.
    fn holder_gone(&self, host: &str, me: Option<&ProcessId>) -> bool {
        let (Some(theirs), Some(me)) = (&self.process, me) else {
            return false;
        };
        self.host == host
            && theirs.boot_id == me.boot_id
            && theirs.pid_namespace == me.pid_namespace
            && process_start(self.pid) != Some(theirs.start)
    }
    fn key(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}-{}.json",
            self.renewed_at.format("%Y%m%dT%H%M%S%.3fZ"),
            self.holder
        )
    }
}

/// How long a claim lives without renewal.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How long a contender waits after writing its claim before deciding:
/// longer than a write takes to become visible in listings, and than the
/// store's clock resolution (S3 LastModified has whole seconds).
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(1100);

/// How a lock keeps time.
#[derive(Clone)]
pub struct Timing {
    /// How long a claim lives without renewal.
    pub lease: Duration,
    /// How long a contender waits after writing its claim before deciding.
    pub settle: Duration,
    /// Where claims' times come from (tests: tokio's paused time).
    pub clock: Arc<dyn Clock>,
}

impl Timing {
    /// A lease of `lease`, the default settle, the wall clock.
    pub fn with_lease(lease: Duration) -> Timing {
        Timing {
            lease,
            settle: DEFAULT_SETTLE,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Beaten by the work a lock guards whenever it makes progress.
#[derive(Clone, Default)]
pub struct Heartbeat(Arc<Beats>);

#[derive(Default)]
struct Beats {
    count: AtomicU64,
    /// Milliseconds without a beat after which the lease is let go; 0
    /// while nobody asked for it.
    stall_after_ms: AtomicU64,
}

impl Heartbeat {
    /// Records progress.
    pub fn beat(&self) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    fn stall_after(&self) -> Option<Duration> {
        match self.0.stall_after_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// A lock held; renewed in the background until released or dropped.
pub struct Lock {
    heartbeat: Heartbeat,
    /// Set by the renewal when it stopped for lack of progress.
    stalled: tokio::sync::watch::Receiver<Option<Duration>>,
    store: Arc<dyn ObjectStore>,
    current: Arc<tokio::sync::Mutex<String>>,
    renew: Option<tokio::task::JoinHandle<()>>,
    /// Tells the renewal to stop between renewals (never in the middle of
    /// one, whose claim would then outlive the release).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    source_name: String,
}

fn prefix(policy: &str, source: &str) -> String {
    crate::layout::locks_prefix(policy, source)
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot);
/// None when no such process runs.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Takes the lock on a source, or says who holds it.
pub async fn acquire(
    store: Arc<dyn ObjectStore>,
    policy: &str,
    source: &str,
    operation: &str,
    timing: Timing,
) -> Result<Lock, LockError> {
    let Timing {
        lease,
        settle,
        clock,
    } = timing;
    let storage = |error| LockError::Storage {
        source_name: source.to_string(),
        error,
    };
    let prefix = prefix(policy, source);
    let now = clock.now();
    let mine = Claim {
        holder: format!("{:016x}", rand::random::<u64>()),
        host: hostname(),
        pid: std::process::id(),
        operation: operation.to_string(),
        since: None,
        renewed_at: now,
        lease_secs: lease.as_secs().max(1),
        process: ProcessId::current(),
    };
    let key = mine.key(&prefix);
    let body = serde_json::to_vec_pretty(&mine).expect("a claim serializes");
    store.put(&key, body.into()).await.map_err(storage)?;
    // Let claims written at the same moment land, then decide.
    tokio::time::sleep(settle).await;
    let mine = match decide(store.as_ref(), &prefix, mine, clock.now()).await {
        Ok(Ok(mine)) => mine,
        Ok(Err(other)) => {
            let _ = store.delete(&key).await;
            return Err(LockError::Held {
                source_name: source.to_string(),
                holder: Box::new(other),
            });
        }
        Err(e) => {
            let _ = store.delete(&key).await;
            return Err(storage(e));
        }
    };
    let current = Arc::new(tokio::sync::Mutex::new(key));
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let heartbeat = Heartbeat::default();
    let (stall, stalled) = tokio::sync::watch::channel(None);
    let renew = tokio::spawn(renew_loop(
        Renewal {
            store: Arc::clone(&store),
            prefix,
            current: Arc::clone(&current),
            lease,
            clock,
            heartbeat: heartbeat.clone(),
            stall,
        },
        mine,
        stopped,
    ));
    Ok(Lock {
        heartbeat,
        stalled,
        store,
        current,
        renew: Some(renew),
        stop: Some(stop),
        source_name: source.to_string(),
    })
}

/// Takes the lock on a policy's source for `operation`, with the policy's
/// lease (`repository.lock_lease`), the default settle and the wall clock.
pub async fn acquire_source(
    store: Arc<dyn ObjectStore>,
    policy: &crate::policy::Policy,
    source: &crate::policy::Source,
    operation: &str,
) -> Result<Lock, LockError> {
    acquire(
        store,
        policy.name.as_str(),
        source.name.as_str(),
        operation,
        Timing::with_lease(policy.repository.lock_lease.0),
    )
    .await
}

/// Decides between the live claims: the one the store recorded first
/// (ties: the holder id) holds the lock. Returns my claim with its `since`
/// set if it is mine, or the holder's claim. Stale claims of others are
/// deleted on the way (a takeover, logged).
async fn decide(
    store: &dyn ObjectStore,
    prefix: &str,
    mut mine: Claim,
    now: DateTime<Utc>,
) -> Result<Result<Claim, Claim>, StorageError> {
    let host = hostname();
    let me = ProcessId::current();
    let mut live: Vec<(DateTime<Utc>, Claim)> = Vec::new();
    for obj in store.list(prefix).await? {
        let claim: Option<Claim> = match store.get_bytes(&obj.key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            // Renewed or released meanwhile.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let Some(c) = claim else {
            tracing::warn!(key = %obj.key, "an unreadable lock claim is ignored; delete it by hand if it stays");
            continue;
        };
        let first = c.since.or(obj.modified).unwrap_or(c.renewed_at);
        if c.holder == mine.holder {
            mine.since = Some(first);
            live.push((first, c));
        } else if c.holder_gone(&host, me.as_ref()) {
            tracing::warn!(key = %obj.key, holder = %c.holder, pid = c.pid, operation = %c.operation, renewed_at = %c.renewed_at, "taking over the lock of a lifeboat on this host whose process is gone");
            store.delete(&obj.key).await?;
        } else if c.live(now) {
            live.push((first, c));
        } else {
            tracing::warn!(key = %obj.key, holder = %c.holder, host = %c.host, pid = c.pid, operation = %c.operation, renewed_at = %c.renewed_at, "taking over a stale lock: its holder stopped renewing it");
            store.delete(&obj.key).await?;
        }
    }
    let winner = live
        .into_iter()
        .min_by(|a, b| (a.0, &a.1.holder).cmp(&(b.0, &b.1.holder)));
    Ok(match winner {
        Some((since, c)) if c.holder != mine.holder => Err(Claim {
            since: Some(since),
            ..c
        }),
        _ => Ok(mine),
    })
}

/// What the renewal works with.
struct Renewal {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The key of the claim now in the store.
    current: Arc<tokio::sync::Mutex<String>>,
    lease: Duration,
    clock: Arc<dyn Clock>,
    heartbeat: Heartbeat,
    /// Told how long the work went without progress when the renewal
    /// gives up on it.
    stall: tokio::sync::watch::Sender<Option<Duration>>,
}

async fn renew_loop(r: Renewal, mut claim: Claim, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let every = (r.lease / 3).max(Duration::from_millis(200));
    let mut beats = r.heartbeat.count();
    let mut progressed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
        let now_beats = r.heartbeat.count();
        if now_beats != beats {
            beats = now_beats;
            progressed = tokio::time::Instant::now();
        } else if let Some(limit) = r.heartbeat.stall_after() {
            let idle = progressed.elapsed();
            if idle >= limit {
                let key = r.current.lock().await.clone();
                tracing::error!(
                    key = %key,
                    "no progress for {}; the lock is no longer renewed and the work is stopped",
                    humantime::format_duration(Duration::from_secs(idle.as_secs()))
                );
                let _ = r.stall.send(Some(idle));
                return;
            }
        }
        let mut key = r.current.lock().await;
        claim.renewed_at = r.clock.now();
        let next = claim.key(&r.prefix);
        let body = serde_json::to_vec_pretty(&claim).expect("a claim serializes");
        match r.store.put(&next, body.into()).await {
            Ok(()) => {
                if let Err(e) = r.store.delete(&key).await {
                    tracing::warn!(key = %*key, error = %e, "cannot delete the previous lock claim");
                }
                *key = next;
            }
            Err(e) => {
                tracing::warn!(key = %next, error = %e, "cannot renew the lock; retrying");
            }
        }
    }
}

impl Lock {
    /// From now on the lease is renewed only while the returned heartbeat
    /// is beaten at least every `stall_after`.
    pub fn follow_progress(&self, stall_after: Duration) -> Heartbeat {
        let ms = stall_after.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.heartbeat.0.stall_after_ms.store(ms, Ordering::Relaxed);
        self.heartbeat.beat();
        self.heartbeat.clone()
    }

    /// From now on the lease is renewed unconditionally again (the work
    /// that beats the heartbeat is over; what follows is bounded by its
    /// own deadlines).
    pub fn stop_following(&self) {
        self.heartbeat.0.stall_after_ms.store(0, Ordering::Relaxed);
    }

    /// Resolves, with how long the work went without a beat, once the
    /// renewal gave up for lack of progress; never otherwise.
    pub async fn stalled(&self) -> Duration {
        let mut rx = self.stalled.clone();
        let idle = match rx.wait_for(Option::is_some).await {
            Ok(idle) => *idle,
            // The renewal ended without a stall (released).
            Err(_) => None,
        };
        match idle {
            Some(idle) => idle,
            None => std::future::pending().await,
        }
    }

    /// Stops renewing (a renewal under way finishes first, so that no
    /// claim of this holder outlives the release) and deletes the claim.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(r) = self.renew.take() {
            let _ = r.await;
        }
        let key = self.current.lock().await.clone();
        if let Err(e) = self.store.delete(&key).await {
            tracing::warn!(source = %self.source_name, key = %key, error = %e, "cannot delete the lock claim; it expires by itself");
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Not released (a panic, or the future dropped): stop renewing; the
        // claim expires after its lease.
        if let Some(r) = self.renew.take() {
            r.abort();
        }
    }
}

#[cfg(test)]
mod tests;
