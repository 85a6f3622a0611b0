//! Keeps idle WebSockets open and notices peers that vanished.
//!
//! A stream can be silent for minutes (a command that prints nothing, a watch on a quiet
//! directory). Proxies close idle connections (nginx after 60 s by default), which would kill a
//! foreground process mid-run; a peer that vanished without closing (a laptop that slept)
//! would keep its stream, and its process, forever. So the server pings every `every`, and a
//! peer that sent nothing, not even a pong, for [`MISSED_PINGS`] intervals counts as gone.
//! Every WebSocket client answers pings by itself (RFC 6455).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Intervals without a frame from the peer after which it counts as gone.
pub const MISSED_PINGS: u32 = 3;

/// What is due at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping.
    Ping,
    /// The peer has been silent too long: treat it as gone.
    Silent,
}

/// The ping schedule of one socket.
#[derive(Debug)]
pub struct Keepalive {
    every: Duration,
    ticker: Interval,
    heard: Heard,
}

/// Records that the peer sent something; cheap to clone into the task reading its frames.
#[derive(Debug, Clone)]
pub struct Heard {
    since: Instant,
    /// Milliseconds after `since` of the last frame.
    last_ms: Arc<AtomicU64>,
}

impl Heard {
    pub fn now(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

impl Keepalive {
    pub fn new(every: Duration) -> Self {
        let now = Instant::now();
        let mut ticker = tokio::time::interval_at(now + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            every,
            ticker,
            heard: Heard {
                since: now,
                last_ms: Arc::default(),
            },
        }
    }

    /// The handle to call on every frame from the peer.
    pub fn heard(&self) -> Heard {
        self.heard.clone()
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) -> Beat {
        self.ticker.tick().await;
        if self.heard.silent_for() >= self.every * MISSED_PINGS {
            Beat::Silent
        } else {
            Beat::Ping
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_gives_up_on_a_silent_peer() {
        let mut keepalive = Keepalive::new(Duration::from_secs(20));
        let heard = keepalive.heard();
        let started = Instant::now();
        assert_eq!(keepalive.tick().await, Beat::Ping);
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        assert_eq!(keepalive.tick().await, Beat::Ping);
        // A pong at 50 s keeps the peer alive until 50 + 60 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        heard.now();
        assert_eq!(keepalive.tick().await, Beat::Ping); // 60 s
        assert_eq!(keepalive.tick().await, Beat::Ping); // 80 s
        assert_eq!(keepalive.tick().await, Beat::Ping); // 100 s
        assert_eq!(keepalive.tick().await, Beat::Silent); // 120 s: 70 s of silence
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_answers_is_gone_after_the_missed_pings() {
        let mut keepalive = Keepalive::new(Duration::from_secs(1));
        for _ in 1..MISSED_PINGS {
            assert_eq!(keepalive.tick().await, Beat::Ping);
        }
        assert_eq!(keepalive.tick().await, Beat::Silent);
    }
}
