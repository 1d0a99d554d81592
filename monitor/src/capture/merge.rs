//! Several inputs as one capture: packets merged by timestamp across files, like mergecap.
//!
//! Consumes opened [`Input`]s (rotated parts of one capture, captures of two interfaces, in any
//! argument order); produces their packets in timestamp order. Each input is
//! read in its own order (a capture whose clock stepped back stays as it was), and the merge takes
//! the earliest head among the inputs, ties going to the input that starts first — so the result
//! does not depend on the order of the arguments. One packet per input is held, nothing more.
//!
//! What a person should know about the inputs is reported as [`Notice`]s at the end: inputs that
//! overlap in time, gaps between consecutive inputs (a part missing?), a clock stepping back inside
//! an input, and arguments that were given out of time order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;

use super::file::Pages;
use super::input::Input;
use super::{Frame, Packet};
use crate::base::Timestamp;
use crate::base::human;
use crate::error::Result;

/// A gap between consecutive inputs longer than this is reported.
pub const GAP_REPORTED_US: i64 = 60_000_000;

/// Something about the inputs, reported once each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The arguments were not in time order; the merge put them in order.
    Reordered { order: Vec<PathBuf> },
    /// Two inputs cover a common time range (their packets interleave).
    Overlap {
        earlier: PathBuf,
        later: PathBuf,
        from: Timestamp,
        to: Timestamp,
    },
    /// No input has packets between the end of `before` and the start of `after`.
    Gap {
        before: PathBuf,
        after: PathBuf,
        from: Timestamp,
        to: Timestamp,
    },
    /// Inside one input the time goes back `times` times, by at most `largest_us`.
    BackInTime {
        input: PathBuf,
        times: u64,
        largest_us: i64,
        first_at_packet: u64,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Reordered { order } => {
                let names: Vec<String> = order.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "inputs given out of time order, merged by packet time: {}",
                    names.join(", ")
                )
            }
            Notice::Overlap {
                earlier,
                later,
                from,
                to,
            } => write!(
                f,
                "{} and {} overlap by {} ({from} to {to}): their packets were interleaved by timestamp",
                earlier.display(),
                later.display(),
                human::duration_us(to.since(*from)),
            ),
            Notice::Gap {
                before,
                after,
                from,
                to,
            } => write!(
                f,
                "no packets for {} between the end of {} ({from}) and the start of {} ({to}): a part of the capture missing?",
                human::duration_us(to.since(*from)),
                before.display(),
                after.display(),
            ),
            Notice::BackInTime {
                input,
                times,
                largest_us,
                first_at_packet,
            } => write!(
                f,
                "{}: packet time goes back {} (by up to {}, first at packet {first_at_packet}); its packets are kept in file order",
                input.display(),
                human::count(*times, "time", "times"),
                human::duration_us(*largest_us),
            ),
        }
    }
}

/// One input and its head packet.
struct Part {
    input: Input,
    /// Position among the arguments.
    arg: usize,
    head: Option<Packet>,
    /// [`Merged::next_frame`]: the read-ahead head, lent out as a frame.
    lent: Option<Packet>,
    times: Times,
}

/// The times of one input's packets, as read.
#[derive(Default)]
struct Times {
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    back_steps: u64,
    largest_back_us: i64,
    first_back_at: u64,
    packets: u64,
}

impl Times {
    fn see(&mut self, ts: Timestamp) {
        self.packets += 1;
        self.first.get_or_insert(ts);
        if let Some(last) = self.last
            && ts < last
        {
            if self.back_steps == 0 {
                self.first_back_at = self.packets;
            }
            self.back_steps += 1;
            self.largest_back_us = self.largest_back_us.max(last.since(ts));
        }
        self.last = Some(self.last.map_or(ts, |l| l.max(ts)));
    }
}

impl Part {
    /// Reads the next packet of this input into `head`.
    fn advance(&mut self) -> Result<()> {
        self.head = self.input.source.next_packet()?;
        if let Some(p) = &self.head {
            self.times.see(p.ts);
        }
        Ok(())
    }
}

/// The inputs of one analysis, merged by timestamp.
pub struct Merged {
    /// In time order of their first packets (inputs without packets last).
    parts: Vec<Part>,
    /// Min-heap of (head time, part index).
    heap: BinaryHeap<Reverse<(Timestamp, usize)>>,
}

impl Merged {
    /// Reads the first packet of every input and orders them (errors: the first failing input).
    pub fn new(inputs: Vec<Input>) -> Result<Merged> {
        let mut parts = Vec::with_capacity(inputs.len());
        for (arg, input) in inputs.into_iter().enumerate() {
            let mut part = Part {
                input,
                arg,
                head: None,
                lent: None,
                times: Times::default(),
            };
            part.advance()?;
            parts.push(part);
        }
        // Time order of the first packets; equal starts by name, then argument order, so that the
        // order of the arguments decides nothing a timestamp can.
        parts.sort_by(|a, b| {
            (
                a.times.first.is_none(),
                a.times.first,
                &a.input.label,
                a.arg,
            )
                .cmp(&(
                    b.times.first.is_none(),
                    b.times.first,
                    &b.input.label,
                    b.arg,
                ))
        });
        let heap = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.head.as_ref().map(|h| Reverse((h.ts, i))))
            .collect();
        Ok(Merged { parts, heap })
    }

    /// The next packet in timestamp order, `None` when every input is exhausted.
    pub fn next_packet(&mut self) -> Result<Option<Packet>> {
        let Some(Reverse((_, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let part = &mut self.parts[i];
        let pkt = part.head.take();
        part.advance()?;
        if let Some(h) = &part.head {
            self.heap.push(Reverse((h.ts, i)));
        }
        Ok(pkt)
    }

    /// With a single input, instead of [`Merged::next_packet`] (not both): the next packet as a
    /// frame borrowed from the reader's buffer (no copy, no merge), the first being the one
    /// [`Merged::new`] read ahead. `None` when the input is exhausted (or with several inputs).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        let [part] = self.parts.as_mut_slice() else {
            return Ok(None);
        };
        self.heap.clear();
        if let Some(head) = part.head.take() {
            part.lent = Some(head);
            return Ok(part.lent.as_ref().map(Packet::frame));
        }
        part.lent = None;
        let frame = part.input.source.next_frame()?;
        if let Some(f) = &frame {
            part.times.see(f.ts);
        }
        Ok(frame)
    }

    /// Total bytes of the inputs on disk (standard input counts 0).
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.input.size).sum()
    }

    /// Bytes of the inputs consumed so far (estimated).
    pub fn position(&self) -> u64 {
        self.parts.iter().map(|p| p.input.position()).sum()
    }

    /// The inputs, in time order.
    pub fn inputs(&self) -> impl Iterator<Item = &Input> {
        self.parts.iter().map(|p| &p.input)
    }

    /// With a single input that is a mapped file: its bytes and their pages (see
    /// [`FileSource::hand_over_map`](super::file::FileSource::hand_over_map)).
    pub fn hand_over_map(&mut self, keep_behind: usize) -> Option<(Bytes, Pages)> {
        match self.parts.as_mut_slice() {
            [part] => part.input.source.hand_over_map(keep_behind),
            _ => None,
        }
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The time of the first and the last packet of all inputs.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        let first = self.parts.iter().filter_map(|p| p.times.first).min()?;
        let last = self.parts.iter().filter_map(|p| p.times.last).max()?;
        Some((first, last))
    }

    /// What a person should know about the inputs (complete once every input is read).
    pub fn notices(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        if self.parts.iter().enumerate().any(|(i, p)| p.arg != i) {
            out.push(Notice::Reordered {
                order: self.parts.iter().map(|p| p.input.label.clone()).collect(),
            });
        }
        // Walk the inputs in time order, keeping the one that reaches furthest so far.
        let mut reach: Option<(Timestamp, usize)> = None;
        for (i, p) in self.parts.iter().enumerate() {
            let (Some(first), Some(last)) = (p.times.first, p.times.last) else {
                continue;
            };
            if let Some((end, j)) = reach {
                let before = self.parts[j].input.label.clone();
                let this = p.input.label.clone();
                if first < end {
                    out.push(Notice::Overlap {
                        earlier: before,
                        later: this,
                        from: first,
                        to: end.min(last),
                    });
                } else if first.since(end) > GAP_REPORTED_US {
                    out.push(Notice::Gap {
                        before,
                        after: this,
                        from: end,
                        to: first,
                    });
                }
            }
            if reach.is_none_or(|(end, _)| last > end) {
                reach = Some((last, i));
            }
        }
        for p in &self.parts {
            if p.times.back_steps > 0 {
                out.push(Notice::BackInTime {
                    input: p.input.label.clone(),
                    times: p.times.back_steps,
                    largest_us: p.times.largest_back_us,
                    first_at_packet: p.times.first_back_at,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
