//! Read-ahead for a runner that is catching up: the next batch is read and parsed on a
//! thread of its own while the module handles this one.
//!
//! Only while catching up: after a read that reached the end of the source, the next
//! read waits to be asked, so a live runner gets each new event as soon as it is read
//! (reading ahead at the head would only hold events back for a poll's wait). Reading
//! ahead never moves the checkpoint: a runner that stops drops what was read ahead, and
//! its next start reads again from its checkpoint.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

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

/// A source read on its own thread, one batch ahead while catching up.
pub struct ReadAhead {
    ask: Option<SyncSender<Ask>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    /// A read asked for and not yet taken.
    in_flight: bool,
    /// A buffer to read the next batch into (the one the runner handed back).
    spare: EventBuffer,
    progress: Progress,
    shared: bool,
}

impl ReadAhead {
    /// Move `source` to a thread of its own, named for the runner.
    pub fn new(mut source: Box<dyn EventSource>, name: &str) -> anyhow::Result<ReadAhead> {
        let (ask, asked) = sync_channel::<Ask>(1);
        let (tell, done) = sync_channel::<Done>(1);
        let progress = source.progress();
        let shared = source.is_shared();
        let thread = std::thread::Builder::new()
            .name(format!("read-{name}"))
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
                        return;
                    }
                }
            })
            .context("starting a read-ahead thread")?;
        Ok(ReadAhead {
            ask: Some(ask),
            done,
            thread: Some(thread),
            in_flight: false,
            spare: EventBuffer::default(),
            progress,
            shared,
        })
    }

    fn send(&mut self, max: usize, max_wait: Duration) -> Result<(), SourceError> {
        let buf = std::mem::take(&mut self.spare);
        self.ask
            .as_ref()
            .and_then(|a| a.send(Ask { buf, max, max_wait }).ok())
            .ok_or_else(|| SourceError::Failed(anyhow::anyhow!("the read-ahead thread ended")))?;
        self.in_flight = true;
        Ok(())
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
        if !self.in_flight {
            self.send(max, max_wait)?;
        }
        let Done {
            mut buf,
            result,
            progress,
            shared,
        } = self
            .done
            .recv()
            .map_err(|_| SourceError::Failed(anyhow::anyhow!("the read-ahead thread ended")))?;
        self.in_flight = false;
        self.progress = progress;
        self.shared = shared;
        // The runner's (already handled) buffer becomes the next one to fill.
        std::mem::swap(out, &mut buf);
        self.spare = buf;
        if matches!(&result, Ok(r) if !r.at_end) {
            self.send(max, max_wait)?;
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

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // No more asks: the thread ends after the read it is making (at most `max_wait`).
        self.ask = None;
        while self.done.try_recv().is_ok() {}
        drop(std::mem::replace(&mut self.done, sync_channel(0).1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

    /// (position, data) of every event `read` returns until a read reaches the end.
    fn drain(src: &mut dyn EventSource, buf: &mut EventBuffer) -> Vec<(u64, Vec<u8>)> {
        let mut seen = Vec::new();
        loop {
            buf.clear();
            let r = src
                .read_batch(buf, 7, Duration::from_millis(50))
                .expect("read");
            seen.extend(
                buf.as_slice()
                    .iter()
                    .map(|e| (e.position.commit, e.data.clone())),
            );
            if r.at_end {
                return seen;
            }
        }
    }

    #[test]
    fn it_reads_what_the_source_reads_and_nothing_ahead_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.ndjson");
        let mut file = std::fs::File::create(&path).expect("create");
        for n in 0..100 {
            file.write_all(line(n).as_bytes()).expect("write");
        }
        let open = || NdjsonSource::open(&path, None, Filter::default(), true).expect("open");
        let mut direct = open();
        let mut ahead = ReadAhead::new(Box::new(open()), "t").expect("read-ahead");
        let (mut b1, mut b2) = (EventBuffer::default(), EventBuffer::default());
        let want = drain(&mut direct, &mut b1);
        assert_eq!(want.len(), 100);
        assert_eq!(drain(&mut ahead, &mut b2), want);
        assert!(
            !ahead.in_flight,
            "at the end, the next read waits to be asked"
        );
        // Appended after the end: the next read finds it (it was not read earlier).
        for n in 100..110 {
            file.write_all(line(n).as_bytes()).expect("write");
        }
        let more = drain(&mut ahead, &mut b2);
        assert_eq!(more, drain(&mut direct, &mut b1));
        assert_eq!(more.first().map(|e| e.0), Some(101));
        assert_eq!(ahead.progress().done, direct.progress().done);
    }
}
