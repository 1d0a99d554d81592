//! One record of the TC program → one [`Packet`].
//!
//! Consumes the bytes of a record (a [`RecordHeader`] and `caplen` frame bytes, as the ring or
//! perf buffer hands them over, possibly with trailing padding); produces the `Packet` libpcap
//! would have produced for the same frame: the VLAN tag that the kernel moved into the skb
//! metadata is put back after the MAC addresses (libpcap does the same from `PACKET_AUXDATA`),
//! so the decoder reports the same VLAN id; raw-IP links become [`LinkType::Raw`]. A record that
//! is too short for what its header claims is rejected (never panics).

use bytes::{BufMut as _, Bytes, BytesMut};
use trustwatch_ebpf::{RECORD_HEADER_LEN, RecordHeader, flags};

use super::super::{LinkType, Packet};
use super::clock::Clock;

/// Why a record could not become a packet (counted as source errors, never raised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRecord {
    /// Shorter than its header, or than the `caplen` it announces.
    Short,
}

/// The header of a record, read without alignment assumptions.
pub fn header(rec: &[u8]) -> Result<RecordHeader, BadRecord> {
    let head = rec.get(..RECORD_HEADER_LEN).ok_or(BadRecord::Short)?;
    // SAFETY: `head` holds RECORD_HEADER_LEN bytes and RecordHeader is plain integers (any bit
    // pattern is valid); read_unaligned has no alignment requirement.
    Ok(unsafe { head.as_ptr().cast::<RecordHeader>().read_unaligned() })
}

/// The frame bytes of a record (`caplen` of them, padding excluded).
pub fn frame<'a>(rec: &'a [u8], hdr: &RecordHeader) -> Result<&'a [u8], BadRecord> {
    let end = RECORD_HEADER_LEN
        .checked_add(hdr.caplen as usize)
        .ok_or(BadRecord::Short)?;
    rec.get(RECORD_HEADER_LEN..end).ok_or(BadRecord::Short)
}

/// Builds the packet of a record whose frame bytes are `frame` (in one or two pieces: a perf
/// sample may wrap around the end of its buffer).
pub fn packet(hdr: &RecordHeader, frame: [&[u8]; 2], clock: &Clock) -> Packet {
    let caplen = frame[0].len() + frame[1].len();
    let raw = hdr.flags & flags::RAW_IP != 0;
    let vlan = hdr.flags & flags::VLAN != 0 && !raw && caplen >= 12;
    let mut data = BytesMut::with_capacity(caplen + if vlan { 4 } else { 0 });
    if vlan {
        // MAC addresses, then the tag from the metadata, then the rest (EtherType on).
        let mut put = 12usize;
        for piece in frame {
            let n = put.min(piece.len());
            data.put_slice(&piece[..n]);
            put -= n;
        }
        data.put_u16(hdr.vlan_proto);
        data.put_u16(hdr.vlan_tci);
        let mut skip = 12usize;
        for piece in frame {
            let n = skip.min(piece.len());
            data.put_slice(&piece[n..]);
            skip -= n;
        }
    } else {
        data.put_slice(frame[0]);
        data.put_slice(frame[1]);
    }
    Packet {
        ts: clock.wall(hdr.ts_ns),
        linktype: if raw {
            LinkType::Raw
        } else {
            LinkType::Ethernet
        },
        data: Bytes::from(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hdr: &RecordHeader, frame: &[u8], pad: usize) -> Vec<u8> {
        // SAFETY: RecordHeader is plain integers; viewing it as bytes is sound.
        let head = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(hdr).cast::<u8>(), RECORD_HEADER_LEN)
        };
        let mut v = head.to_vec();
        v.extend_from_slice(frame);
        v.extend(std::iter::repeat_n(0xee, pad));
        v
    }

    fn hdr(caplen: usize, flags: u16) -> RecordHeader {
        RecordHeader {
            ts_ns: 1_500,
            ifindex: 3,
            len: 2_000,
            caplen: caplen as u32,
            flags,
            vlan_tci: 0x2064,
            vlan_proto: 0x8100,
            ..Default::default()
        }
    }

    #[test]
    fn slices_by_caplen_not_by_record_size() {
        let frame: Vec<u8> = (0..60).collect();
        let h = hdr(60, 0);
        let rec = record(&h, &frame, 7);
        let got = header(&rec).unwrap();
        assert_eq!(got, h);
        assert_eq!(frame_of(&rec, &got), &frame[..]);
        // Claims more than is there.
        let short = &rec[..RECORD_HEADER_LEN + 10];
        assert_eq!(super::frame(short, &got), Err(BadRecord::Short));
        assert_eq!(header(&rec[..RECORD_HEADER_LEN - 1]), Err(BadRecord::Short));
    }

    fn frame_of<'a>(rec: &'a [u8], h: &RecordHeader) -> &'a [u8] {
        super::frame(rec, h).unwrap()
    }

    #[test]
    fn puts_the_metadata_vlan_tag_back() {
        let frame: Vec<u8> = (0..40).collect();
        let h = hdr(40, flags::VLAN);
        // Split anywhere: the same bytes come out.
        for cut in [0, 5, 12, 13, 40] {
            let p = packet(&h, [&frame[..cut], &frame[cut..]], &Clock::new());
            assert_eq!(p.linktype, LinkType::Ethernet);
            assert_eq!(p.data.len(), 44);
            assert_eq!(&p.data[..12], &frame[..12]);
            assert_eq!(&p.data[12..16], &[0x81, 0x00, 0x20, 0x64]);
            assert_eq!(&p.data[16..], &frame[12..]);
        }
        let raw = packet(&hdr(40, flags::RAW_IP), [&frame, &[]], &Clock::new());
        assert_eq!(raw.linktype, LinkType::Raw);
        assert_eq!(&raw.data[..], &frame[..]);
    }
}
