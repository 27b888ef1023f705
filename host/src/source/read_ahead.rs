//! Read-ahead for a runner that is catching up: the next batch is read and parsed on a
//! thread of its own while the module handles this one.
//!
//! Only while catching up: a read that reaches the end of the source brings the source
//! back to the runner's thread, where the next read happens when asked, so a live
//! runner gets each new event as soon as it is read and an idle one costs no hand-off
//! per poll. A read that does not reach the end moves it to a read-ahead thread again.
//! Reading ahead never moves the checkpoint: a runner that stops drops what was read
//! ahead, and its next start reads again from its checkpoint.
//!
//! Only while a core is spare: a read-ahead thread runs beside its runner, which pays
//! while fewer runners are catching up than the host has cores. Beyond that every core
//! already runs a module, and the hand-offs only cost (one projection on two cores:
//! +24% events/s with read-ahead; two: 4-7% fewer, over 16 pairs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{EventBuffer, EventSource, Progress, ReadBatch, SourceError};

/// One read to make: into this buffer, with these limits.
struct Ask {
    buf: EventBuffer,
    max: usize,
    max_wait: Duration,
}

/// One read made.
struct Done {
    buf: EventBuffer,
    result: Result<ReadBatch, SourceError>,
    progress: Progress,
    shared: bool,
}

/// The source on a thread of its own, reading one batch ahead.
struct Worker {
    ask: SyncSender<Ask>,
    done: Receiver<Done>,
    /// Gives the source back when the asks stop.
    thread: JoinHandle<Box<dyn EventSource>>,
}

impl Worker {
    /// The source back from the thread (after the read it is making, if any).
    fn stop(self) -> Option<Box<dyn EventSource>> {
        let Worker { ask, done, thread } = self;
        drop(ask);
        drop(done);
        thread.join().ok()
    }
}

/// The runners catching up in this process, and its cores.
#[derive(Debug)]
pub struct Crowd {
    catching_up: AtomicUsize,
    cores: usize,
}

impl Crowd {
    /// A crowd of none on `cores` cores.
    pub fn new(cores: usize) -> Crowd {
        Crowd {
            catching_up: AtomicUsize::new(0),
            cores,
        }
    }

    /// This process's crowd, on the cores it may use.
    pub fn host() -> Arc<Crowd> {
        static HOST: OnceLock<Arc<Crowd>> = OnceLock::new();
        HOST.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Arc::new(Crowd::new(cores))
        })
        .clone()
    }

    /// True while a core is spare for a read-ahead thread (the asking runner counted).
    fn spare_core(&self) -> bool {
        self.catching_up.load(Ordering::Relaxed) < self.cores
    }
}

/// A runner's source, read one batch ahead on another thread while catching up.
pub struct ReadAhead {
    name: String,
    /// The source on the runner's thread (at the head)...
    here: Option<Box<dyn EventSource>>,
    /// ...or on the read-ahead thread (catching up), with a read asked for.
    worker: Option<Worker>,
    /// A buffer for the read-ahead to fill (the one the runner handed back).
    spare: EventBuffer,
    progress: Progress,
    shared: bool,
    crowd: Arc<Crowd>,
    /// Counted in the crowd as catching up (its last read did not reach the end).
    counted: bool,
}

impl ReadAhead {
    /// Wrap a runner's source; `name` names the read-ahead thread.
    pub fn new(source: Box<dyn EventSource>, name: &str) -> ReadAhead {
        ReadAhead::in_crowd(source, name, Crowd::host())
    }

    /// As [`ReadAhead::new`], counted in `crowd`.
    pub fn in_crowd(source: Box<dyn EventSource>, name: &str, crowd: Arc<Crowd>) -> ReadAhead {
        ReadAhead {
            name: name.to_string(),
            progress: source.progress(),
            shared: source.is_shared(),
            here: Some(source),
            worker: None,
            spare: EventBuffer::default(),
            crowd,
            counted: false,
        }
    }

    /// Count this runner in the crowd while it catches up, and only then.
    fn count(&mut self, catching_up: bool) {
        if catching_up != self.counted {
            if catching_up {
                self.crowd.catching_up.fetch_add(1, Ordering::Relaxed);
            } else {
                self.crowd.catching_up.fetch_sub(1, Ordering::Relaxed);
            }
            self.counted = catching_up;
        }
    }

    /// Move the source to a read-ahead thread and ask for the next batch there. If no
    /// thread can be started, the source stays here (reads happen when asked).
    fn read_ahead(&mut self, max: usize, max_wait: Duration) {
        let Some(mut source) = self.here.take() else {
            return;
        };
        let (ask, asked) = sync_channel::<Ask>(1);
        let (tell, done) = sync_channel::<Done>(1);
        let started = std::thread::Builder::new()
            .name(format!("read-{}", self.name))
            .spawn(move || {
                for Ask {
                    mut buf,
                    max,
                    max_wait,
                } in asked
                {
                    buf.clear();
                    let result = source.read_batch(&mut buf, max, max_wait);
                    let done = Done {
                        buf,
                        result,
                        progress: source.progress(),
                        shared: source.is_shared(),
                    };
                    if tell.send(done).is_err() {
                        break;
                    }
                }
                source
            });
        let thread = match started {
            Ok(thread) => thread,
            Err(e) => {
                tracing::warn!(projection = %self.name, "no read-ahead thread ({e}); reading on the runner's thread");
                return;
            }
        };
        let buf = std::mem::take(&mut self.spare);
        // The thread is waiting for this ask: the channel has room.
        let _ = ask.send(Ask { buf, max, max_wait });
        self.worker = Some(Worker { ask, done, thread });
    }
}

impl EventSource for ReadAhead {
    /// The next batch, handed over whole: `out` must come in empty (the runner clears
    /// it), and goes back to be filled again.
    fn read_batch(
        &mut self,
        out: &mut EventBuffer,
        max: usize,
        max_wait: Duration,
    ) -> Result<ReadBatch, SourceError> {
        let result = if let Some(source) = &mut self.here {
            let result = source.read_batch(out, max, max_wait);
            self.progress = source.progress();
            self.shared = source.is_shared();
            result
        } else {
            let worker = self.worker.as_ref().ok_or_else(ended)?;
            let Done {
                mut buf,
                result,
                progress,
                shared,
            } = worker.done.recv().map_err(|_| ended())?;
            self.progress = progress;
            self.shared = shared;
            // The runner's (already handled) buffer becomes the next one to fill.
            std::mem::swap(out, &mut buf);
            self.spare = buf;
            result
        };
        let catching_up = matches!(&result, Ok(r) if !r.at_end);
        self.count(catching_up);
        // Between reads no read is in flight: the source can move either way here.
        let ahead = catching_up && self.crowd.spare_core();
        match (ahead, self.worker.take()) {
            (true, Some(worker)) => {
                let buf = std::mem::take(&mut self.spare);
                worker
                    .ask
                    .send(Ask { buf, max, max_wait })
                    .map_err(|_| ended())?;
                self.worker = Some(worker);
            }
            (true, None) => self.read_ahead(max, max_wait),
            (false, Some(worker)) => {
                self.here = worker.stop();
                if self.here.is_none() {
                    return Err(ended());
                }
            }
            (false, None) => {}
        }
        result
    }

    fn progress(&self) -> Progress {
        self.progress
    }

    fn is_shared(&self) -> bool {
        self.shared
    }
}

/// The read-ahead thread is gone (it panicked).
fn ended() -> SourceError {
    SourceError::Failed(anyhow::anyhow!("the read-ahead thread ended"))
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // The thread ends after the read it is making (at most `max_wait`).
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
        self.count(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Filter;
    use crate::source::ndjson::NdjsonSource;
    use std::io::Write as _;

    fn line(n: usize) -> String {
        format!(
            "{{\"stream\":\"s-{}\",\"type\":\"T\",\"data\":{{\"n\":{n}}}}}\n",
            n % 3
        )
    }

    /// A file of 100 event lines (kept open to append to), in a folder of its own.
    fn hundred_lines() -> (tempfile::TempDir, std::path::PathBuf, std::fs::File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.ndjson");
        let mut file = std::fs::File::create(&path).expect("create");
        for n in 0..100 {
            file.write_all(line(n).as_bytes()).expect("write");
        }
        (dir, path, file)
    }

    /// (position, data) of every event `read` returns until a read reaches the end.
    fn drain(src: &mut dyn EventSource, buf: &mut EventBuffer) -> Vec<(u64, Vec<u8>)> {
        let mut seen = Vec::new();
        loop {
            buf.clear();
            let r = src
                .read_batch(buf, 7, Duration::from_millis(50))
                .expect("read");
            seen.extend(buf.iter().map(|e| (e.position.commit, e.data.clone())));
            if r.at_end {
                return seen;
            }
        }
    }

    #[test]
    fn it_reads_what_the_source_reads_and_nothing_ahead_at_the_end() {
        let (_dir, path, mut file) = hundred_lines();
        let open = || NdjsonSource::open(&path, None, Filter::default(), true).expect("open");
        let mut direct = open();
        let crowd = Arc::new(Crowd::new(2));
        let mut ahead = ReadAhead::in_crowd(Box::new(open()), "t", crowd.clone());
        let (mut b1, mut b2) = (EventBuffer::default(), EventBuffer::default());
        let want = drain(&mut direct, &mut b1);
        assert_eq!(want.len(), 100);
        assert_eq!(drain(&mut ahead, &mut b2), want);
        assert!(
            ahead.here.is_some() && ahead.worker.is_none(),
            "at the end, the source is back on the runner's thread"
        );
        // Appended after the end: the next read finds it (it was not read earlier).
        for n in 100..110 {
            file.write_all(line(n).as_bytes()).expect("write");
        }
        b2.clear();
        let first = ahead
            .read_batch(&mut b2, 7, Duration::from_millis(50))
            .expect("read");
        assert!(
            !first.at_end && ahead.worker.is_some(),
            "catching up: reading ahead"
        );
        let mut more: Vec<_> = b2
            .iter()
            .map(|e| (e.position.commit, e.data.clone()))
            .collect();
        more.extend(drain(&mut ahead, &mut b2));
        assert_eq!(more, drain(&mut direct, &mut b1));
        assert_eq!(more.first().map(|e| e.0), Some(101));
        assert_eq!(ahead.progress().done, direct.progress().done);
        assert!(ahead.here.is_some());
        assert_eq!(
            crowd.catching_up.load(Ordering::Relaxed),
            0,
            "at the end: not counted"
        );
    }

    #[test]
    fn it_reads_ahead_only_while_a_core_is_spare() {
        let (_dir, path, _file) = hundred_lines();
        let open = || NdjsonSource::open(&path, None, Filter::default(), true).expect("open");
        // Two cores, and another runner catching up: none is spare.
        let crowd = Arc::new(Crowd::new(2));
        crowd.catching_up.store(1, Ordering::Relaxed);
        let mut ahead = ReadAhead::in_crowd(Box::new(open()), "t", crowd.clone());
        let mut buf = EventBuffer::default();
        let mut seen = Vec::new();
        let mut read = |ahead: &mut ReadAhead, buf: &mut EventBuffer| {
            buf.clear();
            let r = ahead
                .read_batch(buf, 7, Duration::from_millis(50))
                .expect("read");
            seen.extend(buf.iter().map(|e| e.position.commit));
            r
        };
        assert!(!read(&mut ahead, &mut buf).at_end);
        assert!(
            ahead.worker.is_none() && ahead.here.is_some(),
            "no core spare: the next read happens on the runner's thread"
        );
        assert_eq!(crowd.catching_up.load(Ordering::Relaxed), 2, "counted");
        // The other runner reaches the end: a core is spare, the next batch is read ahead.
        crowd.catching_up.store(1, Ordering::Relaxed);
        assert!(!read(&mut ahead, &mut buf).at_end);
        assert!(ahead.worker.is_some(), "a core spare: reading ahead");
        // Another runner starts catching up: the source comes back after this read.
        crowd.catching_up.store(2, Ordering::Relaxed);
        assert!(!read(&mut ahead, &mut buf).at_end);
        assert!(ahead.worker.is_none() && ahead.here.is_some());
        while !read(&mut ahead, &mut buf).at_end {}
        assert_eq!(
            seen,
            (1..=100).collect::<Vec<u64>>(),
            "every event once, in order"
        );
        assert_eq!(
            crowd.catching_up.load(Ordering::Relaxed),
            1,
            "at the end: not counted"
        );
        drop(ahead);
        assert_eq!(crowd.catching_up.load(Ordering::Relaxed), 1);
    }
}
