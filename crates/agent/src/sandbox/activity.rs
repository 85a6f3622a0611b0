//! When a sandbox was last used, and how long it may idle before it is paused. Shared between
//! the sandbox's handle (callers touch it without waiting on the VM) and its owner task (which
//! pauses an idle sandbox).

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use super::now_ms;

#[derive(Debug)]
pub struct Activity {
    last_ms: AtomicI64,
    timeout_sec: AtomicU32,
}

impl Activity {
    pub fn new(timeout_sec: u32) -> Self {
        Self {
            last_ms: AtomicI64::new(now_ms()),
            timeout_sec: AtomicU32::new(timeout_sec),
        }
    }

    /// Records use now (exec, file operation, ping, resume).
    pub fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn last_ms(&self) -> i64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    pub fn timeout_sec(&self) -> u32 {
        self.timeout_sec.load(Ordering::Relaxed)
    }

    /// Sets the idle timeout (0 = never) and counts as activity.
    pub fn set_timeout(&self, seconds: u32) {
        self.timeout_sec.store(seconds, Ordering::Relaxed);
        self.touch();
    }

    /// Whether the sandbox has been idle longer than its timeout.
    pub fn expired(&self) -> bool {
        let timeout = self.timeout_sec();
        timeout > 0 && now_ms() - self.last_ms() >= i64::from(timeout) * 1000
    }

    /// How often the owner task checks for expiry: fine enough for second-granular timeouts.
    pub const CHECK_EVERY: Duration = Duration::from_millis(250);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_needs_a_timeout_and_idleness() {
        let activity = Activity::new(0);
        activity.last_ms.store(0, Ordering::Relaxed);
        assert!(!activity.expired(), "timeout 0 never expires");
        activity.timeout_sec.store(5, Ordering::Relaxed);
        assert!(activity.expired());
        activity.touch();
        assert!(!activity.expired());
        activity.set_timeout(0);
        activity.last_ms.store(0, Ordering::Relaxed);
        assert!(!activity.expired());
    }
}
