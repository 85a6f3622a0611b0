//! Per-sandbox resource metrics: sampled from the VMM process every 500 ms while the sandbox
//! runs, kept in three tiers (10 min at full rate, 2 h of 30 s averages, 24 h of 5 min
//! averages), served for a time range, and flushed to the control plane on pause and destroy.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::now_ms;

pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One measurement (or an average of several).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    /// Host CPU used by the VMM, in percent of one core.
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// Bytes the sandbox's writable disk really occupies on the host.
    pub disk_bytes: u64,
}

/// A tier: samples no older than `keep`, each averaging `width` of time.
#[derive(Debug)]
struct Tier {
    width_ms: i64,
    keep_ms: i64,
    samples: VecDeque<Sample>,
    pending: Vec<Sample>,
}

impl Tier {
    fn new(width: Duration, keep: Duration) -> Self {
        Self {
            width_ms: width.as_millis() as i64,
            keep_ms: keep.as_millis() as i64,
            samples: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    fn push(&mut self, sample: Sample) {
        if self.width_ms <= SAMPLE_EVERY.as_millis() as i64 {
            self.samples.push_back(sample);
        } else {
            let window_start = self.pending.first().map(|s| s.at_ms);
            if window_start.is_some_and(|start| sample.at_ms - start >= self.width_ms) {
                let average = average(&self.pending);
                self.samples.push_back(average);
                self.pending.clear();
            }
            self.pending.push(sample);
        }
        while self
            .samples
            .front()
            .is_some_and(|oldest| sample.at_ms - oldest.at_ms > self.keep_ms)
        {
            self.samples.pop_front();
        }
    }
}

fn average(samples: &[Sample]) -> Sample {
    let n = samples.len().max(1) as f64;
    let sum = |f: fn(&Sample) -> f64| samples.iter().map(f).sum::<f64>() / n;
    Sample {
        at_ms: samples.last().map_or(0, |s| s.at_ms),
        cpu_percent: sum(|s| f64::from(s.cpu_percent)) as f32,
        rss_bytes: sum(|s| s.rss_bytes as f64) as u64,
        pss_bytes: sum(|s| s.pss_bytes as f64) as u64,
        disk_bytes: sum(|s| s.disk_bytes as f64) as u64,
    }
}

/// The three tiers of one sandbox.
#[derive(Debug)]
pub struct MetricsStore {
    tiers: [Tier; 3],
    /// Full-rate samples not yet flushed to the control plane.
    unflushed: Vec<Sample>,
}

impl Default for MetricsStore {
    fn default() -> Self {
        Self {
            tiers: [
                Tier::new(SAMPLE_EVERY, Duration::from_secs(10 * 60)),
                Tier::new(Duration::from_secs(30), Duration::from_secs(2 * 3600)),
                Tier::new(Duration::from_secs(300), Duration::from_secs(24 * 3600)),
            ],
            unflushed: Vec::new(),
        }
    }
}

impl MetricsStore {
    pub fn push(&mut self, sample: Sample) {
        for tier in &mut self.tiers {
            tier.push(sample);
        }
        // Bounded even if nobody ever flushes.
        if self.unflushed.len() >= 4096 {
            self.unflushed.remove(0);
        }
        self.unflushed.push(sample);
    }

    /// Samples of the last `range`, from the finest tier that covers it.
    pub fn range(&self, range: Duration) -> Vec<Sample> {
        let range_ms = range.as_millis() as i64;
        let since = now_ms() - range_ms;
        let tier = self
            .tiers
            .iter()
            .find(|tier| tier.keep_ms >= range_ms)
            .unwrap_or(&self.tiers[2]);
        tier.samples
            .iter()
            .filter(|s| s.at_ms >= since)
            .copied()
            .collect()
    }

    /// Full-rate samples since the last flush.
    pub fn take_unflushed(&mut self) -> Vec<Sample> {
        std::mem::take(&mut self.unflushed)
    }
}

/// Reads one VMM process's CPU time and memory, and a disk file's allocation.
#[derive(Debug)]
pub struct Sampler {
    pid: u32,
    disk: PathBuf,
    last: Option<(u64, Instant)>,
    clock_ticks: f64,
}

impl Sampler {
    pub fn new(pid: u32, disk: &Path) -> Self {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            pid,
            disk: disk.to_owned(),
            last: None,
            clock_ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
        }
    }

    /// A sample, or None once the process is gone.
    pub fn sample(&mut self) -> Option<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let ticks = cpu_ticks(&stat)?;
        let now = Instant::now();
        let cpu_percent = match self.last {
            Some((last_ticks, at)) => {
                let seconds = now.duration_since(at).as_secs_f64().max(1e-3);
                (((ticks.saturating_sub(last_ticks)) as f64 / self.clock_ticks) / seconds * 100.0)
                    as f32
            }
            None => 0.0,
        };
        self.last = Some((ticks, now));
        let rollup =
            std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid)).unwrap_or_default();
        Some(Sample {
            at_ms: now_ms(),
            cpu_percent,
            rss_bytes: rollup_kb(&rollup, "Rss:") * 1024,
            pss_bytes: rollup_kb(&rollup, "Pss:") * 1024,
            disk_bytes: crate::disk::allocated_bytes(&self.disk).unwrap_or(0),
        })
    }
}

/// utime + stime from /proc/<pid>/stat (fields 14 and 15; the command name may hold spaces).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14 → index 11.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rollup_kb(rollup: &str, key: &str) -> u64 {
    rollup
        .lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, cpu: f32) -> Sample {
        Sample {
            at_ms,
            cpu_percent: cpu,
            rss_bytes: 100,
            pss_bytes: 50,
            disk_bytes: 7,
        }
    }

    #[test]
    fn tiers_keep_their_windows_and_average() {
        let mut store = MetricsStore::default();
        let start = now_ms() - 3 * 3600 * 1000;
        // Three hours at full rate.
        for i in 0..(3 * 3600 * 2) {
            store.push(sample(start + i * 500, (i % 10) as f32));
        }
        let full = &store.tiers[0].samples;
        assert_eq!(full.len(), 1201, "10 minutes at 2 Hz");
        let mid = &store.tiers[1].samples;
        assert!(
            (239..=241).contains(&mid.len()),
            "2 h of 30 s averages, got {}",
            mid.len()
        );
        assert!(
            (mid[0].cpu_percent - 4.5).abs() < 0.01,
            "averages: {}",
            mid[0].cpu_percent
        );
        let long = &store.tiers[2].samples;
        assert!(
            (35..=37).contains(&long.len()),
            "3 h of 5 min averages, got {}",
            long.len()
        );
        assert_eq!(store.take_unflushed().len(), 4096);
        assert!(store.take_unflushed().is_empty());
    }

    #[test]
    fn ranges_pick_the_finest_tier_that_covers_them() {
        let mut store = MetricsStore::default();
        let now = now_ms();
        for i in 0..2400 {
            store.push(sample(now - (2400 - i) * 500, 1.0));
        }
        assert!((119..=121).contains(&store.range(Duration::from_secs(60)).len()));
        assert!(
            store.range(Duration::from_secs(3600)).len() < 80,
            "1 h comes from the 30 s tier"
        );
    }

    #[test]
    fn stat_parsing_handles_spaces_in_the_name() {
        let stat = "1234 (qemu system x86) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d");
        std::fs::write(&disk, vec![1u8; 8192]).unwrap();
        let mut sampler = Sampler::new(std::process::id(), &disk);
        let first = sampler.sample().unwrap();
        assert!(first.rss_bytes > 0 && first.pss_bytes > 0);
        assert!(first.disk_bytes >= 8192);
        assert!(Sampler::new(u32::MAX - 1, &disk).sample().is_none());
    }
}
