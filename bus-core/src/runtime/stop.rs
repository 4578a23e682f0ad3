//! The signal that ends a run, or one agent of it, gracefully.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// Asks a run to stop early (Ctrl-C): sources stop producing, everything
/// already published is still delivered, agents stop, the run reports.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<Raised>);

#[derive(Debug, Default)]
struct Raised {
    raised: AtomicBool,
    /// Raising the parent raises this one too.
    parent: Option<StopSignal>,
    /// Wakes whoever waits in [`StopSignal::stopped`].
    woken: Notify,
    /// Children to wake when this one is raised.
    children: Mutex<Vec<Weak<Raised>>>,
}

impl Raised {
    fn wake(&self) {
        self.woken.notify_waiters();
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        for child in children.iter().filter_map(Weak::upgrade) {
            child.wake();
        }
    }
}

impl StopSignal {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal raised with this one, or on its own (stopping one agent of
    /// a run without stopping the run).
    pub fn child(&self) -> Self {
        let child = Arc::new(Raised {
            parent: Some(self.clone()),
            ..Raised::default()
        });
        let mut children = self.0.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child));
        Self(child)
    }

    /// Raises it.
    pub fn stop(&self) {
        self.0.raised.store(true, Ordering::SeqCst);
        self.0.wake();
    }

    /// Returns once it (or a parent) is raised.
    pub async fn stopped(&self) {
        loop {
            let woken = self.0.woken.notified();
            tokio::pin!(woken);
            // Registered before the check: a raise after it wakes us.
            woken.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            woken.await;
        }
    }

    /// Has it (or a parent) been raised?
    pub fn is_stopped(&self) -> bool {
        self.0.raised.load(Ordering::SeqCst)
            || self.0.parent.as_ref().is_some_and(StopSignal::is_stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::StopSignal;

    #[test]
    fn a_child_signal_stops_with_its_parent_and_alone_without_it() {
        let run = StopSignal::new();
        let (one, other) = (run.child(), run.child());
        one.stop();
        assert!(one.is_stopped());
        assert!(!run.is_stopped(), "a child does not stop its parent");
        assert!(!other.is_stopped(), "nor its siblings");
        run.stop();
        assert!(other.is_stopped(), "the parent stops every child");
        assert!(other.child().is_stopped(), "and their children");
    }

    #[tokio::test]
    async fn waiting_for_a_child_ends_when_its_parent_is_raised() {
        let run = StopSignal::new();
        let agent = run.child();
        let waiting = tokio::spawn({
            let agent = agent.clone();
            async move { agent.stopped().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        run.stop();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by its parent")
            .unwrap();
    }
}
