//! A few netlink requests, sent by hand: the ones the agent makes on hot or frequent paths
//! (conntrack flushes, link deletion), where spawning `ip` or `conntrack` would cost more than
//! the work. Each request is one message acknowledged by the kernel. Sockets belong to the
//! network namespace of the thread that opens them (see `scrub::in_netns`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NLMSG_HEADER_LEN: usize = 16;
/// Request flags: ask for an acknowledgement, or for a dump.
pub const ACK: u16 = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
pub const DUMP: u16 = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;

/// A netlink socket of one protocol (`NETLINK_ROUTE`, `NETLINK_NETFILTER`), with a receive
/// timeout so that a kernel that never answers cannot hang the agent.
#[derive(Debug)]
pub struct NetlinkSocket(OwnedFd);

impl NetlinkSocket {
    pub fn open(protocol: libc::c_int) -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        let socket = Self(unsafe { OwnedFd::from_raw_fd(fd) });
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: the option value is a timeval that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for its length.
        let received = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(received as usize)
    }

    /// Sends one request made with [`ACK`] and waits for the kernel's verdict.
    pub fn request(&self, message: &[u8]) -> io::Result<()> {
        self.send(message)?;
        let mut reply = [0u8; 512];
        let received = self.receive(&mut reply)?;
        parse_ack(&reply[..received])
    }
}

/// One request: `nlmsghdr`, the protocol's fixed header, then attributes (type, value), each
/// padded to four bytes. Sequence numbers are not needed: one request is in flight at a time.
pub fn message(kind: u16, flags: u16, header: &[u8], attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut message = vec![0u8; NLMSG_HEADER_LEN];
    message.extend_from_slice(header);
    for (attribute, value) in attributes {
        message.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        message.extend_from_slice(&attribute.to_ne_bytes());
        message.extend_from_slice(value);
        message.resize(message.len().next_multiple_of(4), 0);
    }
    let length = message.len() as u32;
    message[0..4].copy_from_slice(&length.to_ne_bytes());
    message[4..6].copy_from_slice(&kind.to_ne_bytes());
    message[6..8].copy_from_slice(&flags.to_ne_bytes());
    message[8..12].copy_from_slice(&1u32.to_ne_bytes());
    message
}

/// Reads the kernel's `NLMSG_ERROR` answer: error 0 is the acknowledgement.
pub fn parse_ack(reply: &[u8]) -> io::Result<()> {
    if reply.len() < NLMSG_HEADER_LEN + 4 {
        return Err(io::Error::other("short netlink reply"));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::other(format!(
            "unexpected netlink reply type {kind}"
        )));
    }
    let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    match errno {
        0 => Ok(()),
        negative => Err(io::Error::from_raw_os_error(-negative)),
    }
}

/// Deletes a network interface of the calling thread's namespace by name (`RTM_DELLINK`);
/// deleting one end of a veth pair deletes both.
pub fn delete_link(name: &str) -> io::Result<()> {
    const RTM_DELLINK: u16 = 17;
    const IFLA_IFNAME: u16 = 3;
    // struct ifinfomsg: family, pad, type, index, flags, change, all zero: match by name.
    let ifinfomsg = [0u8; 16];
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    let request = message(RTM_DELLINK, ACK, &ifinfomsg, &[(IFLA_IFNAME, &ifname)]);
    NetlinkSocket::open(libc::NETLINK_ROUTE)?.request(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_length_kind_flags_and_padded_attributes() {
        let message = message(17, ACK, &[0u8; 16], &[(3, b"t0-1\0")]);
        // 16 header + 16 ifinfomsg + 4 attribute header + 5 bytes padded to 8.
        assert_eq!(message.len(), 16 + 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 44);
        assert_eq!(u16::from_ne_bytes([message[4], message[5]]), 17);
        assert_eq!(u16::from_ne_bytes([message[6], message[7]]), 0x0005);
        assert_eq!(u16::from_ne_bytes([message[32], message[33]]), 9);
        assert_eq!(u16::from_ne_bytes([message[34], message[35]]), 3);
        assert_eq!(&message[36..41], b"t0-1\0");
        assert_eq!(&message[41..], &[0, 0, 0]);
    }

    #[test]
    fn acks_and_errors_are_told_apart() {
        let mut reply = [0u8; 36];
        reply[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(parse_ack(&reply).is_ok());
        reply[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_ack(&reply).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(parse_ack(&reply[..10]).is_err());
        reply[4..6].copy_from_slice(&3u16.to_ne_bytes());
        assert!(parse_ack(&reply).is_err());
    }

    #[test]
    fn deleting_a_missing_link_names_the_problem() {
        let error = delete_link("wrenn-no-such").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENODEV));
    }
}
