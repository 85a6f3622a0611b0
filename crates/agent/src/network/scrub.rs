//! Work done inside a slot's network namespace from the agent itself, without spawning a
//! tool: switching on forwarding, and scrubbing a slot so the next sandbox can reuse it.
//!
//! A slot may be reused once its VMM is gone (nothing holds the TAP), the connection tracking
//! table of the namespace is empty and the host's connections marked as the slot's are gone,
//! so no state of the previous guest's connections leaks to the next one.

use std::fs::File;
use std::io;
use std::path::Path;

use super::netlink::{self, NetlinkSocket};
use super::{tap, TAP_NAME};

/// Runs `work` on a short-lived thread that has joined the namespace at `netns_path`.
/// Sockets, `/proc/sys/net` and `/dev/net/tun` all act in the namespace of the calling
/// thread, and a thread that joined one is never returned to a pool.
pub fn in_netns<T: Send>(
    netns_path: &Path,
    work: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let netns = File::open(netns_path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Turns on IPv4 forwarding in a namespace.
pub fn enable_forwarding(netns_path: &Path) -> io::Result<()> {
    in_netns(netns_path, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
    })
}

/// Makes a released slot fit for another sandbox: its TAP must be free and its connection
/// tracking table is emptied.
pub fn scrub(netns_path: &Path) -> io::Result<()> {
    in_netns(netns_path, || {
        ensure_tap_detached()?;
        flush_conntrack()
    })
}

/// Fails when a process (a VMM that did not exit) still has the slot's TAP open: attaching
/// to a single-queue TAP that has a reader fails with `EBUSY`; otherwise we attach and let go.
fn ensure_tap_detached() -> io::Result<()> {
    match tap::attach(TAP_NAME) {
        Ok(_attached) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
            Err(io::Error::other("the TAP is still attached to a VMM"))
        }
        Err(error) => Err(error),
    }
}

/// Netfilter netlink, conntrack subsystem: message kinds and attributes used here.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
/// Without a tuple: delete every entry (matching the mark filter, if any).
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;

/// Empties the calling thread's namespace's connection tracking table (all families).
fn flush_conntrack() -> io::Result<()> {
    NetlinkSocket::open(libc::NETLINK_NETFILTER)?.request(&conntrack_request(
        IPCTNL_MSG_CT_DELETE,
        netlink::ACK,
        None,
    ))
}

/// Deletes the agent namespace's connections whose mark, under `mask`, is `mark` (one slot's
/// with a full mask, see `nft::slot_mark`; all of an agent's with its slot network's mask): a
/// late reply to a previous guest's connection finds no entry and is not forwarded into the
/// slot's next guest.
pub fn flush_host_conntrack_marked(mark: u32, mask: u32) -> io::Result<()> {
    let request = conntrack_request(IPCTNL_MSG_CT_DELETE, netlink::ACK, Some((mark, mask)));
    match NetlinkSocket::open(libc::NETLINK_NETFILTER)?.request(&request) {
        // Nothing carried the mark.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Counts the calling thread's namespace's connections carrying `mark` (diagnostics, tests).
pub fn count_conntrack_marked(mark: u32) -> io::Result<usize> {
    let socket = NetlinkSocket::open(libc::NETLINK_NETFILTER)?;
    socket.send(&conntrack_request(
        IPCTNL_MSG_CT_GET,
        netlink::DUMP,
        Some((mark, u32::MAX)),
    ))?;
    let entry = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
    let mut count = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let received = socket.receive(&mut buffer)?;
        let mut messages = &buffer[..received];
        while messages.len() >= netlink::NLMSG_HEADER_LEN {
            let len = u32::from_ne_bytes(messages[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes([messages[4], messages[5]]);
            if kind == libc::NLMSG_DONE as u16 {
                return Ok(count);
            }
            if kind == libc::NLMSG_ERROR as u16 {
                netlink::parse_ack(messages)?;
            }
            if kind == entry {
                count += 1;
            }
            if len < netlink::NLMSG_HEADER_LEN || len > messages.len() {
                return Err(io::Error::other("malformed netlink message"));
            }
            messages = &messages[len.next_multiple_of(4).min(messages.len())..];
        }
    }
}

/// A conntrack request: `nfgenmsg` (family AF_UNSPEC: both, version 0, resource id 0) and an
/// optional (mark, mask) filter; conntrack values are big-endian.
fn conntrack_request(message: u16, flags: u16, mark: Option<(u32, u32)>) -> Vec<u8> {
    let kind = (NFNL_SUBSYS_CTNETLINK << 8) | message;
    let nfgenmsg = [0u8; 4];
    match mark {
        None => netlink::message(kind, flags, &nfgenmsg, &[]),
        Some((mark, mask)) => netlink::message(
            kind,
            flags,
            &nfgenmsg,
            &[
                (CTA_MARK, &mark.to_be_bytes()),
                (CTA_MARK_MASK, &mask.to_be_bytes()),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_request_is_a_conntrack_delete_with_ack() {
        let message = conntrack_request(IPCTNL_MSG_CT_DELETE, netlink::ACK, None);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes([message[4], message[5]]), 0x0102);
        assert_eq!(u16::from_ne_bytes([message[6], message[7]]), 0x0005);
        assert_eq!(&message[16..], &[0, 0, 0, 0]);
    }

    #[test]
    fn a_mark_filter_is_two_big_endian_attributes() {
        let message = conntrack_request(
            IPCTNL_MSG_CT_DELETE,
            netlink::ACK,
            Some((0x0afa_0002, u32::MAX)),
        );
        assert_eq!(message.len(), 36);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes([message[20], message[21]]), 8);
        assert_eq!(u16::from_ne_bytes([message[22], message[23]]), CTA_MARK);
        assert_eq!(&message[24..28], &[0x0a, 0xfa, 0x00, 0x02]);
        assert_eq!(
            u16::from_ne_bytes([message[30], message[31]]),
            CTA_MARK_MASK
        );
        assert_eq!(&message[32..36], &[0xff; 4]);
    }
}
