//! Fan-out of one process's events: a bounded replay buffer for late subscribers plus a
//! bounded channel per live subscriber.
//!
//! The publisher awaits room in every live subscriber's channel, so a slow reader slows the
//! process down the way a full pipe would. Subscribing takes the replay and joins the live
//! set under one lock, so a subscriber sees every event exactly once.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::Event;

/// Output bytes kept for replay per process.
pub const REPLAY_LIMIT_BYTES: usize = 1 << 20;
/// Events queued per live subscriber before the publisher waits.
pub const SUBSCRIBER_CAPACITY: usize = 16;

/// What a new subscriber gets: everything buffered so far, then live events.
#[derive(Debug)]
pub struct Subscription {
    pub replay: Vec<Event>,
    /// `None` once the process has exited; the replay then ends with `Exited`.
    pub live: Option<mpsc::Receiver<Event>>,
}

#[derive(Debug)]
pub struct OutputLog {
    state: Mutex<LogState>,
    /// Serializes publishers so every subscriber sees events in replay order.
    publish: tokio::sync::Mutex<()>,
    replay_limit: usize,
    capacity: usize,
}

#[derive(Debug, Default)]
struct LogState {
    replay: VecDeque<Event>,
    replay_bytes: usize,
    subscribers: Vec<Subscriber>,
    next_id: u64,
    finished: bool,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    sender: mpsc::Sender<Event>,
}

impl Default for OutputLog {
    fn default() -> Self {
        Self::new(REPLAY_LIMIT_BYTES, SUBSCRIBER_CAPACITY)
    }
}

impl OutputLog {
    pub fn new(replay_limit: usize, capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            publish: tokio::sync::Mutex::new(()),
            replay_limit,
            capacity,
        }
    }

    /// Records an output event and delivers it to every live subscriber.
    pub async fn publish(&self, event: Event) {
        let _order = self.publish.lock().await;
        let senders = {
            let mut state = self.lock();
            if state.finished {
                return;
            }
            state.replay_bytes += event.output_len();
            state.replay.push_back(event.clone());
            while state.replay_bytes > self.replay_limit {
                match state.replay.pop_front() {
                    Some(old) => state.replay_bytes -= old.output_len(),
                    None => break,
                }
            }
            state.senders()
        };
        self.deliver(senders, event).await;
    }

    /// Records the final event, delivers it, and ends every subscription.
    pub async fn finish(&self, event: Event) {
        let _order = self.publish.lock().await;
        let senders = {
            let mut state = self.lock();
            if state.finished {
                return;
            }
            state.finished = true;
            state.replay.push_back(event.clone());
            // Dropping the stored senders ends each stream after its queued events.
            std::mem::take(&mut state.subscribers)
                .into_iter()
                .map(|subscriber| (subscriber.id, subscriber.sender))
                .collect()
        };
        self.deliver(senders, event).await;
    }

    pub fn subscribe(&self) -> Subscription {
        let mut state = self.lock();
        let replay = state.replay.iter().cloned().collect();
        if state.finished {
            return Subscription { replay, live: None };
        }
        let (sender, receiver) = mpsc::channel(self.capacity);
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.push(Subscriber { id, sender });
        Subscription {
            replay,
            live: Some(receiver),
        }
    }

    async fn deliver(&self, senders: Vec<(u64, mpsc::Sender<Event>)>, event: Event) {
        for (id, sender) in senders {
            if sender.send(event.clone()).await.is_err() {
                // The subscriber's stream was dropped.
                self.lock()
                    .subscribers
                    .retain(|subscriber| subscriber.id != id);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LogState {
    fn senders(&self) -> Vec<(u64, mpsc::Sender<Event>)> {
        self.subscribers
            .iter()
            .map(|subscriber| (subscriber.id, subscriber.sender.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::process::ExitInfo;

    fn out(text: &str) -> Event {
        Event::Stdout(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn exited() -> Event {
        Event::Exited(ExitInfo {
            exit_code: 0,
            signal: 0,
            timed_out: false,
            error: None,
            duration: Duration::ZERO,
        })
    }

    async fn drain(subscription: Subscription) -> Vec<Event> {
        let mut events = subscription.replay;
        if let Some(mut live) = subscription.live {
            while let Some(event) = live.recv().await {
                events.push(event);
            }
        }
        events
    }

    #[tokio::test]
    async fn replay_drops_oldest_output_beyond_limit() {
        let log = OutputLog::new(10, 4);
        for text in ["aaaa", "bbbb", "cccc", "dd"] {
            log.publish(out(text)).await;
        }
        let replay = log.subscribe().replay;
        assert_eq!(replay, [out("bbbb"), out("cccc"), out("dd")]);
        log.finish(exited()).await;
        let replay = log.subscribe().replay;
        assert_eq!(replay, [out("bbbb"), out("cccc"), out("dd"), exited()]);
    }

    #[tokio::test]
    async fn subscribers_see_each_event_once_in_order() {
        let log = std::sync::Arc::new(OutputLog::new(1 << 20, 2));
        log.publish(out("1")).await;
        let early = log.subscribe();
        let early_task = tokio::spawn(drain(early));
        log.publish(out("2")).await;
        let late = log.subscribe();
        let late_task = tokio::spawn(drain(late));
        for text in ["3", "4", "5"] {
            log.publish(out(text)).await;
        }
        log.finish(exited()).await;
        let expected = vec![out("1"), out("2"), out("3"), out("4"), out("5"), exited()];
        assert_eq!(early_task.await.unwrap(), expected);
        assert_eq!(late_task.await.unwrap(), expected);
        let after = log.subscribe();
        assert!(after.live.is_none());
        assert_eq!(after.replay, expected);
    }

    #[tokio::test]
    async fn dropped_subscribers_do_not_block_publishing() {
        let log = OutputLog::new(1 << 20, 1);
        let subscription = log.subscribe();
        drop(subscription);
        let publishing = async {
            for _ in 0..10 {
                log.publish(out("x")).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), publishing)
            .await
            .expect("publisher blocked on a dropped subscriber");
        assert!(log.lock().subscribers.is_empty());
    }

    #[tokio::test]
    async fn slow_subscribers_apply_backpressure() {
        let log = std::sync::Arc::new(OutputLog::new(1 << 20, 1));
        let mut subscription = log.subscribe();
        log.publish(out("fits")).await;
        let blocked = tokio::time::timeout(Duration::from_millis(50), log.publish(out("waits")));
        assert!(blocked.await.is_err(), "publish should wait for room");
        let live = subscription.live.as_mut().unwrap();
        assert_eq!(live.recv().await, Some(out("fits")));
    }
}
