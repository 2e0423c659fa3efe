use super::*;
use crate::clock::TokioClock;
use crate::storage::LocalStore;

const SETTLE: Duration = Duration::from_millis(50);

thread_local! {
    /// One clock per test (each test has its thread and runtime).
    static CLOCK: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(Utc::now()));
}

/// A short settle, and claims timed by tokio's (paused) clock.
fn timing(lease: Duration) -> Timing {
    Timing {
        lease,
        settle: SETTLE,
        clock: CLOCK.with(Arc::clone),
    }
}

/// Policy `p`'s lock on `source` for `operation`, with the default lease.
async fn take(
    store: &Arc<dyn ObjectStore>,
    source: &str,
    operation: &str,
) -> Result<Lock, LockError> {
    acquire(
        Arc::clone(store),
        "p",
        source,
        operation,
        timing(DEFAULT_LEASE),
    )
    .await
}

fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")));
    (dir, store)
}

#[tokio::test(start_paused = true)]
async fn the_second_contender_is_refused_and_told_who_holds_it() {
    let (_dir, store) = store();
    let first = take(&store, "db", "backup").await.unwrap();
    let err = take(&store, "db", "backup").await.err().expect("held");
    let msg = err.to_string();
    assert!(
        msg.contains("locked by") && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // Another source is free.
    let other = take(&store, "other", "backup").await.unwrap();
    other.release().await;
    first.release().await;
    // Released: free again, and no claim is left.
    let again = take(&store, "db", "prune").await.unwrap();
    again.release().await;
    assert!(store.list("locks/").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn concurrent_contenders_get_exactly_one_lock() {
    let (_dir, store) = store();
    let tries = (0..8).map(|_| take(&store, "db", "backup"));
    let results = futures::future::join_all(tries).await;
    let won: Vec<Lock> = results.into_iter().filter_map(Result::ok).collect();
    assert_eq!(won.len(), 1);
    for l in won {
        l.release().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_claim_is_taken_over_and_a_live_one_is_renewed() {
    let (_dir, store) = store();
    let old = Utc::now() - chrono::Duration::seconds(600);
    let stale = Claim {
        holder: "dead".into(),
        host: "gone".into(),
        pid: 1,
        operation: "backup".into(),
        since: Some(old),
        renewed_at: old,
        lease_secs: 60,
        process: None,
    };
    let prefix = prefix("p", "db");
    store
        .put(
            &stale.key(&prefix),
            serde_json::to_vec(&stale).unwrap().into(),
        )
        .await
        .unwrap();
    let lock = acquire(
        Arc::clone(&store),
        "p",
        "db",
        "backup",
        timing(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let keys = store.list(&prefix).await.unwrap();
    assert_eq!(keys.len(), 1, "the stale claim is gone: {keys:?}");
    let first_key = keys[0].key.clone();
    // Renewals replace the claim while the lease is short.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let keys = store.list(&prefix).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys[0].key, first_key, "renewed");
    // Still held: a contender 1.2 s later (past the first lease) is refused.
    assert!(take(&store, "db", "backup").await.is_err());
    lock.release().await;
}

/// A store whose writes of renewed claims take a while to land, as
/// over a slow link: a release during one must still leave no claim.
struct SlowPuts(Arc<dyn ObjectStore>);

#[async_trait::async_trait]
impl ObjectStore for SlowPuts {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn healthcheck(&self, write: bool) -> Result<(), StorageError> {
        self.0.healthcheck(write).await
    }
    async fn create(
        &self,
        key: &str,
    ) -> Result<Box<dyn crate::storage::ObjectWriter>, StorageError> {
        self.0.create(key).await
    }
    async fn get(&self, key: &str) -> Result<crate::storage::ObjectReader, StorageError> {
        self.0.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.0.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<crate::storage::ObjectMeta>, StorageError> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.0.delete(key).await
    }
    async fn put(&self, key: &str, data: bytes::Bytes) -> Result<(), StorageError> {
        let renewal = serde_json::from_slice::<Claim>(&data).is_ok_and(|c| c.since.is_some());
        // Once sent, a request lands even if the sender stops waiting.
        let (inner, key) = (Arc::clone(&self.0), key.to_string());
        tokio::spawn(async move {
            if renewal {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            inner.put(&key, data).await
        })
        .await
        .expect("the put task runs")
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_follows_progress_and_lapses_when_the_work_stalls() {
    let (_dir, store) = store();
    let lease = Duration::from_millis(600);
    let lock = acquire(Arc::clone(&store), "p", "db", "backup", timing(lease))
        .await
        .unwrap();
    let heartbeat = lock.follow_progress(Duration::from_millis(900));
    // Beaten every 100 ms for 2 s (ten renewals): renewed, never stalled.
    let beating = async {
        for _ in 0..20 {
            heartbeat.beat();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = beating => {}
        idle = lock.stalled() => panic!("stalled after {idle:?} while beating"),
    }
    let renewed = store.list("locks/").await.unwrap();
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    let claim: Claim =
        serde_json::from_slice(&store.get_bytes(&renewed[0].key).await.unwrap()).unwrap();
    assert!(
        claim.live(CLOCK.with(|c| c.now())),
        "renewed while beating: {claim:?}"
    );
    // No beat: within the stall limit and one renewal period it gives up.
    let idle = tokio::time::timeout(Duration::from_secs(3), lock.stalled())
        .await
        .expect("the stalled work is noticed");
    assert!(idle >= Duration::from_millis(900), "{idle:?}");
    // No renewal any more: the claim lapses and another run takes over.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let next = acquire(Arc::clone(&store), "p", "db", "backup", timing(lease))
        .await
        .expect("the stalled holder's lease lapsed");
    next.release().await;
    lock.release().await;
    assert!(store.list("locks/").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_release_during_a_renewal_leaves_no_claim() {
    let (_dir, inner) = store();
    let store: Arc<dyn ObjectStore> = Arc::new(SlowPuts(Arc::clone(&inner)));
    let prefix = prefix("p", "db");
    let lock = acquire(
        Arc::clone(&store),
        "p",
        "db",
        "backup",
        timing(Duration::from_millis(600)),
    )
    .await
    .unwrap();
    // Renewals start every 200 ms and take 400 ms: release in the middle
    // of one.
    tokio::time::sleep(Duration::from_millis(350)).await;
    lock.release().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let left = inner.list(&prefix).await.unwrap();
    assert!(left.is_empty(), "claims after release: {left:?}");
}

/// A live claim whose process is provably gone is taken over at once;
/// one that might still run (this process; another PID namespace; no
/// identity) is not.
#[tokio::test(start_paused = true)]
async fn a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once() {
    let (_dir, store) = store();
    let prefix = prefix("p", "db");
    let me = ProcessId::current().expect("/proc tells who we are");
    let exited = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = exited.id();
    let mut child = exited;
    child.wait().unwrap();
    let claim = |holder: &str, pid: u32, process: Option<ProcessId>| Claim {
        holder: holder.into(),
        host: hostname(),
        pid,
        operation: "backup".into(),
        since: Some(Utc::now() - chrono::Duration::seconds(5)),
        renewed_at: Utc::now(),
        lease_secs: 3600,
        process,
    };
    let put = |c: Claim| {
        let store = Arc::clone(&store);
        let prefix = prefix.clone();
        async move {
            store
                .put(&c.key(&prefix), serde_json::to_vec(&c).unwrap().into())
                .await
                .unwrap();
        }
    };
    let take = || take(&store, "db", "backup");
    // Still running (this very process): refused, with when it expires.
    put(claim("a-live-one", std::process::id(), Some(me.clone()))).await;
    let e = take().await.err().expect("refused").to_string();
    assert!(e.contains("expires at"), "{e}");
    for k in store.list(&prefix).await.unwrap() {
        store.delete(&k.key).await.unwrap();
    }
    // The same pid in another PID namespace, or a claim without the
    // process's identity: cannot be judged from here.
    let elsewhere = ProcessId {
        pid_namespace: "pid:[1]".into(),
        ..me.clone()
    };
    put(claim("b-other-ns", dead_pid, Some(elsewhere))).await;
    assert!(take().await.is_err());
    for k in store.list(&prefix).await.unwrap() {
        store.delete(&k.key).await.unwrap();
    }
    put(claim("c-no-identity", dead_pid, None)).await;
    assert!(take().await.is_err());
    for k in store.list(&prefix).await.unwrap() {
        store.delete(&k.key).await.unwrap();
    }
    // Gone: taken over at once, long before its lease of an hour.
    let start = me.start;
    put(claim(
        "d-dead",
        dead_pid,
        Some(ProcessId {
            start,
            ..me.clone()
        }),
    ))
    .await;
    let lock = take().await.expect("taken over");
    let keys = store.list(&prefix).await.unwrap();
    assert_eq!(keys.len(), 1, "only the new holder's claim: {keys:?}");
    lock.release().await;
}
