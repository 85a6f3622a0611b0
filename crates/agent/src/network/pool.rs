//! Spare network slots, set up ahead of demand so that boots, clones and resumes do not wait
//! for `ip` and `nft` (~10 ms of process spawns per slot).
//!
//! Spares are ordinary slots with internet blocked; a sandbox that may reach the internet gets
//! its element added to the host table when it takes one. A slot is never reused: released
//! slots are torn down as before, and the pool refills with fresh ones a moment after a burst
//! of demand, so refilling does not compete with the boots that emptied it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{InternetAccess, NetworkError, NetworkManager, NetworkSlot};

/// Pause before refilling, so a burst of boots finishes before spares are made again.
const REFILL_DELAY: Duration = Duration::from_millis(500);

/// The slot source of an agent: spares first, then fresh slots.
#[derive(Debug, Clone)]
pub struct SlotPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    manager: NetworkManager,
    spares: Mutex<Vec<NetworkSlot>>,
    target: usize,
    refilling: AtomicBool,
    closed: AtomicBool,
}

impl SlotPool {
    /// Wraps `manager` and starts filling `target` spares in the background.
    pub fn start(manager: NetworkManager, target: usize) -> Self {
        let pool = Self {
            inner: Arc::new(Inner {
                manager,
                spares: Mutex::new(Vec::new()),
                target,
                refilling: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        };
        pool.refill_later(Duration::ZERO);
        pool
    }

    pub fn manager(&self) -> &NetworkManager {
        &self.inner.manager
    }

    /// A slot with the given internet access: a spare when one is ready.
    pub async fn acquire(&self, internet: InternetAccess) -> Result<NetworkSlot, NetworkError> {
        let spare = self.inner.spares.lock().unwrap().pop();
        self.refill_later(REFILL_DELAY);
        let Some(mut slot) = spare else {
            return self.inner.manager.acquire(internet).await;
        };
        if internet == InternetAccess::Allowed {
            if let Err(e) = self.inner.manager.allow_internet(&mut slot).await {
                self.inner.manager.release(&slot).await;
                return Err(e);
            }
        }
        Ok(slot)
    }

    pub async fn release(&self, slot: &NetworkSlot) {
        self.inner.manager.release(slot).await;
    }

    /// Tears the spares down and stops refilling (agent shutdown).
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let spares = std::mem::take(&mut *self.inner.spares.lock().unwrap());
        for slot in &spares {
            self.inner.manager.release(slot).await;
        }
    }

    /// How many spares are ready now.
    pub fn spares(&self) -> usize {
        self.inner.spares.lock().unwrap().len()
    }

    fn refill_later(&self, delay: Duration) {
        let inner = Arc::clone(&self.inner);
        if inner.target == 0 || inner.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            while !inner.closed.load(Ordering::SeqCst)
                && inner.spares.lock().unwrap().len() < inner.target
            {
                match inner.manager.acquire(InternetAccess::Blocked).await {
                    Ok(slot) => {
                        if inner.closed.load(Ordering::SeqCst) {
                            inner.manager.release(&slot).await;
                            break;
                        }
                        inner.spares.lock().unwrap().push(slot);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "prepare a spare network slot");
                        break;
                    }
                }
            }
            inner.refilling.store(false, Ordering::SeqCst);
        });
    }
}
