//! A slot's links, addresses, neighbour entry and route, set up over route netlink
//! (`rtnetlink`) instead of spawning `ip`: one connection in the host namespace for the veth
//! pair's host end, one opened inside the slot's namespace for everything behind it.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{scrub, tap, SlotAddresses, GATEWAY_IP, GATEWAY_MAC, GUEST_IP, GUEST_MAC, TAP_NAME};

/// Name the sandbox-side end of the veth pair gets inside the namespace.
pub const NS_VETH: &str = "veth0";
/// Prefix length of a slot's veth link network.
const VETH_PREFIX: u8 = 30;
/// Prefix length of the guest network behind the TAP.
const GUEST_PREFIX: u8 = 24;

/// A failed set-up step, named after what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{step}")]
    Netlink {
        step: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{step}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

fn netlink(step: &'static str) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |source| LinkError::Netlink { step, source }
}

fn io_step(step: &'static str) -> impl FnOnce(io::Error) -> LinkError {
    move |source| LinkError::Io { step, source }
}

/// Creates the veth pair (its peer lands in `netns` as [`NS_VETH`]) and gives the host end
/// its address; then, inside the namespace, the peer's address, the guest's TAP with the
/// gateway's address and MAC, a permanent neighbour entry for the guest (its first packet never
/// waits on ARP) and the default route to the host.
pub async fn set_up_slot(
    netns_path: &Path,
    host_veth: &str,
    addrs: &SlotAddresses,
) -> Result<(), LinkError> {
    let netns = std::fs::File::open(netns_path).map_err(io_step("open the namespace"))?;
    let host = connect(None).map_err(io_step("connect to route netlink"))?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(NS_VETH.to_owned())
        .setns_by_fd(netns.as_raw_fd())
        .build();
    host.link()
        .add(
            LinkVeth::new(host_veth, NS_VETH)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build(),
        )
        .execute()
        .await
        .map_err(netlink("create the veth pair"))?;
    let host_index = index_of(&host, host_veth).await?;
    host.address()
        .add(host_index, IpAddr::V4(addrs.host_ip), VETH_PREFIX)
        .execute()
        .await
        .map_err(netlink("address the host end of the veth pair"))?;
    set_up(&host, host_index, "bring up the host end of the veth pair").await?;

    // The TAP is made by ioctl, on a thread inside the namespace that also opens the
    // namespace's netlink socket.
    let socket = scrub::in_netns(netns_path, || {
        tap::create_persistent(TAP_NAME)?;
        Socket::new(NETLINK_ROUTE)
    })
    .map_err(io_step("create the TAP"))?;
    let inside = connect(Some(socket)).map_err(io_step("connect to route netlink"))?;
    let lo = index_of(&inside, "lo").await?;
    set_up(&inside, lo, "bring up loopback").await?;
    let veth = index_of(&inside, NS_VETH).await?;
    inside
        .address()
        .add(veth, IpAddr::V4(addrs.ns_ip), VETH_PREFIX)
        .execute()
        .await
        .map_err(netlink("address the namespace end of the veth pair"))?;
    set_up(&inside, veth, "bring up the namespace end of the veth pair").await?;
    let tap = index_of(&inside, TAP_NAME).await?;
    inside
        .link()
        .set(
            LinkUnspec::new_with_index(tap)
                .address(mac_bytes(GATEWAY_MAC).to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(netlink("set the TAP's MAC"))?;
    inside
        .address()
        .add(tap, IpAddr::V4(GATEWAY_IP), GUEST_PREFIX)
        .execute()
        .await
        .map_err(netlink("address the TAP"))?;
    set_up(&inside, tap, "bring up the TAP").await?;
    inside
        .neighbours()
        .add(tap, IpAddr::V4(GUEST_IP))
        .link_layer_address(&mac_bytes(GUEST_MAC))
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(netlink("add the guest's neighbour entry"))?;
    inside
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(addrs.host_ip)
                .build(),
        )
        .execute()
        .await
        .map_err(netlink("add the default route"))?;
    Ok(())
}

/// A route netlink connection: in the calling thread's namespace (the host's: Tokio's
/// threads never change namespace), or over a socket opened in another one. The connection
/// task ends when the handle is dropped.
fn connect(socket: Option<Socket>) -> io::Result<Handle> {
    let socket = match socket {
        Some(socket) => socket,
        None => Socket::new(NETLINK_ROUTE)?,
    };
    // SAFETY: the descriptor comes from a socket we own and hand over here.
    let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
    let (connection, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(connection);
    Ok(handle)
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(netlink("look up a link"))?;
    link.map(|link| link.header.index).ok_or(LinkError::Io {
        step: "look up a link",
        source: io::Error::new(io::ErrorKind::NotFound, format!("no link named {name}")),
    })
}

async fn set_up(handle: &Handle, index: u32, step: &'static str) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(step))
}

/// The six bytes of a MAC written as `aa:bb:cc:dd:ee:ff`; our constants are well formed.
fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut bytes = [0u8; 6];
    for (byte, part) in bytes.iter_mut().zip(mac.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("MAC constant");
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_to_their_bytes() {
        assert_eq!(mac_bytes(GUEST_MAC), [0x02, 0x00, 0xac, 0x10, 0x00, 0x02]);
        assert_eq!(mac_bytes(GATEWAY_MAC), [0x02, 0x00, 0xac, 0x10, 0x00, 0x01]);
    }
}
