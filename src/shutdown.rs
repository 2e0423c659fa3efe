//! Cooperative shutdown: a signal handler asks running work to stop, and
//! work that has cleanup to do (a backup deleting what it wrote) watches for
//! the request instead of being dropped mid-step.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static NOTIFY: Notify = Notify::const_new();

/// Asks every watcher to stop.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    NOTIFY.notify_waiters();
}

/// True once a stop was requested.
pub fn is_requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Resolves when a stop is requested (at once if it already was).
pub async fn requested() {
    loop {
        let notified = NOTIFY.notified();
        tokio::pin!(notified);
        // Register before checking, so a request in between is not missed.
        notified.as_mut().enable();
        if is_requested() {
            return;
        }
        notified.await;
    }
}
