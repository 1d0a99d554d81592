//! What trustwatch's TC program and user space share: the record header the program writes in
//! front of each copied packet, the per-connection key and state, the load-time configuration,
//! the per-CPU counters, and the map names. Defined once here and used by both sides (user space
//! through `aya::Pod`, behind the `user` feature).
//!
//! Consumes nothing; produces the layouts. The program itself is `src/main.rs`.

#![no_std]

/// Map and global names, as user space looks them up.
pub mod names {
    /// Watched server ports when there are more than [`MAX_LISTED_PORTS`](super::MAX_LISTED_PORTS)
    /// (else they are listed in `Config::ports`): `Array<u8>` of 65536 entries, non-zero =
    /// watched.
    pub const PORTS: &str = "PORTS";
    /// Per-connection state: `LruHashMap<ConnKey, ConnState>`. User space sets
    /// [`CONN_DECIDED`](super::CONN_DECIDED) in an entry when the pipeline decided the
    /// connection (a SYN starting a new connection on the same 5-tuple clears it).
    pub const CONNS: &str = "CONNS";
    /// Per-interface link kind when one program serves several interfaces (`Config::link` =
    /// [`LINK_PER_IFACE`](super::LINK_PER_IFACE)): `HashMap<u32 ifindex, u32 LINK_*>`.
    pub const IFACES: &str = "IFACES";
    /// Per-CPU [`CpuState`](super::CpuState) (counters and the last skipped connection):
    /// `PerCpuArray<CpuState>` of one entry.
    pub const COUNTERS: &str = "COUNTERS";
    /// Perf event array (one buffer per CPU), used when `Config::buffer` is [`BUFFER_PERF`](super::BUFFER_PERF).
    pub const PERF: &str = "PERF_RECORDS";
    /// Ring buffer, used when `Config::buffer` is [`BUFFER_RING`](super::BUFFER_RING).
    pub const RING: &str = "RING_RECORDS";
    /// The load-time configuration global (`Config`).
    pub const CONFIG: &str = "CONFIG";
    /// The program's function (and ELF symbol) name.
    pub const PROGRAM: &str = "tc_capture";
}

/// `Config::buffer`: `bpf_perf_event_output` with the skb as context (the kernel appends the
/// packet bytes).
pub const BUFFER_PERF: u32 = 0;
/// `Config::buffer`: ring-buffer reservations of constant bucket sizes filled with
/// `bpf_skb_load_bytes`.
pub const BUFFER_RING: u32 = 1;

/// `Config::link` / `IFACES` values: an Ethernet header (also `lo`) precedes IP.
pub const LINK_ETHERNET: u32 = 0;
/// No link header: the packet starts with IP (WireGuard, IPIP, tun).
pub const LINK_RAW_IP: u32 = 1;
/// Look the interface up in `IFACES` (one program on several interfaces).
pub const LINK_PER_IFACE: u32 = 2;

/// Largest number of packet bytes in one record. A perf sample's size is 16 bits, so a record
/// (perf header, our header, packet bytes) must stay under 64 KiB; ring records use the same
/// bound. Packets whose wanted bytes exceed it are cut and counted as truncated.
pub const MAX_CAPLEN: u32 = 65_024;

/// Ring-buffer bucket sizes (packet bytes after the header); each record reserves the smallest
/// bucket that holds its bytes. The last one holds [`MAX_CAPLEN`].
pub const RING_BUCKETS: [u32; 7] = [128, 512, 2048, 4096, 8192, 16384, 65536];

/// The ring buffer's own header in front of each record (length, flags, page offset: the
/// kernel's `BPF_RINGBUF_HDR_SZ`); it counts in the bytes waiting for the reader.
pub const RING_RECORD_OVERHEAD: usize = 8;

/// Record flags ([`RecordHeader::flags`]).
pub mod flags {
    /// The skb carried a VLAN tag in its metadata (stripped from the data): `vlan_tci` and
    /// `vlan_proto` are valid and user space puts the tag back after the MAC addresses.
    pub const VLAN: u16 = 1;
    /// Payload bytes were left out (budget, decided, or [`MAX_CAPLEN`](super::MAX_CAPLEN)).
    pub const TRUNCATED: u16 = 2;
    /// The packet starts with IP (no link header).
    pub const RAW_IP: u16 = 4;
}

/// Written in front of every copied packet; `caplen` packet bytes follow (from the start of
/// the frame: the Ethernet header, or IP for raw-IP links).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// The interface the program ran on.
    pub ifindex: u32,
    /// `skb->len`: the whole frame (a GSO/GRO super-packet counts once, at its full length).
    pub len: u32,
    /// Packet bytes that follow this header.
    pub caplen: u32,
    /// [`flags`].
    pub flags: u16,
    /// The VLAN TCI from the skb metadata (with [`flags::VLAN`]).
    pub vlan_tci: u16,
    /// The VLAN protocol (TPID) from the skb metadata, host byte order (0x8100 or 0x88a8).
    pub vlan_proto: u16,
    pub _pad: u16,
    pub _reserved: u32,
}

/// Size of [`RecordHeader`] in bytes.
pub const RECORD_HEADER_LEN: usize = core::mem::size_of::<RecordHeader>();

/// The two endpoints of a TCP connection, ordered so both directions give the same key: the
/// endpoint with the lower port first (the lower address when the ports are equal).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Addresses as loaded from the packet (network byte order in each word); IPv4 uses the
    /// first word only.
    pub addr: [[u32; 4]; 2],
    /// Ports, host byte order.
    pub port: [u16; 2],
    /// 4 or 6.
    pub family: u16,
    pub _pad: u16,
}

impl ConnKey {
    /// The key of a packet from (`src`, `sport`) to (`dst`, `dport`) and the index of the
    /// sender's direction in [`ConnState`] (0: the first endpoint of the key sent it).
    #[inline(always)]
    pub fn new(family: u16, src: [u32; 4], sport: u16, dst: [u32; 4], dport: u16) -> (Self, usize) {
        let src_first = if sport != dport {
            sport < dport
        } else {
            addr_le(&src, &dst)
        };
        let key = if src_first {
            ConnKey {
                addr: [src, dst],
                port: [sport, dport],
                family,
                _pad: 0,
            }
        } else {
            ConnKey {
                addr: [dst, src],
                port: [dport, sport],
                family,
                _pad: 0,
            }
        };
        (key, if src_first { 0 } else { 1 })
    }
}

/// `a <= b`, word by word (any total order works; both directions must agree).
#[inline(always)]
fn addr_le(a: &[u32; 4], b: &[u32; 4]) -> bool {
    if a[0] != b[0] {
        return a[0] < b[0];
    }
    if a[1] != b[1] {
        return a[1] < b[1];
    }
    if a[2] != b[2] {
        return a[2] < b[2];
    }
    a[3] <= b[3]
}

/// [`ConnState::flags`]: direction 0's stream start is known.
pub const CONN_BASE0: u32 = 1;
/// [`ConnState::flags`]: direction 1's stream start is known.
pub const CONN_BASE1: u32 = 2;
/// [`ConnState::flags`]: user space said the handshake is decided; no more payload is copied.
/// User space sets it with a read-modify-write of the entry; a byte count the program updated in
/// between may be lost, which only blurs the statistics.
pub const CONN_DECIDED: u32 = 4;

/// Per-connection state in the kernel (`CONNS`), by direction as in [`ConnKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    /// Sequence number of the first payload byte of each direction (SYN + 1, or the first
    /// segment seen when the connection was picked up midway).
    pub base: [u32; 2],
    /// Payload bytes copied per direction (never above the budget).
    pub copied: [u32; 2],
    /// `CONN_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// Watched ports listed in [`Config::ports`]; more go to the `PORTS` map (one more lookup).
pub const MAX_LISTED_PORTS: usize = 16;

/// Load-time configuration (the `CONFIG` global, set before the program is verified, so the
/// verifier prunes the branches it turns off).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Payload bytes copied per connection and direction (trustwatch's `--handshake-window`).
    pub budget: u32,
    /// [`BUFFER_PERF`] or [`BUFFER_RING`].
    pub buffer: u32,
    /// `LINK_*`.
    pub link: u32,
    /// Non-zero: every TCP port is watched (`--any-port`).
    pub any_port: u32,
    /// Ring buffer: records are submitted without waking the reader (it polls on a short timer)
    /// but for the record that takes the bytes waiting to a multiple of this many (0: every
    /// record wakes it). Saves a wakeup (an inter-processor interrupt, a VM exit in a VM) per
    /// record, also while the reader lags.
    pub wakeup_bytes: u32,
    /// Non-zero: every header is copied out with `bpf_skb_load_bytes` as if it lay outside the
    /// skb's linear data, the path real traffic rarely takes; tests set it to run that path on
    /// real traffic (0, the verifier removes the branch).
    pub copy_headers: u32,
    /// Number of ports in `ports`; above [`MAX_LISTED_PORTS`], the `PORTS` map is used.
    pub nports: u32,
    /// The watched ports (the first `nports`).
    pub ports: [u16; MAX_LISTED_PORTS],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            budget: 65_536,
            buffer: BUFFER_PERF,
            link: LINK_ETHERNET,
            any_port: 0,
            wakeup_bytes: 0,
            copy_headers: 0,
            nports: 0,
            ports: [0; MAX_LISTED_PORTS],
        }
    }
}

/// The program's counters, one copy per CPU (user space sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets the program ran on.
    pub seen: u64,
    /// TCP packets to or from a watched port.
    pub matched: u64,
    /// Records written to the buffer.
    pub records: u64,
    /// Packet bytes written to the buffer (headers and payload, after our record header).
    pub record_bytes: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
    /// Payload bytes of matched packets not copied (over budget, or decided).
    pub skipped_bytes: u64,
    /// Records lost because the buffer was full (the packet itself is untouched).
    pub ring_full: u64,
    /// Records whose payload was cut short (budget, decided, or the record size bound).
    pub truncated: u64,
    /// IPv4 fragments other than the first, skipped.
    pub fragments: u64,
    /// Headers copied out with `bpf_skb_load_bytes` because they were not in the skb's linear
    /// data (or `Config::copy_headers` asked for it).
    pub header_copies: u64,
    /// Times the program woke the ring buffer's reader (see `Config::wakeup_bytes`).
    pub wakeups: u64,
}

/// The per-CPU map value: the counters, and the last connection whose payload this CPU found it
/// must not copy (decided, or a direction's budget spent; both last until a SYN starts a new
/// connection on the 5-tuple), so a bulk transfer's packets skip the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    pub counters: Counters,
    pub last_key: ConnKey,
    /// Bit `d` set: direction `d` of `last_key` copies nothing more.
    pub last_skip: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding fields: every bit pattern is
    // valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::RecordHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuState {}
}

// The layouts both sides rely on.
const _: () = assert!(RECORD_HEADER_LEN == 32);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 40);
const _: () = assert!(core::mem::size_of::<ConnState>() == 24);
const _: () = assert!(core::mem::size_of::<Config>() == 60);
const _: () = assert!(core::mem::size_of::<CpuState>() == 88 + 40 + 8);
const _: () = assert!(RING_BUCKETS[RING_BUCKETS.len() - 1] >= MAX_CAPLEN);
