//! The embedded default source: a file of recorded events, one JSON object per line.
//!
//! Required: `stream`, `type`, `data` (any JSON). Optional: `id`, `metadata` (any
//! JSON), `created` (ms since the epoch, or RFC 3339), `revision`. The global position
//! of an event is its line number (1-based; blank lines count but carry no event).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{BadEvent, Budget, EventBuffer, EventSource, Filter, Progress, ReadBatch, SourceError};
use crate::small_key::SmallKey;
use crate::wit::Position;

mod scan;

/// An event line as `serde_json` reads it (the slow path; see [`scan`]).
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(default, borrow)]
    created: Option<&'a RawValue>,
    #[serde(default)]
    revision: Option<u64>,
}

/// Only what skipping needs: the stream and revision (to keep revisions counting).
#[derive(Deserialize)]
struct SkipLine<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(default)]
    revision: Option<u64>,
}

/// An event line's fields, however they were read (JSON values as their raw text).
struct Parsed<'a> {
    stream: Cow<'a, str>,
    event_type: Cow<'a, str>,
    data: &'a str,
    id: Option<Cow<'a, str>>,
    metadata: Option<&'a str>,
    created: Option<&'a str>,
    revision: Option<u64>,
}

/// One line's fields: the fast scan when the line has the common shape, else
/// `serde_json` (which also names what is wrong with a bad line). The line is checked
/// as UTF-8 once, whole: neither then checks its strings on their own.
fn parse_line(line: &[u8]) -> Result<Parsed<'_>, String> {
    let text = utf8(line)?;
    if let Some(scan::Fields {
        stream: Some(stream),
        event_type: Some(event_type),
        data: Some(data),
        id,
        metadata,
        created,
        revision,
    }) = scan::scan(text)
    {
        return Ok(Parsed {
            stream: Cow::Borrowed(stream),
            event_type: Cow::Borrowed(event_type),
            data,
            id: id.map(Cow::Borrowed),
            metadata,
            created,
            revision,
        });
    }
    let l: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(Parsed {
        stream: l.stream,
        event_type: l.event_type,
        data: l.data.get(),
        id: l.id,
        metadata: l.metadata.map(RawValue::get),
        created: l.created.map(RawValue::get),
        revision: l.revision,
    })
}

/// The line as text. The standard library's check, not `simdutf8`'s: that one copies a
/// line's last bytes to the stack and reads them back whole, a stall per line that cost
/// more than its SIMD saved (reading 1M lines: the same or slower).
fn utf8(line: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))
}

/// A skipped line's stream and revision, read as [`parse_line`] reads them.
fn parse_skipped(line: &[u8]) -> Result<(Cow<'_, str>, Option<u64>), String> {
    let text = utf8(line)?;
    if let Some(scan::Fields {
        stream: Some(stream),
        revision,
        ..
    }) = scan::scan(text)
    {
        return Ok((Cow::Borrowed(stream), revision));
    }
    let l: SkipLine = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok((l.stream, l.revision))
}

/// Reads an NDJSON event file from a position, optionally following it as it grows.
pub struct NdjsonSource {
    reader: BufReader<File>,
    follow: bool,
    /// A line that runs past the end of the reader's buffer, gathered here (the others
    /// are read where they lie in the buffer, not copied); kept until its newline arrives.
    line: Vec<u8>,
    offset: u64,
    len: u64,
    lines: Lines,
    /// A bad line met after good ones: the good ones go out first, this on the next read.
    pending_error: Option<SourceError>,
}

/// What turns a line into an event: where it is and the streams' revisions so far.
struct Lines {
    path: PathBuf,
    filter: Filter,
    line_no: u64,
    /// Next revision per stream, for lines that carry none.
    revisions: rustc_hash::FxHashMap<SmallKey, u64>,
}

/// Where [`NdjsonSource::next_line`] found the next line (it ends with a newline).
enum Found {
    /// The first `n` bytes of the reader's buffer.
    InBuffer(usize),
    /// In `line`.
    Gathered,
}

impl NdjsonSource {
    /// Open `path`, positioned after line `from.commit` (the checkpoint).
    pub fn open(
        path: &Path,
        from: Option<Position>,
        filter: Filter,
        follow: bool,
    ) -> Result<NdjsonSource> {
        let file =
            File::open(path).with_context(|| format!("opening event file {}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut src = NdjsonSource {
            // 64 KiB: lines are read soon after the kernel copies them in (1 MiB measured
            // the same or a little slower).
            reader: BufReader::with_capacity(64 << 10, file),
            follow,
            line: Vec::with_capacity(4096),
            offset: 0,
            len,
            lines: Lines {
                path: path.to_path_buf(),
                filter,
                line_no: 0,
                revisions: Default::default(),
            },
            pending_error: None,
        };
        if let Some(from) = from {
            src.skip_to(from.commit)?;
        }
        Ok(src)
    }

    /// Find the next complete, non-blank line (None at the current end of the file). A
    /// line wholly in the reader's buffer stays there (the caller consumes it once read):
    /// copying every line out cost 7–24% of reading 1M lines.
    fn next_line(&mut self) -> Result<Option<Found>> {
        if self.line.last() == Some(&b'\n') {
            self.line.clear();
        }
        loop {
            if self.line.is_empty() {
                let available = match self.reader.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("reading {}", self.lines.path.display()));
                    }
                };
                if let Some(i) = memchr::memchr(b'\n', available) {
                    self.offset += i as u64 + 1;
                    self.lines.line_no += 1;
                    if available[..i].iter().all(u8::is_ascii_whitespace) {
                        self.reader.consume(i + 1);
                        continue;
                    }
                    return Ok(Some(Found::InBuffer(i + 1)));
                }
            }
            // The line runs past the buffer (or is the file's last, without a newline).
            let n = read_line(&mut self.reader, &mut self.line)
                .with_context(|| format!("reading {}", self.lines.path.display()))?;
            self.offset += n as u64;
            let complete = self.line.last() == Some(&b'\n')
                || (!self.follow && n == 0 && !self.line.is_empty());
            if !complete {
                // End of file: a partial last line waits for its newline when following.
                return Ok(None);
            }
            self.lines.line_no += 1;
            if self.line.iter().all(u8::is_ascii_whitespace) {
                self.line.clear();
                continue;
            }
            if self.line.last() != Some(&b'\n') {
                self.line.push(b'\n'); // the final line of a finished file
            }
            return Ok(Some(Found::Gathered));
        }
    }

    /// The line `found` names, and how much of the reader's buffer to consume after it.
    fn found<'a>(reader: &'a BufReader<File>, line: &'a [u8], found: Found) -> (&'a [u8], usize) {
        match found {
            Found::InBuffer(n) => (&reader.buffer()[..n], n),
            Found::Gathered => (line, 0),
        }
    }

    fn skip_to(&mut self, line: u64) -> Result<()> {
        while self.lines.line_no < line {
            let Some(found) = self.next_line()? else {
                anyhow::bail!(
                    "{}: the checkpoint is at line {line} but the file has only {} lines; was it replaced?",
                    self.lines.path.display(),
                    self.lines.line_no
                );
            };
            let (text, used) = Self::found(&self.reader, &self.line, found);
            let result = match parse_skipped(text) {
                Ok((stream, revision)) => {
                    self.lines.next_revision(&stream, revision);
                    Ok(())
                }
                Err(e) => Err(self.lines.malformed(e)),
            };
            self.reader.consume(used);
            result?;
        }
        Ok(())
    }
}

impl EventSource for NdjsonSource {
    fn read_batch(
        &mut self,
        out: &mut EventBuffer,
        max: usize,
        max_wait: std::time::Duration,
    ) -> Result<ReadBatch, SourceError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let budget = Budget::new(max, max_wait);
        let mut batch = ReadBatch::default();
        while budget.more(out, &batch) {
            let Some(found) = self.next_line()? else {
                batch.at_end = true;
                break;
            };
            let (line, used) = Self::found(&self.reader, &self.line, found);
            let result = match parse_line(line) {
                Ok(l) => self.lines.event(l, out),
                Err(e) => Err(self.lines.malformed(e)),
            };
            self.reader.consume(used);
            if let Err(e) = result {
                Budget::fail(&batch, e.into(), &mut self.pending_error)?;
                break;
            }
            batch.read += 1;
            // Before the clock check: the event is in the batch, so the batch's last
            // position (the runner's next checkpoint) must be its.
            batch.last = Some(Position::at(self.lines.line_no));
            // Checking the clock every 256 lines keeps it off the per-event path.
            if batch.read % 256 == 0 && std::time::Instant::now() >= budget.deadline() {
                break;
            }
        }
        if batch.at_end {
            self.len = self
                .reader
                .get_ref()
                .metadata()
                .map(|m| m.len())
                .unwrap_or(self.len);
        }
        Ok(batch)
    }

    fn progress(&self) -> Progress {
        Progress {
            done: self.offset,
            total: self.len.max(self.offset),
        }
    }
}

impl Lines {
    fn malformed(&self, reason: impl ToString) -> BadEvent {
        BadEvent {
            origin: format!("{}:{}", self.path.display(), self.line_no),
            position: Position::at(self.line_no),
            reason: reason.to_string(),
        }
    }

    fn next_revision(&mut self, stream: &str, given: Option<u64>) -> u64 {
        let next = match crate::small_key::get_mut(&mut self.revisions, stream.as_bytes()) {
            Some(n) => n,
            None => self
                .revisions
                .entry(SmallKey::new(stream.as_bytes()))
                .or_insert(0),
        };
        let rev = given.unwrap_or(*next);
        *next = rev + 1;
        rev
    }

    /// `created`: milliseconds since the epoch, or an RFC 3339 string.
    fn created_ms(&self, raw: &str) -> Result<u64, BadEvent> {
        if let Ok(ms) = raw.parse::<u64>() {
            return Ok(ms);
        }
        let text: String = serde_json::from_str(raw).map_err(|_| {
            self.malformed(format!(
                "`created` must be ms since the epoch or an RFC 3339 string, got {raw}"
            ))
        })?;
        let t = humantime::parse_rfc3339_weak(&text)
            .map_err(|e| self.malformed(format!("`created` {text:?} is not RFC 3339: {e}")))?;
        Ok(t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }

    fn event(&mut self, l: Parsed<'_>, out: &mut EventBuffer) -> Result<(), BadEvent> {
        if l.stream.is_empty() {
            return Err(self.malformed("`stream` is empty"));
        }
        if l.event_type.is_empty() {
            return Err(self.malformed("`type` is empty"));
        }
        let revision = self.next_revision(&l.stream, l.revision);
        if !self.filter.matches(&l.stream, &l.event_type) {
            return Ok(());
        }
        let created_ms = match l.created {
            None => 0,
            Some(raw) => self.created_ms(raw)?,
        };
        let line = self.line_no;
        let e = out.next_slot();
        replace(&mut e.stream_id, &l.stream);
        replace(&mut e.event_type, &l.event_type);
        match &l.id {
            Some(id) => replace(&mut e.event_id, id),
            None => {
                // Deterministic when absent: derived from the position.
                e.event_id.clear();
                let _ = write!(e.event_id, "00000000-0000-4000-8000-{line:012x}");
            }
        }
        e.revision = revision;
        e.position = Position::at(line);
        e.created_ms = created_ms;
        replace(&mut e.content_type, "application/json");
        refill(&mut e.data, l.data.as_bytes());
        refill(&mut e.metadata, l.metadata.unwrap_or_default().as_bytes());
        Ok(())
    }
}

/// `BufRead::read_until(b'\n')`, searching with the `memchr` crate (SIMD) rather than
/// the standard library's word-at-a-time search.
fn read_line(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (done, used) = match memchr::memchr(b'\n', available) {
            Some(i) => (true, i + 1),
            None => (available.is_empty(), available.len()),
        };
        out.extend_from_slice(&available[..used]);
        r.consume(used);
        read += used;
        if done {
            return Ok(read);
        }
    }
}

/// Overwrite a reused buffer in place. One that must grow grows to the next power of
/// two: an event's slot held events of every type and size, and regrowing it a byte
/// range at a time (a new allocation and a copy) took 6% of the noop projection's CPU.
fn refill(buf: &mut Vec<u8>, with: &[u8]) {
    buf.clear();
    if buf.capacity() < with.len() {
        buf.reserve_exact(with.len().next_power_of_two());
    }
    buf.extend_from_slice(with);
}

/// Overwrite a reused string in place.
fn replace(s: &mut String, with: &str) {
    s.clear();
    s.push_str(with);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::Event;
    use std::time::Duration;

    fn read_all(
        text: impl AsRef<[u8]>,
        from: Option<u64>,
        filter: Filter,
    ) -> anyhow::Result<Vec<Event>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("e.ndjson");
        std::fs::write(&path, text)?;
        let from = from.map(Position::at);
        let mut src = NdjsonSource::open(&path, from, filter, false)?;
        let (mut all, mut batch) = (Vec::new(), EventBuffer::default());
        while src
            .read_batch(&mut batch, 2, Duration::from_secs(1))
            .map_err(anyhow::Error::from)?
            .last
            .is_some()
        {
            all.extend(batch.iter().cloned());
            batch.clear();
        }
        Ok(all)
    }

    #[test]
    fn a_batch_cut_short_by_its_deadline_ends_at_its_last_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("e.ndjson");
        let line = "{\"stream\":\"a\",\"type\":\"T\",\"data\":{}}\n";
        std::fs::write(&path, line.repeat(1000)).expect("write");
        let mut src = NdjsonSource::open(&path, None, Filter::default(), false).expect("open");
        let mut buf = EventBuffer::default();
        let mut handed_over = 0;
        loop {
            buf.clear();
            // No time at all: every read stops at its first clock check.
            let read = src
                .read_batch(&mut buf, 1000, Duration::ZERO)
                .expect("read");
            let Some(last) = read.last else { break };
            assert!(read.read < 1000, "the deadline cut the batch: {read:?}");
            let events: Vec<u64> = buf.iter().map(|e| e.position.commit).collect();
            // The checkpoint after this batch is its last event: not one before it
            // (which a restart would apply twice).
            assert_eq!(events.last(), Some(&last.commit));
            assert_eq!(events.first(), Some(&(handed_over + 1)));
            handed_over = last.commit;
        }
        assert_eq!(handed_over, 1000);
    }

    #[test]
    fn fields_defaults_and_positions() {
        let text = concat!(
            r#"{"stream":"a","type":"T","data":{"x":1}}"#,
            "\n\n",
            r#"{"stream":"a","type":"T","data":[1],"id":"e2","metadata":{"m":true},"created":"2024-01-02T03:04:05Z"}"#,
            "\n",
            r#"{"stream":"b","type":"T","data":null,"revision":7,"created":1700000000000}"#,
            "\n",
            r#"{"stream":"b","type":"T","data":"x"}"#, // last line without a newline
        );
        let ev = read_all(text, None, Filter::default()).unwrap();
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0].data, br#"{"x":1}"#);
        assert_eq!(ev[0].position.commit, 1);
        assert_eq!(ev[0].event_id, "00000000-0000-4000-8000-000000000001");
        assert_eq!(
            (ev[1].position.commit, ev[1].revision),
            (3, 1),
            "blank lines count, revisions per stream"
        );
        assert_eq!(ev[1].metadata, br#"{"m":true}"#);
        assert_eq!(ev[1].created_ms, 1_704_164_645_000);
        assert_eq!((ev[2].revision, ev[2].created_ms), (7, 1_700_000_000_000));
        assert_eq!((ev[3].revision, ev[3].position.commit), (8, 5));
        // Resuming after line 3 skips what came before but keeps counting revisions.
        let resumed = read_all(text, Some(3), Filter::default()).unwrap();
        assert_eq!(
            resumed.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![7, 8]
        );
    }

    #[test]
    fn lines_across_the_buffer_end_read_as_lines_within_it() {
        // Most lines are read where they lie in the reader's 64 KiB buffer; these run
        // past its end (one is longer than the whole buffer) and are gathered instead.
        let mut text = String::new();
        let mut want = Vec::new();
        for i in 0..3000u64 {
            if i % 97 == 5 {
                text.push_str("  \t \n"); // a blank line, sometimes across the end
            }
            let pad = if i == 1500 {
                150_000
            } else {
                (i * 37 % 200) as usize
            };
            let data = format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(pad));
            text.push_str(&format!(
                r#"{{"stream":"s-{}","type":"T","data":{data}}}"#,
                i % 7
            ));
            let line = text.matches('\n').count() as u64 + 1;
            want.push((line, i / 7, data));
            if i < 2999 {
                text.push('\n'); // the last line ends without one
            }
        }
        let got: Vec<(u64, u64, String)> = read_all(&text, None, Filter::default())
            .unwrap()
            .into_iter()
            .map(|e| {
                let data = String::from_utf8(e.data).unwrap();
                (e.position.commit, e.revision, data)
            })
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "every line read whole, at its line number");
        // Resuming part-way skips lines the same way.
        let resumed = read_all(&text, Some(want[2000].0), Filter::default()).unwrap();
        assert_eq!(
            resumed.first().map(|e| e.position.commit),
            Some(want[2001].0)
        );
    }

    #[test]
    fn a_followed_line_is_read_once_its_newline_arrives() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let line = r#"{"stream":"a","type":"T","data":{"n":1}}"#;
        std::fs::write(&path, format!("{line}\n{}", &line[..20])).unwrap();
        let mut src = NdjsonSource::open(&path, None, Filter::default(), true).unwrap();
        let mut buf = EventBuffer::default();
        let read = |src: &mut NdjsonSource, buf: &mut EventBuffer| {
            buf.clear();
            src.read_batch(buf, 10, Duration::from_millis(10)).unwrap()
        };
        let first = read(&mut src, &mut buf);
        assert_eq!((first.read, first.at_end), (1, true), "the half line waits");
        assert_eq!(read(&mut src, &mut buf).read, 0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(f, "{}\n{line}\n", &line[20..]).unwrap();
        let rest = read(&mut src, &mut buf);
        let got: Vec<(u64, &[u8])> = buf
            .iter()
            .map(|e| (e.position.commit, &e.data[..]))
            .collect();
        assert_eq!(rest.read, 2);
        assert_eq!(got, vec![(2, &br#"{"n":1}"#[..]), (3, &br#"{"n":1}"#[..])]);
    }

    #[test]
    fn revisions_count_per_stream_for_short_and_long_names() {
        // Short names are kept inline in the revision map (`SmallKey`), long ones on the
        // heap: names either side of that, and names sharing a prefix.
        let names = [
            "s",
            "order-1",
            "abcdefghijklmnopqrstuvwxyz0123",
            "abcdefghijklmnopqrstuvwxyz012",
            "abcdefghijklmnopqrstuvwxyz01234",
            "abcdefghijklmnopqrstuvwxyz012345",
            "é-ünïcødé-strëam-nämé-ok",
            "é-ünïcødé",
        ];
        let mut text = String::new();
        for round in 0..3 {
            for (i, n) in names.iter().enumerate() {
                if round < 2 || i % 2 == 0 {
                    text.push_str(&format!(r#"{{"stream":"{n}","type":"T","data":{{}}}}"#));
                    text.push('\n');
                }
            }
        }
        let ev = read_all(&text, None, Filter::default()).unwrap();
        let revisions = |name: &str| -> Vec<u64> {
            ev.iter()
                .filter(|e| e.stream_id == name)
                .map(|e| e.revision)
                .collect()
        };
        for (i, n) in names.iter().enumerate() {
            let want: Vec<u64> = if i % 2 == 0 {
                vec![0, 1, 2]
            } else {
                vec![0, 1]
            };
            assert_eq!(revisions(n), want, "{n}");
        }
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_problem() {
        for (line, reason) in [
            (&br#"{"type":"T","data":{}}"#[..], "missing field `stream`"),
            (br#"{"stream":"a","type":"T"}"#, "missing field `data`"),
            (br#"{"stream":"","type":"T","data":1}"#, "`stream` is empty"),
            (
                br#"{"stream":"a","type":"T","data":1,"created":"yesterday"}"#,
                "not RFC 3339",
            ),
            (b"[1,2", "expected a string"),
            (b"{\"stream\":\"a\"", "EOF while parsing"),
            (
                b"{\"stream\":\"a\",\"type\":\"T\",\"data\":\"\xff\"}",
                "not UTF-8: invalid utf-8 sequence of 1 bytes from index 33",
            ),
        ] {
            let mut text = b"{\"stream\":\"a\",\"type\":\"T\",\"data\":1}\n".to_vec();
            text.extend_from_slice(line);
            text.push(b'\n');
            let err = read_all(&text, None, Filter::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("e.ndjson:2: malformed event") && err.contains(reason),
                "{err}"
            );
        }
    }

    /// A line's fields as owned values, to compare the two readings.
    type Owned = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u64>,
    );

    fn owned(p: &Parsed<'_>) -> Owned {
        (
            p.stream.to_string(),
            p.event_type.to_string(),
            p.data.to_string(),
            p.id.as_ref().map(|s| s.to_string()),
            p.metadata.map(str::to_string),
            p.created.map(str::to_string),
            p.revision,
        )
    }

    /// Whatever the fast scan reads, serde_json reads the same from the same line (so
    /// every line it refuses, the scan leaves to it).
    fn agrees(line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            return;
        };
        let Some(fast) = scan::scan(text) else {
            return;
        };
        if let Some(stream) = fast.stream {
            let slow: SkipLine = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("the scan read what serde_json refuses ({e}): {text}"));
            assert_eq!(
                (slow.stream.as_ref(), slow.revision),
                (stream, fast.revision),
                "{text}"
            );
        }
        let Ok(parsed) = parse_line(line) else {
            assert!(fast.stream.is_none() || fast.event_type.is_none() || fast.data.is_none());
            return;
        };
        let slow: Line = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("the scan read what serde_json refuses ({e}): {text}"));
        let slow = Parsed {
            stream: slow.stream,
            event_type: slow.event_type,
            data: slow.data.get(),
            id: slow.id,
            metadata: slow.metadata.map(RawValue::get),
            created: slow.created.map(RawValue::get),
            revision: slow.revision,
        };
        assert_eq!(owned(&parsed), owned(&slow), "{text}");
    }

    #[test]
    fn the_fast_scan_reads_lines_exactly_as_serde_json_does() {
        let lines: [&[u8]; 8] = [
            br#"{"created":1700000000014,"data":{"customerId":"U31399","items":[{"priceCents":15962,"productId":"P264","quantity":1}],"orderId":"O1"},"id":"0000002a-0000-4000-8000-000000000000","metadata":{"correlationId":"corr-0"},"stream":"order-1","type":"OrderCreated"}"#,
            br#" { "stream" : "a" , "type":"T", "data": [1, -2.5e+3, 0.0, true, false, null, "x", {}, []], "revision": 7 } "#,
            br#"{"stream":"a","type":"T","data":null,"id":null,"metadata":null,"created":null,"revision":null}"#,
            br#"{"stream":"a","type":"T","data":"caf\u00e9","extra":{"deep":[[[{"k":"v"}]]]},"created":"2024-01-02T03:04:05Z"}"#,
            br#"{"stream":"a\"b","type":"T","data":1}"#,
            "{\"stream\":\"é\",\"type\":\"T\",\"data\":\"ü\"}".as_bytes(),
            br#"{"stream":"a","type":"T","data":1,"stream":"b"}"#,
            br#"{"stream":"a","type":"T","data":1,"revision":18446744073709551615}"#,
        ];
        // The common shape is read by the scan, not handed on.
        for line in &lines[..3] {
            let text = std::str::from_utf8(line).unwrap();
            assert!(scan::scan(text).is_some_and(|f| f.data.is_some()), "{text}");
        }
        // Each line, then each mutated at random, read both ways.
        for line in lines {
            agrees(line);
            for m in json_skim::testing::mutations(line, 0x9e37_79b9_7f4a_7c15, 3000) {
                agrees(&m);
            }
        }
    }

    #[test]
    fn filters_by_type_and_prefix_and_hides_system_events() {
        let text = concat!(
            r#"{"stream":"order-1","type":"A","data":1}"#,
            "\n",
            r#"{"stream":"cart-1","type":"A","data":1}"#,
            "\n",
            r#"{"stream":"order-1","type":"B","data":1}"#,
            "\n",
            r#"{"stream":"$$order-1","type":"$metadata","data":1}"#,
            "\n",
        );
        let f = Filter {
            event_types: vec!["A".into()],
            stream_prefixes: vec!["order-".into()],
            everything: false,
        };
        assert_eq!(read_all(text, None, f).unwrap().len(), 1);
        assert_eq!(
            read_all(text, None, Filter::default()).unwrap().len(),
            3,
            "no `$` events unless asked"
        );
    }
}
