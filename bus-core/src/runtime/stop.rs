//! The signal that ends a run, or one agent of it, gracefully.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Asks a run to stop early (Ctrl-C): sources stop producing, everything
/// already published is still delivered, agents stop, the run reports.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<Raised>);

#[derive(Debug, Default)]
struct Raised {
    raised: AtomicBool,
    /// Raising the parent raises this one too.
    parent: Option<StopSignal>,
}

impl StopSignal {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal raised with this one, or on its own (stopping one agent of
    /// a run without stopping the run).
    pub fn child(&self) -> Self {
        Self(Arc::new(Raised {
            raised: AtomicBool::new(false),
            parent: Some(self.clone()),
        }))
    }

    /// Raises it.
    pub fn stop(&self) {
        self.0.raised.store(true, Ordering::SeqCst);
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
}
