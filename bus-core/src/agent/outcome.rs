//! What an agent hands back when it stops, typed.
//!
//! Drivers own the agents they run and hand them back as `dyn Agent`; what
//! a caller wants from one at the end (the report's figures, the rows a
//! trade log got) comes through an [`Outcome`] the caller gave the agent
//! when building it, not by downcasting the agent.

use std::sync::{Arc, Mutex};

/// A slot for one value of type `T`: the agent keeps a clone and
/// [`set`](Self::set)s it (usually in `on_stop`); whoever built the agent
/// [`take`](Self::take)s it after the run.
#[derive(Debug)]
pub struct Outcome<T>(Arc<Mutex<Option<T>>>);

impl<T> Clone for Outcome<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Outcome<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(None)))
    }
}

impl<T> Outcome<T> {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `value` in the slot (replacing what was there).
    pub fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }

    /// Takes the value out, if it was set.
    pub fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn the_value_set_by_one_clone_is_taken_by_another_once() {
        let kept = Outcome::new();
        let given = kept.clone();
        assert_eq!(kept.take(), None::<u32>);
        given.set(7);
        assert_eq!(kept.take(), Some(7));
        assert_eq!(kept.take(), None);
    }
}
