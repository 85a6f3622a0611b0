//! Leases on agent identities for agents that come and go on one machine — `wrenn run`, tests
//! and benchmarks. A lease is an exclusive lock file; it gives a distinct instance name and
//! slot network, so concurrent agents never collide, and the next holder of a lease reclaims
//! whatever a crashed holder left behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::config::AgentConfig;

/// A family of leases: instance names `<prefix><n>`, slot networks `10.<octet>.<4n>.0/22`.
#[derive(Debug, Clone, Copy)]
pub struct LeasePool {
    pub name: &'static str,
    pub prefix: &'static str,
    pub second_octet: u8,
    pub size: u32,
}

/// `wrenn run`.
pub const LOCAL_RUNS: LeasePool = LeasePool {
    name: "run",
    prefix: "run",
    second_octet: 201,
    size: 32,
};

/// Integration tests.
pub const TESTS: LeasePool = LeasePool {
    name: "test",
    prefix: "t",
    second_octet: 250,
    size: 60,
};

/// Benchmarks.
pub const BENCHES: LeasePool = LeasePool {
    name: "bench",
    prefix: "b",
    second_octet: 251,
    size: 8,
};

const LEASE_DIR: &str = "/run/wrenn/leases";
const INSTANCE_LOCK_DIR: &str = "/run/wrenn/instances";

/// No lease could be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("create lease directory {path} (are you root?)")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("all {size} {pool} leases are taken: too many agents of this kind are running")]
    Exhausted { pool: &'static str, size: u32 },
}

/// An exclusive identity, held until dropped.
#[derive(Debug)]
pub struct InstanceLease {
    pub index: u32,
    pool: LeasePool,
    _lock: File,
}

impl LeasePool {
    pub fn acquire(&self) -> Result<InstanceLease, LeaseError> {
        let dir = PathBuf::from(LEASE_DIR).join(self.name);
        std::fs::create_dir_all(&dir).map_err(|source| LeaseError::Dir {
            path: dir.clone(),
            source,
        })?;
        for index in 0..self.size.min(64) {
            let Ok(file) = File::create(dir.join(format!("{index}.lock"))) else {
                continue;
            };
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(InstanceLease {
                    index,
                    pool: *self,
                    _lock: file,
                });
            }
        }
        Err(LeaseError::Exhausted {
            pool: self.name,
            size: self.size,
        })
    }
}

/// Proof that this process is the only agent running an instance name, held until dropped.
/// A second agent with the same name would reclaim (kill) the first one's VMs at start-up.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceLockError {
    #[error("create lock directory {path} (are you root?)")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another wrenn-agent is already running instance {instance:?} on this host")]
    Held { instance: String },
}

impl InstanceLock {
    pub fn acquire(instance: &str) -> Result<Self, InstanceLockError> {
        let dir = PathBuf::from(INSTANCE_LOCK_DIR);
        let dir_error = |source| InstanceLockError::Dir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dir_error)?;
        let file = File::create(dir.join(format!("{instance}.lock"))).map_err(dir_error)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(InstanceLockError::Held {
                instance: instance.to_owned(),
            });
        }
        Ok(Self { _lock: file })
    }

    /// Like `acquire`, but waits up to `patience` for a holder that is on its way out (an
    /// agent restarted while the previous process of the same instance is still exiting).
    pub async fn acquire_waiting(
        instance: &str,
        patience: std::time::Duration,
    ) -> Result<Self, InstanceLockError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match Self::acquire(instance) {
                Err(InstanceLockError::Held { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }
}

impl InstanceLease {
    pub fn instance(&self) -> String {
        format!("{}{}", self.pool.prefix, self.index)
    }

    /// A /22 (256 slots) of its own.
    pub fn slot_network(&self) -> String {
        format!("10.{}.{}.0/22", self.pool.second_octet, self.index * 4)
    }

    /// Points `config` at this lease's instance name and slot network.
    pub fn apply(&self, config: &mut AgentConfig) {
        config.instance = self.instance();
        config.slot_network = self
            .slot_network()
            .parse()
            .expect("lease networks are valid");
        config.vmm = test_vmm();
    }
}

/// The VMM test agents use: `WRENN_TEST_VMM` (auto, qemu or firecracker), QEMU when unset, so
/// a suite runs the same on every host unless asked to run on Firecracker.
pub fn test_vmm() -> crate::config::VmmChoice {
    match std::env::var("WRENN_TEST_VMM") {
        Ok(choice) => choice
            .parse()
            .unwrap_or_else(|e| panic!("WRENN_TEST_VMM: {e}")),
        Err(_) => crate::config::VmmChoice::Qemu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_name_is_locked_once() {
        let first = InstanceLock::acquire("unit-test-instance").unwrap();
        let second = InstanceLock::acquire("unit-test-instance").unwrap_err();
        assert!(second.to_string().contains("already running"), "{second}");
        drop(first);
        InstanceLock::acquire("unit-test-instance").unwrap();
    }

    #[tokio::test]
    async fn a_starting_agent_waits_briefly_for_a_holder_on_its_way_out() {
        use std::time::{Duration, Instant};
        let holder = InstanceLock::acquire("unit-test-waiting").unwrap();
        let started = Instant::now();
        let error = InstanceLock::acquire_waiting("unit-test-waiting", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(error, InstanceLockError::Held { .. }));
        assert!(started.elapsed() >= Duration::from_millis(200));
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(holder);
        });
        InstanceLock::acquire_waiting("unit-test-waiting", Duration::from_secs(5))
            .await
            .expect("the lock is taken once its holder lets go");
        release.await.unwrap();
    }

    #[test]
    fn leases_are_exclusive_and_map_to_distinct_identities() {
        let pool = LeasePool {
            name: "unit-test",
            prefix: "u",
            second_octet: 252,
            size: 3,
        };
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        assert_ne!(a.index, b.index);
        assert_ne!(a.instance(), b.instance());
        assert_ne!(a.slot_network(), b.slot_network());
        let mut config = AgentConfig::new("/tmp/x");
        a.apply(&mut config);
        assert!(config.validate().is_ok());
        let index = a.index;
        drop(a);
        let c = pool.acquire().unwrap();
        assert_eq!(c.index, index, "a released lease is reused");
    }
}
