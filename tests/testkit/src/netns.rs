//! Network namespaces and a veth pair between two of them, made by the test and removed on drop
//! (needs root).
//!
//! Consumes nothing but `ip` (iproute2); produces a [`VethPair`]: a server namespace and a client
//! namespace joined by a veth pair with IPv4 and IPv6 addresses and extra client addresses, and
//! [`inject`], which sends raw frames (e.g. VLAN-tagged copies of real ones: kernels without
//! 802.1Q support cannot make VLAN interfaces, but still receive tagged frames). Code runs inside a
//! namespace on a thread that entered it ([`Netns::run`]); processes started from that thread
//! (Go and OpenSSL peers, trustwatch) inherit the namespace, and so do threads it spawns (the
//! rustls peers), so the testkit's peers work unchanged.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Result;

/// Runs `ip <args>`; Err with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// A unique short suffix for names in this process (interface names are at most 15 bytes).
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:x}{}",
        std::process::id() % 0xfffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
    file: File,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = format!("tw{prefix}{}", unique());
        ip(&["netns", "add", &name])?;
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(e.into());
            }
        };
        let ns = Netns { name, file };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a new thread that entered this namespace (and returns its result).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .map_err(|_| "a thread in the namespace panicked")?
        })
    }

    /// A handle another thread can use to enter this namespace.
    pub fn handle(&self) -> Result<NsHandle> {
        Ok(NsHandle(self.file.try_clone()?))
    }

    /// Moves the calling thread into this namespace (for good).
    pub fn enter(&self) -> Result<()> {
        enter(&self.file)
    }

    /// A command that runs inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

/// Enters a namespace from any thread (see [`Netns::handle`]).
pub struct NsHandle(File);

impl NsHandle {
    /// Moves the calling thread into the namespace (for good).
    pub fn enter(&self) -> Result<()> {
        enter(&self.0)
    }
}

fn enter(file: &File) -> Result<()> {
    // SAFETY: setns on a namespace file descriptor we own; it changes only this thread.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Addresses of one side of the pair.
#[derive(Clone, Copy, Debug)]
pub struct Side {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Side {
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

/// Two namespaces joined by a veth pair.
pub struct VethPair {
    /// Declared first: dropped first, which takes the veth pair with it.
    pub client_ns: Netns,
    pub server_ns: Netns,
    /// The server namespace's end (where the monitor attaches).
    pub server_if: String,
    pub client_if: String,
    /// Subnet number: addresses are `10.<net>.x.y` and `fd00:<net>::/64`.
    pub net: u8,
    pub server: Side,
    pub client: Side,
}

impl VethPair {
    /// A pair on 10.`net`.0.0/24 (server .1, client .2) and fd00:`net`::/64 (::1, ::2). `net`
    /// must be unique among tests running at the same time.
    pub fn new(net: u8) -> Result<VethPair> {
        let server_ns = Netns::new("s")?;
        let client_ns = Netns::new("c")?;
        let tag = unique();
        let server_if = format!("tws{tag}");
        let client_if = format!("twc{tag}");
        ip(&[
            "link",
            "add",
            &server_if,
            "netns",
            &server_ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            &client_ns.name,
        ])?;
        let server = Side {
            v4: Ipv4Addr::new(10, net, 0, 1),
            v6: Ipv6Addr::new(0xfd00, u16::from(net), 0, 0, 0, 0, 0, 1),
        };
        let client = Side {
            v4: Ipv4Addr::new(10, net, 0, 2),
            v6: Ipv6Addr::new(0xfd00, u16::from(net), 0, 0, 0, 0, 0, 2),
        };
        for (ns, ifname, side) in [
            (&server_ns, &server_if, server),
            (&client_ns, &client_if, client),
        ] {
            ns.ip(&["addr", "add", &format!("{}/24", side.v4), "dev", ifname])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/64", side.v6),
                "dev",
                ifname,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(VethPair {
            client_ns,
            server_ns,
            server_if,
            client_if,
            net,
            server,
            client,
        })
    }

    /// More client addresses (10.`net`.0.`first`… on the client end), returned in order.
    pub fn add_client_addresses(&self, first: u8, n: u8) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for i in 0..n {
            let a = Ipv4Addr::new(10, self.net, 0, first + i);
            self.client_ns
                .ip(&["addr", "add", &format!("{a}/32"), "dev", &self.client_if])?;
            out.push(IpAddr::V4(a));
        }
        Ok(out)
    }
}

/// Sends raw Ethernet frames out of `iface` (an AF_PACKET socket in the calling thread's network
/// namespace): on a veth they arrive at the peer as received frames — VLAN-tagged ones with the
/// outer tag moved into the skb metadata, as a NIC with VLAN offload delivers them.
pub fn inject(iface: &str, frames: &[Vec<u8>]) -> Result<()> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("{iface}: no such interface").into());
    }
    // SAFETY: a raw packet socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    let mut result = Ok(());
    for f in frames {
        // SAFETY: `f` and `addr` are valid for the call.
        let n = unsafe {
            libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            result = Err(std::io::Error::last_os_error().into());
            break;
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    result
}
