//! The access log: one line per finished call on stderr, as `key=value` text or JSON.
//!
//! A line is formatted where its call ends, into a batch its thread keeps (no lock, no
//! allocation once warm). A thread hands its batch to the shared queue when it holds
//! [`THREAD_BATCH`] bytes, when the writer has ticked since the batch began, and when the thread
//! goes idle (the runtime's park hook calls [`flush_thread`]) or exits. A writer thread takes the
//! queue every [`FLUSH_EVERY`] (sooner when [`BATCH`] bytes wait) and writes it in one write, so a
//! call never waits for stderr, and stderr sees few, large writes (each write to a file has a
//! fixed cost that per-line writes would pay thousands of times a second). When the queue is at
//! its bound (stderr is a slow pipe, a stuck terminal) a batch is dropped and its lines counted
//! in `switchboard_access_log_dropped_total`.
//!
//! The lines themselves are made in [`format`].

mod format;

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use prometheus::IntCounter;

pub(crate) use self::format::Line;
use self::format::{format_with, Clock};

/// Bytes of lines waiting for the writer at most; further batches are dropped.
const QUEUE: usize = 8 * 1024 * 1024;
/// Waiting bytes that wake the writer before its next tick.
const BATCH: usize = 1024 * 1024;
/// A thread's batch is handed over once it holds this much.
const THREAD_BATCH: usize = 32 * 1024;
/// How often the writer takes what is queued.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The queue to the writer thread, started on first use and kept for the life of the process
/// (stderr is the process's; reloads change only the format, which each line carries).
struct Sink {
    queue: Mutex<Vec<u8>>,
    full: Condvar,
    /// Counts the writer's ticks: a thread hands its batch over once this moved on since the
    /// batch's first line, so no line waits much longer than a tick on a busy thread.
    tick: AtomicU64,
    /// Counts the lines of dropped batches (the registry's counter, set by the first line).
    dropped: OnceLock<IntCounter>,
}

static SINK: OnceLock<Option<Arc<Sink>>> = OnceLock::new();

fn sink() -> Option<&'static Arc<Sink>> {
    SINK.get_or_init(|| {
        let sink = Arc::new(Sink {
            queue: Mutex::new(Vec::with_capacity(BATCH)),
            full: Condvar::new(),
            tick: AtomicU64::new(0),
            dropped: OnceLock::new(),
        });
        let writer = sink.clone();
        match std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&writer))
        {
            Ok(_) => Some(sink),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access log writer; access logging is off");
                None
            }
        }
    })
    .as_ref()
}

/// A thread's batch of formatted lines, and its clock.
struct Batch {
    lines: Vec<u8>,
    count: u64,
    /// The writer's tick when the first line of `lines` was added.
    tick: u64,
    clock: Clock,
}

impl Batch {
    /// Hands the lines to the writer.
    fn hand_over(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        if let Some(sink) = sink() {
            sink.push(&self.lines, self.count);
        }
        self.lines.clear();
        self.count = 0;
        // After a burst of long lines the batch goes back to its usual size.
        if self.lines.capacity() > 2 * THREAD_BATCH {
            self.lines = Vec::new();
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.hand_over();
    }
}

thread_local! {
    static BATCH_OF_THREAD: RefCell<Batch> = const {
        RefCell::new(Batch {
            lines: Vec::new(),
            count: 0,
            tick: 0,
            clock: Clock { secs: 0, prefix: String::new() },
        })
    };
}

/// Formats `line` into the thread's batch.
pub(crate) fn log(line: &Line<'_>, dropped: &IntCounter) {
    let Some(sink) = sink() else {
        dropped.inc();
        return;
    };
    if sink.dropped.get().is_none() {
        let _ = sink.dropped.set(dropped.clone());
    }
    let tick = sink.tick.load(Ordering::Relaxed);
    let added = BATCH_OF_THREAD.try_with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else {
            return false;
        };
        let b = &mut *b;
        if b.count > 0 && b.tick != tick {
            b.hand_over();
        }
        if b.count == 0 {
            b.tick = tick;
        }
        format_with(line, &mut b.lines, &mut b.clock);
        b.count += 1;
        if b.lines.len() >= THREAD_BATCH {
            b.hand_over();
        }
        true
    });
    if added != Ok(true) {
        // The thread is exiting: the line goes to the queue by itself.
        let mut one = Vec::with_capacity(512);
        format_with(line, &mut one, &mut Clock::default());
        sink.push(&one, 1);
    }
}

/// Hands the calling thread's batch to the writer: the runtime calls it before a worker
/// parks, so the lines of a thread that goes idle are not held back.
pub fn flush_thread() {
    let _ = BATCH_OF_THREAD.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.hand_over();
        }
    });
}

impl Sink {
    /// Appends a batch of `count` lines, or counts them as dropped when the queue is full.
    fn push(&self, lines: &[u8], count: u64) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let before = queue.len();
        if before + lines.len() > QUEUE {
            drop(queue);
            if let Some(d) = self.dropped.get() {
                d.inc_by(count);
            }
            return;
        }
        queue.extend_from_slice(lines);
        let wake = before < BATCH && queue.len() >= BATCH;
        drop(queue);
        if wake {
            self.full.notify_one();
        }
    }
}

fn write_loop(sink: &Sink) {
    let mut taken: Vec<u8> = Vec::with_capacity(BATCH);
    loop {
        {
            let queue = sink.queue.lock().unwrap_or_else(|p| p.into_inner());
            let (mut queue, _) = sink
                .full
                .wait_timeout_while(queue, FLUSH_EVERY, |q| q.len() < BATCH)
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *queue, &mut taken);
        }
        sink.tick.fetch_add(1, Ordering::Relaxed);
        if taken.is_empty() {
            continue;
        }
        write_out(&taken);
        taken.clear();
        // After a burst the buffers go back to their usual size (they take turns here).
        if taken.capacity() > 2 * BATCH {
            taken = Vec::with_capacity(BATCH);
        }
    }
}

/// Writes whole lines to stderr.
fn write_out(lines: &[u8]) {
    // The lock keeps our lines whole among other stderr writers (the tracing logs).
    let stderr = std::io::stderr();
    let mut lock = stderr.lock();
    let _ = lock.write_all(lines);
    let _ = lock.flush();
}

/// Writes the lines still queued, the calling thread's batch first (at shutdown).
pub fn flush() {
    flush_thread();
    if let Some(Some(sink)) = SINK.get() {
        let taken = std::mem::take(&mut *sink.queue.lock().unwrap_or_else(|p| p.into_inner()));
        if !taken.is_empty() {
            write_out(&taken);
        }
    }
}
