//! Chooses the CPU accelerator for guests at run time: hardware KVM when the host really has it,
//! software emulation (TCG) otherwise.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// How guest CPUs are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software CPU: slow but runs anywhere, including nested PVM hosts.
    Tcg,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator's choice: detect, or force one accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcceleratorChoice {
    #[default]
    Auto,
    Force(Accelerator),
}

impl FromStr for AcceleratorChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Force(Accelerator::Kvm)),
            "tcg" => Ok(Self::Force(Accelerator::Tcg)),
            other => Err(format!(
                "unknown accelerator {other:?}: use auto, kvm or tcg"
            )),
        }
    }
}

impl AcceleratorChoice {
    /// Resolves `Auto` by looking at this host.
    pub fn resolve(self) -> Accelerator {
        match self {
            Self::Force(accel) => accel,
            Self::Auto => detect(Path::new("/proc/cpuinfo"), Path::new("/dev/kvm")),
        }
    }
}

/// KVM only when the CPU advertises hardware virtualization (`vmx`/`svm`) *and* /dev/kvm opens.
/// Nested PVM hosts expose /dev/kvm without those flags; ordinary guests crash there, so they
/// get TCG.
pub fn detect(cpuinfo: &Path, kvm_device: &Path) -> Accelerator {
    let cpuinfo = std::fs::read_to_string(cpuinfo).unwrap_or_default();
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm_device)
        .is_ok();
    if cpu_has_hardware_virt(&cpuinfo) && kvm_opens {
        Accelerator::Kvm
    } else {
        Accelerator::Tcg
    }
}

fn cpu_has_hardware_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .flat_map(|line| line.split_whitespace())
        .any(|flag| flag == "vmx" || flag == "svm")
}

/// Address-space layout randomization inside guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestAslr {
    /// Off under TCG, on under KVM. Under TCG translated code is cached by guest virtual
    /// address, so randomized mappings make every new process translate its libraries afresh:
    /// measured on 2 cores, `/bin/true` took 32 ms with ASLR and 6 ms without. Guest processes
    /// all belong to the sandbox's user; the VM is the isolation boundary either way.
    #[default]
    Auto,
    On,
    Off,
}

impl FromStr for GuestAslr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "unknown guest ASLR setting {other:?}: use auto, on or off"
            )),
        }
    }
}

impl GuestAslr {
    pub fn enabled(self, accelerator: Accelerator) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => accelerator == Accelerator::Kvm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_flags_are_found_only_in_flags_lines() {
        assert!(cpu_has_hardware_virt("flags\t\t: fpu vme vmx sse\n"));
        assert!(cpu_has_hardware_virt("flags\t\t: fpu svm\n"));
        assert!(!cpu_has_hardware_virt("flags\t\t: fpu sse2 hypervisor\n"));
        assert!(!cpu_has_hardware_virt("model name\t: vmx svm\n"));
    }

    #[test]
    fn missing_kvm_device_means_tcg() {
        let dir = tempfile::tempdir().unwrap();
        let cpuinfo = dir.path().join("cpuinfo");
        std::fs::write(&cpuinfo, "flags : vmx\n").unwrap();
        assert_eq!(
            detect(&cpuinfo, &dir.path().join("no-kvm")),
            Accelerator::Tcg
        );
    }

    #[test]
    fn choice_parses() {
        assert_eq!("auto".parse(), Ok(AcceleratorChoice::Auto));
        assert_eq!(
            "tcg".parse(),
            Ok(AcceleratorChoice::Force(Accelerator::Tcg))
        );
        assert!("hvf".parse::<AcceleratorChoice>().is_err());
    }

    #[test]
    fn guest_aslr_is_off_by_default_only_under_tcg() {
        let auto: GuestAslr = "auto".parse().unwrap();
        assert!(auto.enabled(Accelerator::Kvm));
        assert!(!auto.enabled(Accelerator::Tcg));
        assert!("on".parse::<GuestAslr>().unwrap().enabled(Accelerator::Tcg));
        assert!(!"off"
            .parse::<GuestAslr>()
            .unwrap()
            .enabled(Accelerator::Kvm));
        assert!("maybe".parse::<GuestAslr>().is_err());
    }
}
