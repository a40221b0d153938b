//! `Cancel`: the stop requests of Ctrl-C and signals, read by the executor and the runners.

use super::*;

/// Stop requests. The first asks for a stop at the next step boundary; the second aborts
/// running commands. While capstan cleans up (rollback, guard restores) only the second counts.
#[derive(Debug, Default)]
pub struct Cancel {
    stop: AtomicBool,
    abort: AtomicBool,
    cleanup: AtomicBool,
}

impl Cancel {
    /// Escalates: first call requests a stop, the second an abort of running commands.
    pub fn cancel(&self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            self.abort.store(true, Ordering::SeqCst);
        }
    }
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// A second Ctrl-C (or an embedder's second `cancel`): running commands are being killed.
    pub fn is_aborting(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
    /// Marks the start and end of cleanup work that a first stop request must not interrupt.
    pub(crate) fn set_cleanup(&self, on: bool) {
        self.cleanup.store(on, Ordering::SeqCst);
    }
    /// Whether work should stop here: always after an abort; after a stop request only outside
    /// steps (a step runs to its end so the journal stays consistent) and outside cleanup.
    pub fn should_stop(&self) -> bool {
        if self.is_aborting() {
            return true;
        }
        !self.cleanup.load(Ordering::SeqCst) && self.is_stopping() && current_step().is_none()
    }
    pub(crate) fn abort_flag(&self) -> &AtomicBool {
        &self.abort
    }
    /// Whether capstan is cleaning up (a rollback, guard restores).
    pub(crate) fn is_cleaning(&self) -> bool {
        self.cleanup.load(Ordering::SeqCst)
    }
}
