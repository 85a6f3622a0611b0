//! The guest's network interfaces: `lo` up, and `eth0` given the address and default route the
//! host chose for it.
//!
//! The host passes them on the kernel command line as `wrenn.ip=ADDRESS/PREFIX` and
//! `wrenn.gw=GATEWAY`. The kernel leaves dotted parameters it does not know to
//! `/proc/cmdline`. Its own `ip=` autoconfiguration would do the same job, but it sleeps at boot
//! waiting for the link to settle: ~55 ms of a cold boot, measured under TCG, where a few ioctls
//! from envd take well under 5 ms.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The interface the host's TAP device appears as.
const INTERFACE: &str = "eth0";

/// How the host asked for `eth0` to be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddress {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("kernel command line parameter {0:?} is not ADDRESS/PREFIX or ADDRESS")]
    BadParameter(String),
    #[error("open control socket")]
    Socket(#[source] std::io::Error),
    #[error("{what} of {interface}")]
    Ioctl {
        what: &'static str,
        interface: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl GuestAddress {
    /// Reads `wrenn.ip` and `wrenn.gw` from a kernel command line; `None` without `wrenn.ip`.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<Self>, NetworkError> {
        let value = |key: &str| {
            // The last one counts, as with the kernel's own parameters.
            cmdline
                .split_ascii_whitespace()
                .rev()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        };
        let Some(ip) = value("wrenn.ip") else {
            return Ok(None);
        };
        let bad = || NetworkError::BadParameter(format!("wrenn.ip={ip}"));
        let (address, prefix_len) = match ip.split_once('/') {
            Some((address, prefix)) => (address, prefix.parse::<u8>().map_err(|_| bad())?),
            None => (ip, 32),
        };
        if prefix_len > 32 {
            return Err(bad());
        }
        let address = address.parse().map_err(|_| bad())?;
        let gateway = value("wrenn.gw")
            .map(|gw| {
                gw.parse()
                    .map_err(|_| NetworkError::BadParameter(format!("wrenn.gw={gw}")))
            })
            .transpose()?;
        Ok(Some(Self {
            address,
            prefix_len,
            gateway,
        }))
    }

    fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }
}

/// Brings `lo` up and, when the kernel command line asks for one, configures `eth0`.
pub fn configure() -> Result<(), NetworkError> {
    let socket = control_socket()?;
    set_up(&socket, "lo")?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(guest) = GuestAddress::from_cmdline(&cmdline)? else {
        return Ok(());
    };
    let mut request = interface_request(INTERFACE);
    request.ifr_ifru.ifru_addr = sockaddr(guest.address);
    ioctl(
        &socket,
        libc::SIOCSIFADDR,
        &mut request,
        ("set address", INTERFACE),
    )?;
    request.ifr_ifru.ifru_netmask = sockaddr(guest.netmask());
    ioctl(
        &socket,
        libc::SIOCSIFNETMASK,
        &mut request,
        ("set netmask", INTERFACE),
    )?;
    set_up(&socket, INTERFACE)?;
    if let Some(gateway) = guest.gateway {
        // SAFETY: rtentry is plain old data; all-zero is a valid value (no device, no flags).
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_gateway = sockaddr(gateway);
        route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: SIOCADDRT reads an rtentry, which `route` is, valid for the call; its
        // rt_dev is null, so the kernel picks the interface that reaches the gateway.
        if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCADDRT, &route) } < 0 {
            return Err(NetworkError::Ioctl {
                what: "add default route",
                interface: INTERFACE,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    tracing::debug!(?guest, "configured {INTERFACE}");
    Ok(())
}

fn control_socket() -> Result<OwnedFd, NetworkError> {
    // SAFETY: socket has no memory-safety preconditions.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(NetworkError::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn interface_request(name: &'static str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request
}

fn sockaddr(address: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes, and sockaddr is the generic view
    // the socket ioctls take of any address.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

fn ioctl(
    socket: &OwnedFd,
    request_code: libc::c_ulong,
    request: &mut libc::ifreq,
    (what, interface): (&'static str, &'static str),
) -> Result<(), NetworkError> {
    // SAFETY: every interface ioctl used here reads or writes an ifreq, which `request` is,
    // valid and writable for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request_code as _, request as *mut _) } < 0 {
        return Err(NetworkError::Ioctl {
            what,
            interface,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn set_up(socket: &OwnedFd, name: &'static str) -> Result<(), NetworkError> {
    let mut request = interface_request(name);
    ioctl(
        socket,
        libc::SIOCGIFFLAGS,
        &mut request,
        ("read flags", name),
    )?;
    // SAFETY: the union's flags member was just written by SIOCGIFFLAGS.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        ioctl(socket, libc::SIOCSIFFLAGS, &mut request, ("bring up", name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_and_gateway_from_the_command_line() {
        let line = "console=ttyS0 quiet wrenn.ip=172.16.0.2/24 wrenn.gw=172.16.0.1 reboot=t";
        let guest = GuestAddress::from_cmdline(line).unwrap().unwrap();
        assert_eq!(guest.address, Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(guest.prefix_len, 24);
        assert_eq!(guest.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(guest.gateway, Some(Ipv4Addr::new(172, 16, 0, 1)));
    }

    #[test]
    fn no_address_means_nothing_to_configure() {
        assert_eq!(
            GuestAddress::from_cmdline("console=ttyS0 ip=dhcp").unwrap(),
            None
        );
        // A longer key that starts the same is not ours.
        assert_eq!(GuestAddress::from_cmdline("wrenn.ipv6=::1").unwrap(), None);
    }

    #[test]
    fn a_bare_address_is_a_host_route_and_the_gateway_is_optional() {
        let guest = GuestAddress::from_cmdline("wrenn.ip=10.0.0.5")
            .unwrap()
            .unwrap();
        assert_eq!(guest.prefix_len, 32);
        assert_eq!(guest.netmask(), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(guest.gateway, None);
        let any = GuestAddress::from_cmdline("wrenn.ip=10.0.0.5/0")
            .unwrap()
            .unwrap();
        assert_eq!(any.netmask(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn malformed_parameters_are_named_in_the_error() {
        for line in [
            "wrenn.ip=172.16.0.2/33",
            "wrenn.ip=172.16.0/24",
            "wrenn.ip=172.16.0.2/x",
            "wrenn.ip=172.16.0.2/24 wrenn.gw=gateway",
        ] {
            let error = GuestAddress::from_cmdline(line).unwrap_err().to_string();
            assert!(error.contains("wrenn."), "{line}: {error}");
        }
    }
}
