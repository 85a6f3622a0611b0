//! Spare network slots, ready before they are needed, so that boots, clones and resumes do not
//! wait for `ip` and `nft` (~10 ms of process spawns per slot), and pauses and destroys do not
//! wait for a namespace to be torn down.
//!
//! Spares come from two places:
//! * **fresh** slots, made in the background (internet blocked) a moment after a burst of
//!   demand, so refilling does not compete with the boots that emptied the pool;
//! * **recycled** slots: a released slot whose VMM is gone is scrubbed (its TAP free, its
//!   connection tracking table emptied) and kept, with its internet access, up to `keep`
//!   spares. Spares beyond `target` are torn down once demand has been quiet for `trim_after`.
//!
//! A slot whose scrub fails is torn down instead, as is every slot when `target` is 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{InternetAccess, NetworkError, NetworkManager, NetworkSlot};

/// Pause before refilling, so a burst of boots finishes before spares are made again.
const REFILL_DELAY: Duration = Duration::from_millis(500);

/// How many spares the pool keeps ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Spares kept ready at all times (fresh ones are made up to this many).
    pub target: usize,
    /// Most spares kept, counting recycled ones.
    pub keep: usize,
    /// Quiet time after which spares beyond `target` are torn down.
    pub trim_after: Duration,
}

impl PoolSettings {
    /// `target` spares; up to twice as many recycled ones are kept for 30 s of quiet.
    pub fn with_target(target: usize) -> Self {
        Self {
            target,
            keep: target * 2,
            trim_after: Duration::from_secs(30),
        }
    }
}

/// The slot source of an agent: spares first, then fresh slots.
#[derive(Debug, Clone)]
pub struct SlotPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    manager: NetworkManager,
    settings: PoolSettings,
    /// Ready slots; `None` once the pool is closed.
    spares: Mutex<Option<Vec<NetworkSlot>>>,
    last_demand: Mutex<Instant>,
    refilling: AtomicBool,
    trimming: AtomicBool,
}

impl SlotPool {
    /// Wraps `manager` and starts filling spares in the background.
    pub fn start(manager: NetworkManager, settings: PoolSettings) -> Self {
        let pool = Self {
            inner: Arc::new(Inner {
                manager,
                settings,
                spares: Mutex::new(Some(Vec::new())),
                last_demand: Mutex::new(Instant::now()),
                refilling: AtomicBool::new(false),
                trimming: AtomicBool::new(false),
            }),
        };
        pool.inner.refill_later(Duration::ZERO);
        pool
    }

    pub fn manager(&self) -> &NetworkManager {
        &self.inner.manager
    }

    /// A slot with the given internet access: a spare when one is ready, preferably one that
    /// already has that access.
    pub async fn acquire(&self, internet: InternetAccess) -> Result<NetworkSlot, NetworkError> {
        *self.inner.last_demand.lock().unwrap() = Instant::now();
        let spare = self.inner.take_spare(internet);
        self.inner.refill_later(REFILL_DELAY);
        let Some(mut slot) = spare else {
            return self.inner.manager.acquire(internet).await;
        };
        if let Err(e) = self.inner.manager.set_internet(&mut slot, internet).await {
            self.inner.manager.release(&slot).await;
            return Err(e);
        }
        Ok(slot)
    }

    /// Takes back a slot whose VMM has exited: kept as a spare when there is room and it
    /// scrubs clean, torn down otherwise.
    pub async fn release(&self, slot: NetworkSlot) {
        let inner = &self.inner;
        if inner.has_room() {
            match inner.manager.scrub(&slot) {
                Ok(()) => match inner.keep(slot) {
                    None => {
                        inner.trim_later();
                        return;
                    }
                    Some(slot) => return inner.manager.release(&slot).await,
                },
                Err(error) => {
                    tracing::warn!(netns = slot.netns, %error, "slot not reusable; tearing it down");
                }
            }
        }
        inner.manager.release(&slot).await;
    }

    /// Tears the spares down and stops refilling (agent shutdown).
    pub async fn close(&self) {
        let spares = self.inner.spares.lock().unwrap().take().unwrap_or_default();
        for slot in &spares {
            self.inner.manager.release(slot).await;
        }
    }

    /// The spares ready now.
    pub fn spares(&self) -> Vec<NetworkSlot> {
        self.inner
            .spares
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

impl Inner {
    fn take_spare(&self, internet: InternetAccess) -> Option<NetworkSlot> {
        let mut spares = self.spares.lock().unwrap();
        let spares = spares.as_mut()?;
        let index = spares
            .iter()
            .rposition(|slot| slot.internet == internet)
            .or(spares.len().checked_sub(1))?;
        Some(spares.remove(index))
    }

    fn has_room(&self) -> bool {
        self.spares
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|spares| spares.len() < self.settings.keep)
    }

    /// Adds a spare; gives it back when the pool closed or filled up meanwhile.
    fn keep(&self, slot: NetworkSlot) -> Option<NetworkSlot> {
        let mut spares = self.spares.lock().unwrap();
        match spares.as_mut() {
            Some(spares) if spares.len() < self.settings.keep => {
                spares.push(slot);
                None
            }
            _ => Some(slot),
        }
    }

    fn spare_count(&self) -> Option<usize> {
        self.spares.lock().unwrap().as_ref().map(Vec::len)
    }

    fn refill_later(self: &Arc<Self>, delay: Duration) {
        if self.settings.target == 0 || self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            while inner
                .spare_count()
                .is_some_and(|count| count < inner.settings.target)
            {
                match inner.manager.acquire(InternetAccess::Blocked).await {
                    Ok(slot) => {
                        if let Some(slot) = inner.keep(slot) {
                            inner.manager.release(&slot).await;
                            break;
                        }
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

    /// Tears down spares beyond `target` once demand has been quiet for `trim_after`.
    fn trim_later(self: &Arc<Self>) {
        let surplus = |inner: &Self| {
            inner
                .spare_count()
                .is_some_and(|count| count > inner.settings.target)
        };
        if !surplus(self) || self.trimming.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let quiet = inner.last_demand.lock().unwrap().elapsed();
                if let Some(wait) = inner.settings.trim_after.checked_sub(quiet) {
                    tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
                    continue;
                }
                // Oldest first: recent ones are the likeliest to be warm in every cache.
                let extra = {
                    let mut spares = inner.spares.lock().unwrap();
                    match spares.as_mut() {
                        Some(spares) => {
                            let count = spares.len().saturating_sub(inner.settings.target);
                            spares.drain(..count).collect()
                        }
                        None => Vec::new(),
                    }
                };
                for slot in &extra {
                    inner.manager.release(slot).await;
                }
                if !surplus(&inner) {
                    break;
                }
            }
            inner.trimming.store(false, Ordering::SeqCst);
            // A release may have come in while the flag was still up.
            inner.trim_later();
        });
    }
}
