//! trustwatch's TC classifier: copies the handshake bytes of watched TCP connections to user
//! space and never touches the traffic.
//!
//! Consumes every packet of the interface it is attached to (ingress and egress; `lo`: ingress
//! only); produces, for TCP packets to or from a watched port (`PORTS`), a [`RecordHeader`]
//! followed by the frame's first bytes: the headers, plus the payload while the connection's
//! direction is inside its budget (`CONFIG.budget` bytes of stream from its start) and user space
//! has not marked the connection decided (a flag it sets in the connection's `CONNS` entry). SYN, FIN and RST packets are always sent
//! (headers only once the payload is no longer wanted); other packets past the budget are not.
//! Per-connection state (stream starts, bytes copied) lives in the LRU hash `CONNS`. Every
//! outcome is counted per CPU (`COUNTERS`), and a full buffer skips the record, never the packet.
//!
//! The verdict is always `TC_ACT_UNSPEC` (TCX: next program), whatever happens. Checksums are
//! not validated (egress checksums are partial). Lengths come from the IP header bounded by
//! `skb->len`, or `skb->len` alone when the IP length is 0 (GSO/GRO super-packets, BIG TCP).

#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path; this is never called.
    loop {}
}

use aya_ebpf::bindings::{
    BPF_F_CURRENT_CPU, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC,
};
use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_perf_event_output, bpf_skb_load_bytes};
use aya_ebpf::macros::{classifier, map};
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, PerfEventByteArray, RingBuf};
use aya_ebpf::programs::TcContext;
use trustwatch_ebpf::{
    BUFFER_RING, CONN_BASE0, CONN_BASE1, CONN_DECIDED, Config, ConnKey, ConnState, Counters,
    CpuState, LINK_ETHERNET, LINK_PER_IFACE, LINK_RAW_IP, MAX_CAPLEN, MAX_LISTED_PORTS,
    RECORD_HEADER_LEN, RING_RECORD_OVERHEAD, RecordHeader, flags,
};

#[map]
static PORTS: Array<u8> = Array::with_max_entries(65_536, 0);
#[map]
static CONNS: LruHashMap<ConnKey, ConnState> = LruHashMap::with_max_entries(65_536, 0);
#[map]
static IFACES: HashMap<u32, u32> = HashMap::with_max_entries(4_096, 0);
#[map]
static COUNTERS: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);
#[map]
static PERF_RECORDS: PerfEventByteArray = PerfEventByteArray::new(0);
#[map]
static RING_RECORDS: RingBuf = RingBuf::with_byte_size(4_096, 0);
/// Where a header outside the skb's linear data is copied to be read (see [`read`]).
#[map]
static SCRATCH: PerCpuArray<[u64; SCRATCH_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// The largest header [`read`] copies, an IPv6 header (40 bytes), rounded up; the last word
/// is [`forget`]'s.
const SCRATCH_WORDS: usize = 8;
const _: () = assert!(
    40 <= (SCRATCH_WORDS - 1) * 8,
    "forget's word lies past every header"
);

/// Set by user space before loading (`.rodata`: the verifier sees constants).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    budget: 65_536,
    buffer: 0,
    link: LINK_ETHERNET,
    any_port: 0,
    wakeup_bytes: 0,
    copy_headers: 0,
    nports: 0,
    ports: [0; MAX_LISTED_PORTS],
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u16 = 0x01;
const TCP_SYN: u16 = 0x02;
const TCP_RST: u16 = 0x04;
const TCP_ACK: u16 = 0x10;

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    vtc_flow: u32,
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: [u32; 4],
    daddr: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHdr {
    source: u16,
    dest: u16,
    seq: u32,
    ack_seq: u32,
    off_flags: u16,
    window: u16,
    check: u16,
    urg_ptr: u16,
}

#[classifier]
pub fn tc_capture(ctx: TcContext) -> i32 {
    let _ = capture(&ctx);
    TC_ACT_UNSPEC
}

/// A `CONFIG` field, read so the compiler cannot fold the default value in.
macro_rules! config {
    ($field:ident) => {
        // SAFETY: a plain read of an immutable global.
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$field) }
    };
}

/// The layer-3 facts the TCP step needs.
struct L3 {
    family: u16,
    src: [u32; 4],
    dst: [u32; 4],
    /// Offset of the TCP header.
    l4: u32,
    /// End of the IP packet (IP length bounded by `skb->len`).
    end: u32,
}

#[inline(always)]
fn capture(ctx: &TcContext) -> Option<()> {
    // SAFETY: the map value of a per-CPU array with one entry, this CPU's copy.
    let cpu = unsafe { &mut *COUNTERS.get_ptr_mut(0)? };
    let c = &mut cpu.counters;
    c.seen += 1;
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's context; these are plain context field reads.
    let (skb_len, ifindex, vlan_present, vlan_tci, vlan_proto, protocol) = unsafe {
        (
            (*skb).len,
            (*skb).ifindex,
            (*skb).vlan_present,
            (*skb).vlan_tci,
            (*skb).vlan_proto,
            (*skb).protocol,
        )
    };
    let mut link = config!(link);
    if link == LINK_PER_IFACE {
        link = IFACES.get_ptr(ifindex).map_or(LINK_ETHERNET, |p| {
            // SAFETY: a value pointer the lookup returned.
            unsafe { *p }
        });
    }
    let mut rec_flags = 0u16;
    let (l3_off, proto) = if link == LINK_RAW_IP {
        rec_flags |= flags::RAW_IP;
        // `skb->protocol` holds the big-endian EtherType in its low 16 bits.
        (0u32, u16::from_be(protocol as u16))
    } else {
        let mut off = 14u32;
        let mut ethertype = u16::from_be(read::<u16>(ctx, 12, c)?);
        // At most two tags in the data (QinQ); a tag in the skb metadata is not in the data.
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = u16::from_be(read::<u16>(ctx, off + 2, c)?);
            off += 4;
            if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
                ethertype = u16::from_be(read::<u16>(ctx, off + 2, c)?);
                off += 4;
            }
        }
        (off, ethertype)
    };
    let l3 = match proto {
        ETH_P_IP => ipv4(ctx, l3_off, skb_len, c)?,
        ETH_P_IPV6 => ipv6(ctx, l3_off, skb_len, c)?,
        _ => return None,
    };
    let tcp: TcpHdr = read(ctx, l3.l4, c)?;
    let sport = u16::from_be(tcp.source);
    let dport = u16::from_be(tcp.dest);
    if config!(any_port) == 0 && !watched(sport, dport) {
        return None;
    }
    c.matched += 1;
    let off_flags = u16::from_be(tcp.off_flags);
    let doff = u32::from(off_flags >> 12) * 4;
    if doff < 20 {
        return None;
    }
    let payload_off = l3.l4 + doff;
    let payload_len = l3.end.saturating_sub(payload_off);
    let syn = off_flags & TCP_SYN != 0;
    let control = off_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0;
    if payload_len == 0 && !control {
        // A pure acknowledgement: nothing to copy and no state to look at (half the packets of
        // a bulk transfer), so no key either.
        return None;
    }

    let (key, dir) = ConnKey::new(l3.family, l3.src, sport, l3.dst, dport);
    let dir_bit = 1u32 << dir;
    if syn {
        // A SYN may start a new connection on a 5-tuple this CPU remembers as spent.
        cpu.last_skip = 0;
    } else if !control && cpu.last_skip & dir_bit != 0 && key_eq(&cpu.last_key, &key) {
        // A bulk packet of a spent connection: no connection-table lookup.
        cpu.counters.skipped_bytes += u64::from(payload_len);
        return None;
    }
    let seq = u32::from_be(tcp.seq);
    let data_seq = if syn { seq.wrapping_add(1) } else { seq };
    let state = if payload_len > 0 || syn {
        conn_state(&key, syn && off_flags & TCP_ACK == 0, dir, data_seq)
    } else {
        None
    };
    let mut copy = 0u32;
    if let Some(st) = state {
        // SAFETY: a value pointer of the LRU map; concurrent updates from another CPU may
        // race, which only blurs the byte counts (the budget check is by sequence number).
        let st = unsafe { &mut *st };
        copy = budgeted(st, dir, data_seq, payload_len);
        if copy == 0 && payload_len > 0 {
            let spent = if st.flags & CONN_DECIDED != 0 {
                3
            } else if st.copied[dir & 1] >= config!(budget) {
                dir_bit
            } else {
                0
            };
            if spent != 0 {
                if cpu.last_skip != 0 && key_eq(&cpu.last_key, &key) {
                    cpu.last_skip |= spent;
                } else {
                    cpu.last_key = key;
                    cpu.last_skip = spent;
                }
            }
        }
    }
    let c = &mut cpu.counters;
    if copy == 0 && !control {
        c.skipped_bytes += u64::from(payload_len);
        return None;
    }
    let mut caplen = payload_off + copy;
    let mut truncated = copy < payload_len;
    if caplen > MAX_CAPLEN {
        caplen = MAX_CAPLEN;
        copy = MAX_CAPLEN.saturating_sub(payload_off);
        truncated = true;
    }
    // Never past the skb (the helpers fail beyond it).
    if caplen > skb_len {
        caplen = skb_len;
        copy = skb_len.saturating_sub(payload_off);
    }
    c.skipped_bytes += u64::from(payload_len - copy);
    if truncated {
        rec_flags |= flags::TRUNCATED;
    }
    if vlan_present != 0 {
        rec_flags |= flags::VLAN;
    }
    let hdr = RecordHeader {
        // SAFETY: no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ifindex,
        len: skb_len,
        caplen,
        flags: rec_flags,
        vlan_tci: vlan_tci as u16,
        vlan_proto: u16::from_be(vlan_proto as u16),
        _pad: 0,
        _reserved: 0,
    };
    let sent = if config!(buffer) == BUFFER_RING {
        ring_output(ctx, &hdr, caplen, c)
    } else {
        perf_output(ctx, &hdr, caplen)
    };
    if !sent {
        c.ring_full += 1;
        return None;
    }
    c.records += 1;
    c.record_bytes += u64::from(caplen);
    c.payload_bytes += u64::from(copy);
    if truncated {
        c.truncated += 1;
    }
    if let Some(st) = state {
        // SAFETY: as above.
        let st = unsafe { &mut *st };
        if dir == 0 {
            st.copied[0] = st.copied[0].saturating_add(copy);
        } else {
            st.copied[1] = st.copied[1].saturating_add(copy);
        }
    }
    Some(())
}

/// A header at `off`: read in place when it lies in the skb's linear data (no helper call),
/// else copied out with `bpf_skb_load_bytes` and counted (headers in paged data are rare but
/// possible; `CONFIG.copy_headers` takes this path for every header, for tests).
///
/// The program is built with misaligned loads allowed (`monitor/build.rs`), so the in-place
/// read is one load per field, not one per byte. The copy goes to this CPU's `SCRATCH` map
/// value, not to the stack: LLVM merges adjacent field loads into wider misaligned ones, which
/// the verifier accepts from packet and map memory but refuses on the stack.
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, off: u32, c: &mut Counters) -> Option<T> {
    const { assert!(core::mem::size_of::<T>() <= SCRATCH_WORDS * 8) };
    let start = ctx.data();
    let end = ctx.data_end();
    let at = start + off as usize;
    if config!(copy_headers) == 0 && at + core::mem::size_of::<T>() <= end {
        // SAFETY: the bounds were just checked against data_end (the verifier checks too).
        return Some(unsafe { (at as *const T).read_unaligned() });
    }
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the scratch value holds SCRATCH_WORDS * 8 bytes (asserted above); the helper
    // writes exactly size_of::<T>() of them or fails.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            off,
            scratch.cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
        )
    };
    if r != 0 {
        return None;
    }
    c.header_copies += 1;
    // SAFETY: the helper filled the bytes read here; T is plain data (headers, integers).
    Some(unsafe { scratch.cast::<T>().read_unaligned() })
}

/// The largest TCP header offset the IPv6 walk can reach: two VLAN tags, the IPv6 header and
/// four extension headers of the largest kind ((255 + 1) × 8 bytes).
const MAX_L4_V6: u32 = 22 + 40 + 4 * 2048;

/// `v` (at most [`MAX_L4_V6`]), with what the verifier knows of it forgotten but that bound:
/// written to this CPU's scratch map value and read back, since the verifier tracks the values
/// of stack slots but not of map values. Every way through the IPv6 extension-header walk then
/// goes on in one state and the rest of the program is verified once, not once per way: the
/// verifier processed 411,262 instructions for the costliest configuration without this (and
/// 964,960, of its limit of 1,000,000, before SYNs wrote their state without a lookup), 48,042
/// with it (`tests/ebpf.rs`, kernel 6.18; 48,473 once the ring's wakeup rule was added).
#[inline(always)]
fn forget(v: u32) -> Option<u32> {
    // The last word: past the largest header `read` copies there (40 of 64 bytes).
    let slot = SCRATCH
        .get_ptr_mut(0)?
        .cast::<u64>()
        .wrapping_add(SCRATCH_WORDS - 1)
        .cast::<u32>();
    // SAFETY: the scratch value holds SCRATCH_WORDS * 8 bytes, 8-byte aligned, and this is its
    // last word; volatile so the compiler does not pass `v` on in a register.
    let v = unsafe {
        core::ptr::write_volatile(slot, v);
        core::ptr::read_volatile(slot)
    };
    (v <= MAX_L4_V6).then_some(v)
}

/// Whether either port is watched: a compare against the listed ports (no map lookup), or the
/// `PORTS` map when there are more than fit in `CONFIG`.
#[inline(always)]
fn watched(sport: u16, dport: u16) -> bool {
    let n = config!(nports) as usize;
    if n > MAX_LISTED_PORTS {
        let map = |p: u16| PORTS.get(u32::from(p)).is_some_and(|v| *v != 0);
        return map(sport) || map(dport);
    }
    let mut i = 0;
    while i < MAX_LISTED_PORTS && i < n {
        // SAFETY: a plain read of an immutable global, index below its length.
        let p = unsafe { core::ptr::read_volatile(&raw const CONFIG.ports[i]) };
        if p == sport || p == dport {
            return true;
        }
        i += 1;
    }
    false
}

/// Key equality word by word (a derived `==` may become a `memcmp` call, which BPF lacks).
#[inline(always)]
fn key_eq(a: &ConnKey, b: &ConnKey) -> bool {
    a.port == b.port
        && a.family == b.family
        && a.addr[0][0] == b.addr[0][0]
        && a.addr[1][0] == b.addr[1][0]
        && a.addr[0][1] == b.addr[0][1]
        && a.addr[0][2] == b.addr[0][2]
        && a.addr[0][3] == b.addr[0][3]
        && a.addr[1][1] == b.addr[1][1]
        && a.addr[1][2] == b.addr[1][2]
        && a.addr[1][3] == b.addr[1][3]
}

#[inline(always)]
fn ipv4(ctx: &TcContext, off: u32, skb_len: u32, c: &mut Counters) -> Option<L3> {
    let ip: Ipv4Hdr = read(ctx, off, c)?;
    if ip.proto != IPPROTO_TCP || ip.ver_ihl >> 4 != 4 {
        return None;
    }
    if u16::from_be(ip.frag_off) & 0x1fff != 0 {
        // Not the first fragment: no TCP header here.
        c.fragments += 1;
        return None;
    }
    let ihl = u32::from(ip.ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let tot = u32::from(u16::from_be(ip.tot_len));
    Some(L3 {
        family: 4,
        src: [ip.saddr, 0, 0, 0],
        dst: [ip.daddr, 0, 0, 0],
        l4: off + ihl,
        end: ip_end(off, tot, skb_len),
    })
}

/// End of the IP packet: its own length (so Ethernet padding is not payload), bounded by
/// `skb->len`; `skb->len` alone when the length field is 0 (GSO/GRO beyond 64 KiB).
#[inline(always)]
fn ip_end(off: u32, ip_len: u32, skb_len: u32) -> u32 {
    if ip_len == 0 {
        skb_len
    } else {
        let end = off + ip_len;
        if end < skb_len { end } else { skb_len }
    }
}

#[inline(always)]
fn ipv6(ctx: &TcContext, off: u32, skb_len: u32, c: &mut Counters) -> Option<L3> {
    let ip: Ipv6Hdr = read(ctx, off, c)?;
    let mut next = ip.nexthdr;
    let mut l4 = off + 40;
    // Up to four extension headers (hop-by-hop, routing, destination options, fragment, AH).
    let mut i = 0;
    while i < 4 {
        i += 1;
        match next {
            0 | 43 | 60 => {
                let h: [u8; 2] = read(ctx, l4, c)?;
                next = h[0];
                l4 += (u32::from(h[1]) + 1) * 8;
            }
            51 => {
                let h: [u8; 2] = read(ctx, l4, c)?;
                next = h[0];
                l4 += (u32::from(h[1]) + 2) * 4;
            }
            44 => {
                let h: u32 = read(ctx, l4, c)?;
                let h = u32::from_be(h);
                next = (h >> 24) as u8;
                if (h & 0xfff8) != 0 {
                    c.fragments += 1;
                    return None;
                }
                l4 += 8;
            }
            _ => break,
        }
    }
    if next != IPPROTO_TCP {
        return None;
    }
    // Each way through the walk leaves `l4` in another range; forgotten, they go on as one.
    let l4 = forget(l4)?;
    let plen = u32::from(u16::from_be(ip.payload_len));
    Some(L3 {
        family: 6,
        src: ip.saddr,
        dst: ip.daddr,
        l4,
        end: if plen == 0 {
            skb_len
        } else {
            ip_end(off, plen + 40, skb_len)
        },
    })
}

/// The connection's state, created when missing (`None` when the map refuses). A SYN without
/// ACK (`syn`) starts a new connection on the 5-tuple, clearing an old one's decided mark: its
/// state, the stream of direction `dir` beginning at `data_seq`, is written without looking
/// for the old one first (in a reconnect storm that lookup misses in a cold bucket).
#[inline(always)]
fn conn_state(key: &ConnKey, syn: bool, dir: usize, data_seq: u32) -> Option<*mut ConnState> {
    if syn {
        let mut st = ConnState::default();
        if dir == 0 {
            st.base[0] = data_seq;
            st.flags = CONN_BASE0;
        } else {
            st.base[1] = data_seq;
            st.flags = CONN_BASE1;
        }
        CONNS.insert(key, st, 0).ok()?;
    } else if let Some(p) = CONNS.get_ptr_mut(key) {
        return Some(p);
    } else {
        CONNS.insert(key, ConnState::default(), 0).ok()?;
    }
    CONNS.get_ptr_mut(key)
}

/// Payload bytes of this segment to copy: the part inside the direction's budget, none once
/// user space marked the connection decided (it sets `CONN_DECIDED` in the state itself).
#[inline(always)]
fn budgeted(st: &mut ConnState, dir: usize, data_seq: u32, payload_len: u32) -> u32 {
    let (base_flag, base, copied) = if dir == 0 {
        (CONN_BASE0, &mut st.base[0], st.copied[0])
    } else {
        (CONN_BASE1, &mut st.base[1], st.copied[1])
    };
    if st.flags & base_flag == 0 {
        *base = data_seq;
        st.flags |= base_flag;
    }
    let base = *base;
    if payload_len == 0 || st.flags & CONN_DECIDED != 0 {
        return 0;
    }
    let budget = config!(budget);
    let offset = data_seq.wrapping_sub(base);
    if offset >= budget || copied >= budget {
        return 0;
    }
    let room = (budget - offset).min(budget - copied);
    payload_len.min(room)
}

/// `bpf_perf_event_output` with the skb as context: the kernel appends the frame's first
/// `caplen` bytes after the header (no copy loop in the program).
#[inline(always)]
fn perf_output(ctx: &TcContext, hdr: &RecordHeader, caplen: u32) -> bool {
    let flags = (u64::from(caplen) << 32) | BPF_F_CURRENT_CPU;
    // SAFETY: the map is a perf event array; `hdr` is valid for RECORD_HEADER_LEN bytes;
    // `caplen` is at most skb->len.
    let r = unsafe {
        bpf_perf_event_output(
            ctx.skb.skb.cast(),
            (&raw const PERF_RECORDS).cast_mut().cast(),
            flags,
            core::ptr::from_ref(hdr).cast_mut().cast(),
            RECORD_HEADER_LEN as u64,
        )
    };
    r == 0
}

/// A ring-buffer record in the smallest bucket that holds `caplen` bytes.
#[inline(always)]
fn ring_output(ctx: &TcContext, hdr: &RecordHeader, caplen: u32, c: &mut Counters) -> bool {
    if caplen <= 128 {
        ring_bucket::<128>(ctx, hdr, caplen, c)
    } else if caplen <= 512 {
        ring_bucket::<512>(ctx, hdr, caplen, c)
    } else if caplen <= 2048 {
        ring_bucket::<2048>(ctx, hdr, caplen, c)
    } else if caplen <= 4096 {
        ring_bucket::<4096>(ctx, hdr, caplen, c)
    } else if caplen <= 8192 {
        ring_bucket::<8192>(ctx, hdr, caplen, c)
    } else if caplen <= 16384 {
        ring_bucket::<16384>(ctx, hdr, caplen, c)
    } else {
        ring_bucket::<65536>(ctx, hdr, caplen, c)
    }
}

/// Reserves `RECORD_HEADER_LEN + N` bytes (a constant, as the verifier requires) and loads
/// `caplen` (1..=N) packet bytes after the header with a masked length.
#[inline(always)]
fn ring_bucket<const N: u32>(
    ctx: &TcContext,
    hdr: &RecordHeader,
    caplen: u32,
    c: &mut Counters,
) -> bool {
    let Some(mut entry) = RING_RECORDS.reserve_bytes(RECORD_HEADER_LEN + N as usize, 0) else {
        return false;
    };
    let p = entry.as_mut_ptr();
    // The verifier needs a length it can bound: 1..=N.
    let n = ((core::hint::black_box(caplen).wrapping_sub(1)) & (N - 1)) + 1;
    // SAFETY: the reservation is RECORD_HEADER_LEN + N bytes, 8-byte aligned; the header goes
    // first and at most N packet bytes after it.
    let r = unsafe {
        p.cast::<RecordHeader>().write(*hdr);
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            0,
            p.add(RECORD_HEADER_LEN).cast::<c_void>(),
            n,
        )
    };
    if r != 0 {
        entry.discard(BPF_RB_NO_WAKEUP as u64);
        return false;
    }
    let waiting = RING_RECORDS.query(BPF_RB_AVAIL_DATA as u64);
    let size = (RING_RECORD_OVERHEAD + RECORD_HEADER_LEN) as u64 + u64::from(N);
    let wake = if crosses(waiting, size) {
        c.wakeups += 1;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wake as u64);
    true
}

/// Whether the record of `size` bytes (ring header included) just reserved took the bytes
/// waiting for the reader (`waiting`, this record included) to a multiple of
/// `CONFIG.wakeup_bytes` or past one: then the reader is woken. It also reads on a short timer,
/// so between those points nobody is woken, and while it lags one record per `wakeup_bytes`
/// wakes it, not every record past the mark. Each wakeup is an inter-processor interrupt (a VM
/// exit in a VM): in the storm benchmark with a 256 KiB ring, waking for every record past the
/// mark cost 1,946–2,020 ns per packet and lost records, this rule 980–1,060 ns and none. A
/// mark two CPUs cross at once may wake nobody; the next mark or the timer does.
#[inline(always)]
fn crosses(waiting: u64, size: u64) -> bool {
    let every = u64::from(config!(wakeup_bytes));
    every == 0 || waiting / every != waiting.saturating_sub(size) / every
}
