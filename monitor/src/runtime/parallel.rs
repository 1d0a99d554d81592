//! Parallel offline analysis (`analyze --threads N`, N ≥ 2): the connections of one capture
//! shared out over N − 1 pipelines behind the reading thread (N busy threads, one per core: a
//! worker more than that was measured slower on 2 cores, the three threads taking turns), and
//! with one worker also a pipeline of the reader's own, their records put back in the order one
//! pipeline gives them.
//!
//! Consumes the frames of a capture, in order, on the calling thread; produces what the
//! [`Monitor`] produces from them single-threaded — the same records and events, in the same
//! order — because everything that decides an order is decided where all frames pass:
//!
//! - The reader (the calling thread) numbers every packet and hands it to the pipeline of its
//!   connection ([`Routes`] by [`flow_point`]: both directions go to the same pipeline): a
//!   worker's, or its own for a share of the connections ([`READER_PARTS_ONE_WORKER`]), which it
//!   analyses at once; frames that are not TCP then stay with the reader, which only counts them.
//!   The reader takes that share only beside one worker and only where analysing is the larger
//!   part of the work: in a capture whose first epoch is handshakes ([`Parallel::end_warmup`]).
//!   Otherwise — bulk transfers, established connections — reading is the larger part, and the
//!   reader hands every frame to the one worker without decoding it.
//!   A mapped capture file's frames are handed over as offsets into the map, which the worker
//!   reads in place; other frames are copied into the worker's batch, so the reader's buffer is
//!   free for the next read at once (measured: packets sharing the reader's buffers, one
//!   reference count per packet bounced between the cores and fresh buffers were allocated and
//!   zeroed, which cost more than this copy). From the packet times alone it decides, as one
//!   pipeline and one monitor would, when idle flows are swept ([`SweepSchedule`]: every worker
//!   is told, at that frame, with how far times went back so far, [`Disorder`], so every table
//!   closes exactly the idle flows) and when the detector ticks ([`TickSchedule`]).
//! - Each worker runs its own [`Pipeline`] on its frames, fetching each packet's bytes into its
//!   cache a dozen steps before it gets there (the reader touched only the record header, on
//!   the other core), and tags every record with where one
//!   pipeline would have produced it: the frame, then the step — ticks a gap owed before it, the
//!   frame's own records, the records an idle sweep at that frame closed (ordered by their flows'
//!   last packets, as one table sweeps), the tick after it — then, for a sweep, the flow's last
//!   packet (the items of other steps keep the order they were made in).
//! - Packets go in epochs of at most [`EPOCH_FRAMES`] packets or [`EPOCH_BYTES`] bytes, at most
//!   [`IN_FLIGHT`] epochs at a time: while the workers analyse one, the reader reads the next and
//!   judges the records of the one before — sorted by tag, the ticks between them — in the
//!   monitor (detector, certificate verdicts, sinks), and hands the judged records back to their
//!   worker to be freed there (where they were allocated: a free across threads costs both).
//!   Memory stays bounded by the epochs in flight, whatever the file size.
//! - A mapped capture's page-table work (mapping the pages ahead of the reader, releasing those
//!   every worker is done with) is planned by the reader at each epoch and done by whichever
//!   side has time ([`Parallel::send_epoch`]). On a bulk capture it is as much work as reading
//!   the records: done by the reader alone, it left the worker waiting (measured on 1 GiB of
//!   1500-byte segments, 2 threads: 72% of the samples on the reader, 0.195 s → 0.169 s).
//!
//! The limits are shared out: each pipeline gets the share of `--max-flows`, `--cert-cache` and
//! the flow and certificate memory budgets that it gets of the connections, so the whole run
//! stays within them. Records and events are identical to a single-threaded run's unless a limit
//! sheds or evicts state (one full table evicts other flows than several tables with a share
//! each: the counters say when it happened). Counters are the sums of the pipelines' (the
//! certificate cache's hits and parsed certificates, per pipeline cache, can be higher).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::{Monitor, TickSchedule};
use crate::base::{Timestamp, prefetch};
use crate::capture::file::{PageWork, Pages};
use crate::capture::{Frame, LinkType};
use crate::config::{Limits, Services};
use crate::decode;
use crate::flow::flow_point;
use crate::handshake::Connection;
use crate::pipeline::{Disorder, Pipeline, SweepSchedule};

/// Most frames in one epoch.
pub const EPOCH_FRAMES: usize = 16_384;
/// Most frame bytes in one epoch (all pipelines together).
pub const EPOCH_BYTES: usize = 4 << 20;
/// Epochs sent to the workers and not yet judged.
pub const IN_FLIGHT: usize = 3;
/// How many steps ahead a worker fetches a packet's bytes into its cache.
const AHEAD: usize = 12;
/// Bytes of a mapped capture mapped ahead of the reader at each epoch it sends.
const MAP_AHEAD: usize = 2 * EPOCH_BYTES;
/// Bytes of a mapped capture the reader itself keeps behind it, whatever the workers do: the
/// bound while no epoch is sent (a long damaged stretch has no frames). The workers' page work
/// releases what they are done with much sooner.
pub const READER_KEEPS: usize = 12 * EPOCH_BYTES;
const _: () = assert!(
    READER_KEEPS > (IN_FLIGHT + 1) * EPOCH_BYTES + MAP_AHEAD,
    "the reader's own release must leave the epochs in flight and the pages mapped ahead alone"
);

/// Where one pipeline and one monitor would have produced something: (frame number, step,
/// order within the step: for a sweep, the index of the flow's last packet, as one table sweeps;
/// else 0, the items of one step keeping the order they were made in, which the stable sort
/// keeps: one pipeline makes a frame's records, one reader its ticks). Finishing the capture
/// comes after every frame.
type Tag = (u64, u8, u64);

/// [`Tag`] steps, in the order a monitor takes them for one frame.
mod step {
    /// A tick a gap owed before the frame.
    pub const TICK_BEFORE: u8 = 0;
    /// A record the frame's own segment decided or closed.
    pub const FRAME: u8 = 1;
    /// A record an idle sweep after the frame closed (order: its flow's last packet).
    pub const SWEEP: u8 = 2;
    /// The tick after the frame.
    pub const TICK_AFTER: u8 = 3;
}

/// The frame number of the capture's end (drained flows sort after every frame).
const END: u64 = u64::MAX;

/// What a worker does, in order.
#[derive(Clone, Copy)]
enum Step {
    /// Analyse a packet.
    Packet(Packet),
    /// Close the flows idle at `now` (after packet `index`), packet times having gone back by
    /// up to `disorder_us` so far.
    Sweep {
        index: u64,
        now: Timestamp,
        disorder_us: i64,
    },
}

/// Packet number `index`, whose bytes are `len` bytes at `start` in its batch's
/// [`Batch::bytes`], or in the mapped file ([`Batch::mapped`]) when `mapped`.
#[derive(Clone, Copy)]
struct Packet {
    index: u64,
    ts: Timestamp,
    linktype: LinkType,
    mapped: bool,
    start: usize,
    len: usize,
}

impl Packet {
    /// The bytes it lies in: `file` (the mapped capture) or `copies` (its batch's).
    fn source<'a>(&self, file: &'a [u8], copies: &'a [u8]) -> &'a [u8] {
        if self.mapped { file } else { copies }
    }

    fn frame<'a>(&self, file: &'a [u8], copies: &'a [u8]) -> Frame<'a> {
        Frame {
            ts: self.ts,
            linktype: self.linktype,
            data: &self.source(file, copies)[self.start..self.start + self.len],
        }
    }
}

/// One epoch's work for one worker: its steps and its packets' bytes. A worker returns it
/// emptied with its records, and the reader fills it again (no allocation once warm).
#[derive(Default)]
struct Batch {
    steps: Vec<Step>,
    /// Copies of the packets that are not in the mapped file.
    bytes: Vec<u8>,
    /// The mapped file, when the capture is one (its packets are not copied).
    mapped: Option<Bytes>,
    /// The page-table work on the mapped file the reader handed this worker, done first.
    pages: Option<PageWork>,
}

enum Work {
    /// An epoch's batch, and the worker's records of an earlier epoch, judged, to free.
    Epoch { batch: Batch, spent: Spent },
    /// The capture ended: finalize every open flow.
    Finish,
}

/// Something to judge, in tag order (a record boxed: the epoch's items are sorted), with the
/// worker a record goes back to (`None`: the reader's own pipeline made it; it is freed here).
enum Item {
    Tick(Timestamp),
    Record {
        conn: Box<Connection>,
        worker: Option<usize>,
    },
}

type Tagged = Vec<(Tag, Item)>;

/// Judged records on their way back to the worker that allocated them, to be freed there. Kept
/// boxed as they came: unboxed they would be copied out of the worker's heap and freed here.
type Spent = Vec<Box<Connection>>;

/// A worker's answer to an epoch: its records, and the batch to fill again.
type Done = (Tagged, Batch);

struct Worker {
    /// Its pipeline, sent once the shares are decided ([`Parallel::decide`]).
    start: Option<SyncSender<Pipeline>>,
    work: SyncSender<Work>,
    done: Receiver<Done>,
    /// Its pipeline at the end (`None`: it never got one).
    thread: JoinHandle<Option<Pipeline>>,
    /// Emptied batches, to fill again.
    spare: Vec<Batch>,
    /// Judged records, to go back with the next epoch.
    spent: Spent,
}

/// Which pipeline analyses a connection, by its [`flow_point`]: the reader's own for points
/// below `reader_below`, the workers evenly for the rest.
#[derive(Clone, Copy, Debug)]
struct Routes {
    reader_below: u32,
    workers: usize,
    /// `workers / (2³² − reader_below)` in 64.64 fixed point: the rest of the range onto the
    /// workers by a multiplication, not a division per packet.
    scale: u128,
}

impl Routes {
    /// The reader takes `reader_parts` (fewer than [`PARTS`]) of [`PARTS`] of the connections,
    /// `workers` workers the rest.
    fn new(reader_parts: u32, workers: usize) -> Self {
        let reader_below =
            ((u64::from(reader_parts.min(PARTS - 1)) << 32) / u64::from(PARTS)) as u32;
        let span = (1u128 << 32) - u128::from(reader_below);
        Routes {
            reader_below,
            workers,
            scale: ((workers as u128) << 64) / span,
        }
    }

    /// The worker of the connection at `point`, `None` for the reader.
    #[inline]
    fn of(&self, point: u32) -> Option<usize> {
        let rest = u128::from(point.checked_sub(self.reader_below)?);
        Some(((rest * self.scale) >> 64).min(self.workers as u128 - 1) as usize)
    }
}

/// The unit of [`Routes::new`]'s shares.
const PARTS: u32 = 1024;
/// The reader's share of the connections beside one worker (2 threads): about a sixth. With
/// its own share the reader is as busy as the worker on handshakes, where analysing a flow costs
/// far more than reading and judging it (measured on 100,000 mutual-TLS handshakes, two rounds:
/// with none, the reader waited 78–97 ms of a 0.38–0.39 s run for the worker; with 192 parts
/// 3–8 ms, the worker 33–35 ms, runs of 0.35 s; with 128, 16–23 ms and 17–62 ms, 0.34–0.42 s;
/// with 256–320 the worker waited 75–117 ms). With more workers the reader is the busiest
/// already and takes none; nor with one worker on bulk, where reading is most of the work
/// ([`HANDSHAKE_FRAMES_DIV`]).
const READER_PARTS_ONE_WORKER: u32 = 160;

/// With one worker, the reader takes [`READER_PARTS_ONE_WORKER`] when at least one frame in
/// this many of the first epoch starts a TLS handshake record (the capture is mostly
/// handshakes, whose analysis outweighs reading them); else it takes none and decodes nothing,
/// every frame going to the worker. Measured on the bench files' first epochs: 21.2% of the
/// frames of 100,000 mutual-TLS handshakes start one, 2.9% of the bulk capture's. Two threads on
/// the bulk capture (1 GiB, medians of 7 interleaved runs): 1.27× with the share, 1.42× with none
/// but still decoding to route, 1.61× with none and no decoding.
const HANDSHAKE_FRAMES_DIV: usize = 10;
/// The content type of a TLS handshake record (RFC 8446 §5.1), its first byte.
const TLS_HANDSHAKE: u8 = 22;

/// Each of `workers` workers' share of the connections when the reader takes `reader_parts`.
fn worker_parts(reader_parts: u32, workers: usize) -> u32 {
    (PARTS - reader_parts) / workers as u32
}

/// Limits for a pipeline that gets `parts` of [`PARTS`] of the connections: that share of every
/// bound that adds up across tables.
fn share(limits: &Limits, parts: u32) -> Limits {
    let part = |n: usize| (n as u128 * u128::from(parts) / u128::from(PARTS)) as usize;
    Limits {
        max_flows: part(limits.max_flows).max(1),
        cert_cache: part(limits.cert_cache).max(1),
        flow_memory: part(limits.flow_memory),
        cert_memory: part(limits.cert_memory),
        ..limits.clone()
    }
}

fn work(
    start: Receiver<Pipeline>,
    me: usize,
    work: Receiver<Work>,
    done: SyncSender<Done>,
) -> Option<Pipeline> {
    let mut pipeline = start.recv().ok()?;
    let record = |tag: Tag, c: Connection| {
        let item = Item::Record {
            conn: Box::new(c),
            worker: Some(me),
        };
        (tag, item)
    };
    while let Ok(w) = work.recv() {
        let mut out: Tagged = Vec::new();
        let mut batch = match w {
            Work::Epoch { batch, spent } => {
                drop(spent);
                batch
            }
            Work::Finish => {
                pipeline
                    .finish_indexed(&mut |last, c| out.push(record((END, step::SWEEP, last), c)));
                let _ = done.send((out, Batch::default()));
                break;
            }
        };
        if let Some(pages) = batch.pages.take() {
            pages.run();
        }
        let Batch {
            steps,
            bytes,
            mapped,
            ..
        } = &mut batch;
        let file = mapped.as_deref().unwrap_or_default();
        for i in 0..steps.len() {
            // The packet AHEAD steps on, fetched while this one is analysed: the reader only
            // read its record header, on the other core.
            if let Some(Step::Packet(p)) = steps.get(i + AHEAD) {
                prefetch(p.source(file, bytes), p.start);
            }
            match steps[i] {
                Step::Packet(p) => {
                    let index = p.index;
                    pipeline.frame_at(p.frame(file, bytes), index, &mut |c| {
                        out.push(record((index, step::FRAME, 0), c));
                    });
                }
                Step::Sweep {
                    index,
                    now,
                    disorder_us,
                } => pipeline.tick_indexed(now, disorder_us, &mut |last, c| {
                    out.push(record((index, step::SWEEP, last), c));
                }),
            }
        }
        steps.clear();
        bytes.clear();
        batch.mapped = None;
        if done.send((out, batch)).is_err() {
            break;
        }
    }
    Some(pipeline)
}

/// The reader's side of a parallel run; feed it every frame with [`Parallel::on_frame`], then
/// [`Parallel::finish`].
pub struct Parallel<'m> {
    monitor: &'m mut Monitor,
    workers: Vec<Worker>,
    /// The reader's own pipeline, for its share of the connections ([`Routes`]).
    local: Pipeline,
    routes: Routes,
    /// With one worker, the first epoch's frames and sweeps until the shares are decided from
    /// them ([`Parallel::end_warmup`]), and how many of its frames start a TLS handshake record.
    warmup: Option<(Batch, usize)>,
    /// The reader's share decided in advance (tests), else from the first epoch.
    forced_parts: Option<u32>,
    /// What the pipelines are made with once the shares are decided.
    services: Services,
    limits: Limits,
    /// The epoch being filled: one batch per worker, and the ticks.
    batches: Vec<Batch>,
    ticks: Tagged,
    frames: usize,
    bytes: usize,
    /// Ticks of the epochs sent and not yet judged, oldest first, each with the [`Parallel::reach`]
    /// when it was sent.
    in_flight: VecDeque<(Tagged, usize)>,
    index: u64,
    sweeps: SweepSchedule,
    disorder: Disorder,
    tick_schedule: TickSchedule,
    /// The mapped capture file the frames are slices of, if it is one, and its pages.
    mapped: Option<Bytes>,
    pages: Option<Pages>,
    /// How far into the mapped file the frames handed over so far reach, and how far those of
    /// the epochs judged so far did (every worker is done with the bytes before that).
    reach: usize,
    judged_reach: usize,
    /// Whether every worker had the oldest epoch done before the reader asked for it: then the
    /// workers have time for the next page work, else the reader does it.
    workers_ahead: bool,
    epochs: usize,
}

/// Where `data` lies in `file`, if it does.
fn offset_in(file: &[u8], data: &[u8]) -> Option<usize> {
    let base = file.as_ptr() as usize;
    let at = (data.as_ptr() as usize).checked_sub(base)?;
    (at + data.len() <= file.len()).then_some(at)
}

impl<'m> Parallel<'m> {
    /// Starts `threads − 1` workers (at least 1) with pipelines over `services` and a share of
    /// `limits`; the calling thread is the reader.
    /// The monitor must be offline ([`Clock::PacketTime`](super::Clock::PacketTime)) and must
    /// not have seen a packet.
    pub fn start(
        monitor: &'m mut Monitor,
        threads: usize,
        services: &Services,
        limits: &Limits,
    ) -> std::io::Result<Self> {
        let n = threads.saturating_sub(1).max(1);
        let workers = (0..n)
            .map(|i| {
                let (start_tx, start_rx) = sync_channel(1);
                let (work_tx, work_rx) = sync_channel(IN_FLIGHT);
                let (done_tx, done_rx) = sync_channel(IN_FLIGHT);
                let thread = std::thread::Builder::new()
                    .name(format!("analyze-{i}"))
                    .spawn(move || work(start_rx, i, work_rx, done_tx))?;
                Ok(Worker {
                    start: Some(start_tx),
                    work: work_tx,
                    done: done_rx,
                    thread,
                    spare: Vec::new(),
                    spent: Vec::new(),
                })
            })
            .collect::<std::io::Result<_>>()?;
        let tick_schedule = monitor
            .ticks
            .expect("parallel analysis runs offline, in packet time");
        let mut parallel = Parallel {
            monitor,
            workers,
            local: Pipeline::new(services.clone(), share(limits, 0)),
            routes: Routes::new(0, n),
            warmup: (n == 1).then(|| (Batch::default(), 0)),
            forced_parts: None,
            services: services.clone(),
            limits: limits.clone(),
            batches: (0..n).map(|_| Batch::default()).collect(),
            ticks: Vec::new(),
            frames: 0,
            bytes: 0,
            in_flight: VecDeque::new(),
            index: 0,
            sweeps: SweepSchedule::default(),
            disorder: Disorder::default(),
            tick_schedule,
            mapped: None,
            pages: None,
            reach: 0,
            judged_reach: 0,
            workers_ahead: false,
            epochs: 0,
        };
        if n > 1 {
            // Several workers: the reader, the busiest already, only reads and judges.
            parallel.decide(0);
        }
        Ok(parallel)
    }

    /// The reader takes `reader_parts` of [`PARTS`] of the connections, the workers the rest:
    /// each pipeline is made with that share of the limits, and the workers start.
    fn decide(&mut self, reader_parts: u32) {
        let n = self.workers.len();
        self.routes = Routes::new(reader_parts, n);
        self.local = Pipeline::new(self.services.clone(), share(&self.limits, reader_parts));
        let parts = worker_parts(reader_parts, n);
        for w in &mut self.workers {
            let pipeline = Pipeline::new(self.services.clone(), share(&self.limits, parts));
            let started = w.start.take().is_some_and(|s| s.send(pipeline).is_ok());
            if !started {
                worker_died();
            }
        }
    }

    /// With one worker, at the end of the first epoch (or of a shorter capture): the reader's
    /// share is decided from that epoch ([`HANDSHAKE_FRAMES_DIV`]), then its frames and sweeps
    /// go where that puts them, as they would have from the start.
    fn end_warmup(&mut self) {
        let Some((mut pending, handshakes)) = self.warmup.take() else {
            return;
        };
        let frames = pending
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Packet(_)))
            .count();
        let parts = self.forced_parts.unwrap_or(
            if frames > 0 && handshakes * HANDSHAKE_FRAMES_DIV >= frames {
                READER_PARTS_ONE_WORKER
            } else {
                0
            },
        );
        self.decide(parts);
        let file = self.mapped.clone();
        let file = file.as_deref().unwrap_or_default();
        let Batch { steps, bytes, .. } = &mut pending;
        for step in steps.drain(..) {
            match step {
                Step::Packet(p) => self.dispatch(p.frame(file, bytes), p.index),
                Step::Sweep {
                    index,
                    now,
                    disorder_us,
                } => self.dispatch_sweep(index, now, disorder_us),
            }
        }
    }

    /// The frames will be slices of `file` (a mapped capture file): the workers read them there
    /// rather than from copies. Its `pages` are managed from here ([`Parallel::send_epoch`]);
    /// the reader keeps [`READER_KEEPS`] bytes behind it mapped.
    pub fn with_mapped(mut self, file: Bytes, pages: Pages) -> Self {
        self.mapped = Some(file);
        self.pages = Some(pages);
        self
    }

    /// One frame of the capture, in capture order.
    pub fn on_frame(&mut self, frame: Frame<'_>) {
        self.index += 1;
        let index = self.index;
        let ts = frame.ts;
        let ticks = &mut self.ticks;
        self.tick_schedule.catch_up(ts, |t| {
            ticks.push(((index, step::TICK_BEFORE, 0), Item::Tick(t)));
        });
        self.bytes += frame.data.len();
        self.disorder.see(ts);
        let sweep = self.sweeps.due(ts);
        self.dispatch(frame, index);
        if sweep {
            self.dispatch_sweep(index, ts, self.disorder.back_us());
        }
        if self.tick_schedule.after(ts) {
            self.ticks
                .push(((index, step::TICK_AFTER, 0), Item::Tick(ts)));
        }
        self.frames += 1;
        if self.frames >= EPOCH_FRAMES || self.bytes >= EPOCH_BYTES {
            self.end_warmup();
            self.send_epoch();
        }
    }

    /// Frame number `index` to the pipeline of its connection (kept aside while the shares are
    /// undecided).
    fn dispatch(&mut self, frame: Frame<'_>, index: u64) {
        let file = self.mapped.as_deref();
        if let Some((pending, handshakes)) = &mut self.warmup {
            let decoded = decode::decode(&frame);
            let starts = |s: decode::TcpSegment<'_>| s.payload.first() == Some(&TLS_HANDSHAKE);
            *handshakes += usize::from(decoded.is_ok_and(starts));
            push_packet(pending, file, &mut self.reach, index, frame);
            return;
        }
        if self.routes.reader_below == 0 && self.workers.len() == 1 {
            // Everything to the one worker, which decodes it.
            push_packet(&mut self.batches[0], file, &mut self.reach, index, frame);
            return;
        }
        let decoded = decode::decode(&frame);
        let worker = match &decoded {
            Ok(seg) => self.routes.of(flow_point(seg)),
            // Counted, nothing more: by the reader.
            Err(_) => None,
        };
        match worker {
            None => self.analyse_here(&frame, decoded, index),
            Some(w) => push_packet(&mut self.batches[w], file, &mut self.reach, index, frame),
        }
    }

    /// The idle sweep due after frame number `index`, at `now`, to every pipeline (kept aside
    /// while the shares are undecided).
    fn dispatch_sweep(&mut self, index: u64, now: Timestamp, disorder_us: i64) {
        let sweep = Step::Sweep {
            index,
            now,
            disorder_us,
        };
        if let Some((pending, _)) = &mut self.warmup {
            pending.steps.push(sweep);
            return;
        }
        for b in &mut self.batches {
            b.steps.push(sweep);
        }
        let ticks = &mut self.ticks;
        self.local.tick_indexed(now, disorder_us, &mut |last, c| {
            ticks.push(((index, step::SWEEP, last), reader_record(c)));
        });
    }

    /// Frame number `index`, of a connection of the reader's share: analysed at once, its
    /// records held with the epoch's ticks.
    fn analyse_here(
        &mut self,
        frame: &Frame<'_>,
        decoded: Result<decode::TcpSegment<'_>, decode::Skip>,
        index: u64,
    ) {
        let ticks = &mut self.ticks;
        self.local.decoded_at(frame, decoded, index, &mut |c| {
            ticks.push(((index, step::FRAME, 0), reader_record(c)));
        });
    }

    /// A sink failed (e.g. a closed pipe): reading on would produce nothing.
    pub fn has_failed(&self) -> bool {
        self.monitor.has_failed()
    }

    /// Hands the epoch being filled to the workers; judges the oldest epoch in flight once
    /// [`IN_FLIGHT`] are.
    ///
    /// A mapped file's page-table work comes with it: releasing the pages every worker is done
    /// with, mapping [`MAP_AHEAD`] bytes ahead of the reader. On a bulk capture that is as much
    /// work as the reading itself, so it goes where there is time: to a worker (one in turn) when
    /// the workers had the last epoch done before the reader asked for it, else the reader
    /// does it at once.
    fn send_epoch(&mut self) {
        let pages = self
            .pages
            .as_mut()
            .and_then(|p| p.plan(self.judged_reach, self.reach..self.reach + MAP_AHEAD));
        // The reader's, once the workers have their epoch: they are the side behind.
        let (mut given, kept) = if self.workers_ahead {
            (pages, None)
        } else {
            (None, pages)
        };
        let to = self.epochs % self.workers.len();
        self.epochs += 1;
        for (i, (w, batch)) in self.workers.iter_mut().zip(&mut self.batches).enumerate() {
            let next = w.spare.pop().unwrap_or_default();
            batch.mapped.clone_from(&self.mapped);
            if i == to {
                batch.pages = given.take();
            }
            let work = Work::Epoch {
                batch: std::mem::replace(batch, next),
                spent: std::mem::take(&mut w.spent),
            };
            if w.work.send(work).is_err() {
                worker_died();
            }
        }
        if let Some(work) = kept {
            work.run();
        }
        self.in_flight
            .push_back((std::mem::take(&mut self.ticks), self.reach));
        self.frames = 0;
        self.bytes = 0;
        while self.in_flight.len() >= IN_FLIGHT {
            self.judge_oldest();
        }
    }

    /// Collects the oldest epoch's records from every worker and judges them with its ticks,
    /// in tag order.
    fn judge_oldest(&mut self) {
        let Some((mut items, reach)) = self.in_flight.pop_front() else {
            return;
        };
        self.workers_ahead = true;
        for w in &mut self.workers {
            let done = match w.done.try_recv() {
                Err(TryRecvError::Empty) => {
                    self.workers_ahead = false;
                    w.done.recv().ok()
                }
                ready => ready.ok(),
            };
            match done {
                Some((out, batch)) => {
                    items.extend(out);
                    w.spare.push(batch);
                }
                None => worker_died(),
            }
        }
        self.judged_reach = reach;
        self.judge(items);
    }

    fn judge(&mut self, mut items: Tagged) {
        // Stable: a frame's records come from one pipeline, pushed in the order it made them,
        // so that order holds even where their tags are equal.
        items.sort_by_key(|(tag, _)| *tag);
        for (_, item) in items {
            match item {
                Item::Tick(t) => self.monitor.advance(t),
                Item::Record { mut conn, worker } => {
                    self.monitor.on_connection(&mut conn);
                    if let Some(w) = worker.and_then(|i| self.workers.get_mut(i)) {
                        w.spent.push(conn);
                    }
                }
            }
        }
    }

    /// The capture ended: the last epoch, then every worker's open flows (in the order of their
    /// last packets); the workers' counters and time span go into the monitor's pipeline, which
    /// the caller then finishes as usual ([`Monitor::finish`]).
    pub fn finish(mut self) {
        self.end_warmup();
        if self.frames > 0 {
            self.send_epoch();
        }
        while !self.in_flight.is_empty() {
            self.judge_oldest();
        }
        let mut items = Vec::new();
        for w in &self.workers {
            if w.work.send(Work::Finish).is_err() {
                worker_died();
            }
        }
        self.local.finish_indexed(&mut |last, c| {
            items.push(((END, step::SWEEP, last), reader_record(c)));
        });
        for w in &self.workers {
            match w.done.recv() {
                Ok((out, _)) => items.extend(out),
                Err(_) => worker_died(),
            }
        }
        self.judge(items);
        self.monitor.pipeline.absorb(&self.local);
        for w in self.workers.drain(..) {
            drop(w.work);
            match w.thread.join() {
                Ok(Some(pipeline)) => self.monitor.pipeline.absorb(&pipeline),
                Ok(None) => worker_died(),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

/// Frame number `index` into `batch`: as an offset into `file` (the mapped capture) when it
/// lies there, which `reach` then covers, else copied.
fn push_packet(
    batch: &mut Batch,
    file: Option<&[u8]>,
    reach: &mut usize,
    index: u64,
    frame: Frame<'_>,
) {
    let (mapped, start) = match file.and_then(|f| offset_in(f, frame.data)) {
        Some(at) => {
            *reach = (*reach).max(at + frame.data.len());
            (true, at)
        }
        None => {
            let start = batch.bytes.len();
            batch.bytes.extend_from_slice(frame.data);
            (false, start)
        }
    };
    batch.steps.push(Step::Packet(Packet {
        index,
        ts: frame.ts,
        linktype: frame.linktype,
        mapped,
        start,
        len: frame.data.len(),
    }));
}

/// A record of the reader's own pipeline, to judge.
fn reader_record(conn: Connection) -> Item {
    Item::Record {
        conn: Box::new(conn),
        worker: None,
    }
}

/// A worker's channel closed: it panicked (a bug); its thread's panic was printed, and the
/// run cannot give the records one pipeline would.
fn worker_died() -> ! {
    panic!("an analysis thread stopped");
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use trustwatch_testkit::hostile::{self, Pcap};
    use trustwatch_testkit::pki::Pki;

    use super::*;
    use crate::capture::file::{FileSource, resident_kib_of_map};
    use crate::detect::{DetectConfig, Detector};
    use crate::export::json::JsonLines;
    use crate::runtime::sinks::JsonSink;
    use crate::runtime::{Clock, OFFLINE_TICK_US};
    use crate::stats::Stats;
    use crate::trust::TrustedReference;

    /// JSON Lines written where the test reads them back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A monitor as `analyze` makes one (default services and limits, packet time), no sinks.
    fn offline_monitor() -> (Monitor, Services, Limits) {
        let services = Services::default();
        let limits = Limits::default();
        let detector = Detector::new(
            DetectConfig {
                services: services.clone(),
                ..DetectConfig::default()
            },
            TrustedReference::default(),
        );
        let clock = Clock::PacketTime {
            every_us: OFFLINE_TICK_US,
        };
        let pipeline = Pipeline::new(services.clone(), limits.clone());
        (Monitor::new(pipeline, detector, clock), services, limits)
    }

    /// The capture's JSON Lines and counters (without the per-pipeline certificate cache's),
    /// analysed on `threads` threads, the file mapped or read through a reader, the reader's
    /// share of the connections forced to `reader_parts` (else decided from the first epoch).
    fn analyse(
        path: &Path,
        threads: usize,
        mapped: bool,
        reader_parts: Option<u32>,
    ) -> (String, Stats, usize) {
        let (monitor, services, limits) = offline_monitor();
        let out = Shared::default();
        let mut monitor = monitor.with_sink(JsonSink(JsonLines::new(out.clone(), false)));
        let mut src = if mapped {
            FileSource::open(path).unwrap()
        } else {
            let file = std::fs::File::open(path).unwrap();
            FileSource::from_reader(path, Box::new(file), 0).unwrap()
        };
        let mut epochs = 0;
        if threads == 1 {
            while let Some(f) = src.next_frame().unwrap() {
                monitor.on_frame(f);
            }
        } else {
            let mut parallel = Parallel::start(&mut monitor, threads, &services, &limits).unwrap();
            parallel.forced_parts = reader_parts;
            if let Some((bytes, pages)) = src.hand_over_map(READER_KEEPS) {
                parallel = parallel.with_mapped(bytes, pages);
            }
            while let Some(f) = src.next_frame().unwrap() {
                parallel.on_frame(f);
            }
            if parallel.frames > 0 {
                epochs = 1;
            }
            epochs += parallel.epochs;
            // With one worker the reader analyses the share it was given; with more, none.
            let flows = parallel.local.stats().flows_opened;
            match reader_parts {
                Some(p) if p > 0 => assert!(flows > 0, "the reader opened no flow"),
                Some(_) => assert_eq!(flows, 0, "no share: the reader opened flows"),
                None if threads > 2 => {
                    assert_eq!(flows, 0, "{threads} threads: the reader opened flows")
                }
                None => {}
            }
            parallel.finish();
        }
        let end = monitor.pipeline().last_ts();
        monitor.finish(end).unwrap();
        let mut stats = monitor.pipeline().stats();
        (stats.certificates, stats.cert_cache_hits) = (0, 0);
        drop(monitor);
        let json = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        (json, stats, epochs)
    }

    #[test]
    fn every_thread_count_gives_one_pipelines_records_events_and_counters() {
        // Several epochs of frames; flows that idle sweeps close, hundreds per sweep; failures
        // under one CA, then a collapse when another is presented.
        let pki = Pki::new().unwrap();
        let (ca_a, ca_b) = (pki.kubeedge_ca().unwrap(), pki.kubeedge_ca().unwrap());
        let chain_a = pki.server_leaf(&ca_a).unwrap().chain_der();
        let chain_b = pki.server_leaf(&ca_b).unwrap().chain_der();
        let a: Vec<&[u8]> = chain_a.iter().map(Vec::as_slice).collect();
        let b: Vec<&[u8]> = chain_b.iter().map(Vec::as_slice).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parallel.pcap");
        let mut p = Pcap::create(&path).unwrap();
        let server = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10), 10000);
        let t0 = Duration::from_secs(1_700_000_000);
        let s = Duration::from_secs;
        hostile::syn_flood(&mut p, server, 1_000, t0, s(60)).unwrap();
        hostile::partial_records(&mut p, server, 1_000, 300, t0, s(60)).unwrap();
        hostile::alert_storm(&mut p, server, 300, 3, t0 + s(10), s(40)).unwrap();
        hostile::failing_clients(&mut p, server, 2_500, &a, t0 + s(90), s(60)).unwrap();
        let start = t0 + s(200);
        let times = (start, start + s(40), start + s(100));
        hostile::incident(&mut p, server, 24, (&a, &b), times, s(2)).unwrap();
        let frames = p.frames;
        p.finish().unwrap();
        assert!(frames > 2 * EPOCH_FRAMES as u64, "{frames} frames");

        let (one, one_stats, _) = analyse(&path, 1, true, None);
        assert!(one.contains("\"trust_collapse\""), "no collapse");
        assert!(one.lines().count() > 4_000, "{} lines", one.lines().count());
        assert_eq!(one_stats.packets, frames);
        let share = Some(READER_PARTS_ONE_WORKER);
        for (threads, mapped, parts) in [
            (2, true, share),
            (2, true, Some(0)),
            (2, true, None),
            (3, true, None),
            (2, false, share),
            (2, false, Some(0)),
        ] {
            let (json, stats, epochs) = analyse(&path, threads, mapped, parts);
            let first = one
                .lines()
                .zip(json.lines())
                .enumerate()
                .find(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| {
                    let cut = |l: &str| l.chars().take(160).collect::<String>();
                    format!("line {i}: {} against {}", cut(x), cut(y))
                });
            let run = format!("{threads} threads, mapped {mapped}, reader parts {parts:?}");
            assert!(json == one, "{run}: {first:?}");
            assert_eq!(stats, one_stats, "{run}");
            // An epoch ends at EPOCH_FRAMES frames or EPOCH_BYTES bytes, whichever comes first.
            let (f, b) = (stats.packets as usize, stats.bytes as usize);
            let most = f.div_ceil(EPOCH_FRAMES) + b.div_ceil(EPOCH_BYTES);
            assert!(
                (f.div_ceil(EPOCH_FRAMES)..=most).contains(&epochs),
                "{epochs} epochs for {f} frames, {b} bytes"
            );
        }
    }

    /// The share of `0..2³²` (sampled every 2²⁰) each pipeline gets: the reader's first.
    fn shares(routes: Routes) -> Vec<u32> {
        let mut n = vec![0u32; routes.workers + 1];
        for i in 0..4096u32 {
            let point = i << 20 | 0x5_5555;
            n[routes.of(point).map_or(0, |w| w + 1)] += 1;
        }
        n
    }

    #[test]
    fn a_mapped_capture_stays_mapped_only_around_the_epochs_in_flight() {
        // 64 MiB of 60 KB segments over 32 connections (some the reader's own).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bulk.pcap");
        let mut p = Pcap::create(&path).unwrap();
        let server = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10), 10000);
        let payload = vec![0x17; 60_000];
        for i in 0..1_120u32 {
            let client = SocketAddrV4::new(hostile::attacker(i % 32), 40000);
            let seq = 1 + (i / 32) * 60_000;
            let ts = Duration::from_millis(1_700_000_000_000 + u64::from(i));
            p.tcp(ts, (client, server), (seq, 1), 0x18, &payload)
                .unwrap();
        }
        p.finish().unwrap();
        let (mut monitor, services, limits) = offline_monitor();
        let mut src = FileSource::open(&path).unwrap();
        let mut parallel = Parallel::start(&mut monitor, 2, &services, &limits).unwrap();
        let (bytes, pages) = src.hand_over_map(READER_KEEPS).unwrap();
        let at = bytes.as_ptr() as usize;
        parallel = parallel.with_mapped(bytes, pages);
        let mut peak = 0;
        let mut n = 0;
        while let Some(f) = src.next_frame().unwrap() {
            parallel.on_frame(f);
            n += 1;
            if n % 16 == 0 {
                peak = peak.max(resident_kib_of_map(at));
            }
        }
        parallel.finish();
        assert_eq!(n, 1_120);
        // The epochs in flight and the one being read, one more while a busy worker holds the
        // work that releases it, the pages mapped ahead: well under what the reader keeps on its
        // own (the bound when nobody else releases).
        let bound = ((IN_FLIGHT + 2) * EPOCH_BYTES + MAP_AHEAD + 2 * (1 << 20)) / 1024;
        const { assert!((IN_FLIGHT + 2) * EPOCH_BYTES + MAP_AHEAD + (4 << 20) < READER_KEEPS) };
        assert!(
            peak > (EPOCH_BYTES / 1024) as u64 && peak <= bound as u64,
            "{peak} KiB of the map resident, bound {bound} KiB"
        );
    }

    #[test]
    fn the_reader_takes_a_share_of_a_capture_of_handshakes_and_none_of_bulk() {
        let pki = Pki::new().unwrap();
        let ca = pki.kubeedge_ca().unwrap();
        let chain = pki.server_leaf(&ca).unwrap().chain_der();
        let chain: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        let dir = tempfile::tempdir().unwrap();
        let server = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10), 10000);
        let t0 = Duration::from_secs(1_700_000_000);
        let handshakes = dir.path().join("handshakes.pcap");
        let mut p = Pcap::create(&handshakes).unwrap();
        hostile::failing_clients(&mut p, server, 4_000, &chain, t0, Duration::from_secs(60))
            .unwrap();
        p.finish().unwrap();
        // The first epoch of a bulk transfer after its handshake.
        let bulk = dir.path().join("bulk.pcap");
        let mut p = Pcap::create(&bulk).unwrap();
        hostile::failing_clients(&mut p, server, 1, &chain, t0, Duration::from_secs(1)).unwrap();
        let client = SocketAddrV4::new(hostile::attacker(9), 40000);
        for i in 0..200u32 {
            let ts = t0 + Duration::from_millis(1_000 + u64::from(i));
            p.tcp(
                ts,
                (client, server),
                (1 + i * 30_000, 1),
                0x18,
                &[0x17; 30_000],
            )
            .unwrap();
        }
        p.finish().unwrap();
        for (path, share) in [(&handshakes, true), (&bulk, false)] {
            let (mut monitor, services, limits) = offline_monitor();
            let mut src = FileSource::open(path).unwrap();
            let mut parallel = Parallel::start(&mut monitor, 2, &services, &limits).unwrap();
            let mut decided = None;
            while let Some(f) = src.next_frame().unwrap() {
                parallel.on_frame(f);
                if decided.is_none() && parallel.warmup.is_none() {
                    decided = Some(parallel.routes.reader_below > 0);
                }
            }
            assert_eq!(decided, Some(share), "{}", path.display());
            assert_eq!(
                parallel.local.stats().flows_opened > 0,
                share,
                "{}",
                path.display()
            );
            parallel.finish();
        }
    }

    #[test]
    fn connections_are_routed_in_the_shares_the_limits_are_split_in() {
        // 160 of 1024 parts to the reader: 640 of 4096 points; the rest to the one worker.
        assert_eq!(shares(Routes::new(160, 1)), [640, 3456]);
        // None to the reader: three workers evenly, the last one up to the top of the range.
        assert_eq!(shares(Routes::new(0, 3)), [0, 1366, 1365, 1365]);
        assert_eq!(Routes::new(0, 3).of(u32::MAX), Some(2));
        assert_eq!(Routes::new(160, 2).of(0), None);
        assert_eq!(shares(Routes::new(256, 2)), [1024, 1536, 1536]);
        // Limits in the same shares, adding up to the whole (but for rounding down).
        let limits = Limits::default();
        let reader = share(&limits, 160);
        let worker = share(&limits, 1024 - 160);
        assert_eq!(
            reader.max_flows,
            limits.max_flows * 160 / 1024,
            "{}",
            limits.max_flows
        );
        assert!(reader.max_flows + worker.max_flows <= limits.max_flows);
        assert!(reader.max_flows + worker.max_flows + 1 >= limits.max_flows);
        assert!(reader.flow_memory + worker.flow_memory <= limits.flow_memory);
        assert!(reader.flow_memory + worker.flow_memory + 1 >= limits.flow_memory);
        assert_eq!(reader.handshake_window, limits.handshake_window);
        assert_eq!(reader.cert_cache, limits.cert_cache * 160 / 1024);
        assert_eq!(reader.cert_memory, limits.cert_memory * 160 / 1024);
        assert_eq!(worker.cert_memory, limits.cert_memory * 864 / 1024);
        // The workers' parts: the rest, evenly.
        assert_eq!(worker_parts(160, 1), 864);
        assert_eq!(worker_parts(0, 3), 341);
        assert_eq!(
            worker_parts(READER_PARTS_ONE_WORKER, 1) + READER_PARTS_ONE_WORKER,
            PARTS
        );
    }
}
