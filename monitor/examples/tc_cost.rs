//! What each path through the TC program costs, without traffic: the program is loaded (not
//! attached) with each buffer kind and run on synthetic frames with `BPF_PROG_TEST_RUN`, in 100
//! rounds of 1,000 runs per frame, the buffer drained between rounds as the source drains it;
//! the kernel reports the mean duration per run (its loop adds about 30 ns to every figure: an
//! empty program measured 33 ns here). Needs root (CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON).
//!
//! ```text
//! cargo run --release -p trustwatch --example tc_cost
//! ```

use std::ops::ControlFlow;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use trustwatch::capture::ebpf::buffers::Buffers;
use trustwatch::capture::ebpf::{BufferKind, EbpfOptions, load};
use trustwatch::config::Services;

/// An Ethernet/IPv4/TCP frame 10.0.0.2:`sport` → 10.0.0.1:`dport`.
fn frame(sport: u16, dport: u16, flags: u8, payload: usize, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(40 + payload).unwrap_or(u16::MAX);
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f.extend(std::iter::repeat_n(0x17u8, payload));
    f
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let services: Services = "10000".parse()?;
    let budget = EbpfOptions::default().budget;
    let cases = [
        ("unwatched port, pure ACK", frame(40000, 443, 0x10, 0, 1)),
        ("unwatched port, 1400 B", frame(40000, 443, 0x18, 1400, 1)),
        ("watched, pure ACK", frame(40000, 10000, 0x10, 0, 2)),
        // The first run creates the connection's state; later runs reset it (a new SYN).
        ("watched, SYN (copied)", frame(40000, 10000, 0x02, 0, 1)),
        (
            "watched, 1400 B past the budget",
            frame(40000, 10000, 0x18, 1400, 2 + budget as u32),
        ),
    ];
    println!("{:<34} {:>10} {:>10}", "path", "ring", "perf");
    let mut table: Vec<Vec<String>> = cases.iter().map(|(n, _)| vec![n.to_string()]).collect();
    for buffer in [BufferKind::Ring, BufferKind::Perf] {
        let opts = EbpfOptions {
            buffer,
            ..EbpfOptions::default()
        };
        let mut ebpf = load::load(&opts, &services, trustwatch_ebpf::LINK_ETHERNET)?;
        let mut buffers = Buffers::open(&mut ebpf, buffer, opts.buffer_size)?;
        let p: &mut SchedClassifier = ebpf
            .program_mut("tc_capture")
            .ok_or("no program")?
            .try_into()?;
        for (row, (_, f)) in table.iter_mut().zip(&cases) {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..100 {
                let mut o = TestRunOptions::new();
                o.data_in = Some(f);
                o.repeat = 1_000;
                total += p.test_run(o)?.duration;
                let _ = buffers.drain(u64::MAX, &mut |_, _| ControlFlow::Continue(()));
            }
            row.push(format!("{} ns", total.as_nanos() / 100));
        }
    }
    for row in table {
        println!("{:<34} {:>10} {:>10}", row[0], row[1], row[2]);
    }
    Ok(())
}
