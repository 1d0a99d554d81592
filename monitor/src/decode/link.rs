//! Link-layer shims etherparse does not provide (or that are simpler by hand): Linux cooked
//! capture v1/v2 headers, BSD NULL/LOOP loopback headers and PPPoE session headers.
//!
//! Each consumes the bytes at its header and produces what follows (with its EtherType where the
//! header names one), or a [`Skip`].

use etherparse::EtherType;

use super::Skip;

/// PPPoE session stage (RFC 2516).
pub(super) const PPPOE_SESSION: EtherType = EtherType(0x8864);

const SLL_LEN: usize = 16;
const SLL2_LEN: usize = 20;
const NULL_LEN: usize = 4;
const PPPOE_LEN: usize = 6;

/// PPP protocol numbers carried in a PPPoE session.
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

/// BSD address families for IPv4 and IPv6 (IPv6 differs per OS: NetBSD/OpenBSD 24, FreeBSD 28,
/// Darwin 30).
const AF_INET: u32 = 2;
const AF_INET6: [u32; 3] = [24, 28, 30];

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// Linux cooked capture v1: the protocol (an EtherType for IP) is at offset 14 of a 16-byte header.
pub(super) fn linux_sll(data: &[u8]) -> Result<(EtherType, &[u8]), Skip> {
    let proto = be16(data, 14).ok_or(Skip::Malformed)?;
    let rest = data.get(SLL_LEN..).ok_or(Skip::Malformed)?;
    Ok((EtherType(proto), rest))
}

/// Linux cooked capture v2: the protocol is the first field of a 20-byte header.
pub(super) fn linux_sll2(data: &[u8]) -> Result<(EtherType, &[u8]), Skip> {
    let proto = be16(data, 0).ok_or(Skip::Malformed)?;
    let rest = data.get(SLL2_LEN..).ok_or(Skip::Malformed)?;
    Ok((EtherType(proto), rest))
}

/// BSD loopback (NULL: family in the capturing host's byte order; LOOP: big-endian). The family
/// is a small number, so whichever byte order gives one is the right one.
pub(super) fn bsd_loopback(data: &[u8]) -> Result<&[u8], Skip> {
    let head: [u8; NULL_LEN] = data
        .get(..NULL_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Skip::Malformed)?;
    let le = u32::from_le_bytes(head);
    let family = if le <= 0xffff {
        le
    } else {
        u32::from_be_bytes(head)
    };
    if family == AF_INET || AF_INET6.contains(&family) {
        data.get(NULL_LEN..).ok_or(Skip::Malformed)
    } else {
        Err(Skip::NotTcp)
    }
}

/// A PPPoE session header (version/type 0x11, code 0) and the PPP protocol field; returns the IP
/// packet inside, bounded by the PPPoE length.
pub(super) fn pppoe_session(data: &[u8]) -> Result<&[u8], Skip> {
    let ver_type = *data.first().ok_or(Skip::Malformed)?;
    let code = *data.get(1).ok_or(Skip::Malformed)?;
    let len = usize::from(be16(data, 4).ok_or(Skip::Malformed)?);
    if ver_type != 0x11 || code != 0 {
        return Err(Skip::Malformed);
    }
    let body = data.get(PPPOE_LEN..).ok_or(Skip::Malformed)?;
    let body = body.get(..len.min(body.len())).ok_or(Skip::Malformed)?;
    // PPP protocol: two bytes, or one when protocol-field compression made it odd (RFC 1661 §6.5).
    let first = *body.first().ok_or(Skip::Malformed)?;
    let (proto, skip) = if first & 1 == 1 {
        (u16::from(first), 1)
    } else {
        (be16(body, 0).ok_or(Skip::Malformed)?, 2)
    };
    match proto {
        PPP_IPV4 | PPP_IPV6 => body.get(skip..).ok_or(Skip::Malformed),
        _ => Err(Skip::NotTcp),
    }
}
