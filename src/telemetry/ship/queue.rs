//! The disk queue between the log writers and the sender: append-only segment files and a
//! durable read cursor in `state_dir/ship/`.
//!
//! - A record is `len u32 | crc32 u32 | index u64 | at_ms u64 | payload` (little endian); the
//!   payload is the finished RFC 5424 message. Records are numbered (`index`) without gaps.
//! - Segment files are named by the index of their first record (`00000000000000000042.seg`)
//!   and hold up to [`SEGMENT_BYTES`]; only the last one is written.
//! - `cursor` holds the position up to which records were delivered (written, for TLS;
//!   acknowledged, for RELP), rewritten in place (one 28-byte `pwrite`, with a checksum).
//!   [`Queue::ack`] only moves the cursor in memory, so the sender never waits on the disk;
//!   the queue thread writes it ([`QueueWriter::persist_delivery`], at most every
//!   [`SYNC_EVERY_MS`]) and then deletes the segments wholly before it. A `kill -9` therefore
//!   sends again at most that much of what was delivered.
//!
//! Durability: a record is in the kernel's page cache once [`QueueWriter::append`] returns, so
//! it survives a `kill -9` of the edge; [`QueueWriter::sync_if_due`] `fdatasync`s at most
//! [`SYNC_EVERY_MS`] or [`SYNC_EVERY_RECORDS`] later, so a power loss loses at most that. At
//! start, [`Queue::open`] checks the last segment record by record and cuts it at the first
//! torn or damaged record (a power loss mid-write).
//!
//! Bound: [`Queue`] refuses a record that would take the bytes still queued past
//! `queue_max`: the oldest lines are kept, the newest are dropped (and counted) until the
//! server takes some.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::crc32::crc32;

/// Size at which a new segment file is started.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// Record header bytes.
pub const HEADER_BYTES: usize = 24;
/// Largest payload of one record (longer messages are cut by the caller).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// `fdatasync` at most this long after a write ...
pub const SYNC_EVERY_MS: u64 = 10;
/// ... or after this many records, whichever comes first.
pub const SYNC_EVERY_RECORDS: usize = 256;
/// Bytes read from a segment at a time by the sender.
const READ_CHUNK: usize = 256 * 1024;

/// A place in the queue: the segment (its first index), a byte offset in it, and the index
/// of the record that starts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    pub index: u64,
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub index: u64,
    /// When the line was written (Unix ms).
    pub at_ms: u64,
    pub payload: Vec<u8>,
    /// The position just after this record.
    pub end: Position,
}

/// The queue shared by its writer thread, the sender and status.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Written by the queue thread alone ([`QueueWriter::persist_delivery`]).
    cursor_file: File,
    /// Signalled after every append.
    appended: Notify,
}

#[derive(Debug)]
struct State {
    /// Every segment on disk (first index, bytes), oldest first; the last one is written.
    segments: VecDeque<(u64, u64)>,
    cursor: Position,
    next_index: u64,
    /// When the queued records were written: (first index, Unix ms), one entry per second of
    /// writing at most, oldest first (status's oldest age, without reading the disk).
    written_at: VecDeque<(u64, u64)>,
    /// The cursor moved since it was last written to disk.
    cursor_moved: bool,
    /// Delivered segments whose files are still to be deleted.
    delivered_segments: Vec<u64>,
}

impl State {
    fn queued_bytes(&self) -> u64 {
        self.segments.iter().map(|(_, len)| len).sum::<u64>().saturating_sub(self.cursor.offset)
    }
}

/// What [`Queue::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting to be sent.
    pub records: u64,
    /// Bytes cut from the end of the last segment (a torn write).
    pub cut_bytes: u64,
}

impl Queue {
    /// Opens (creating) the queue in `dir`, bounded to `max_bytes`; returns the writer and
    /// what was found on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<(Arc<Queue>, QueueWriter, Recovered)> {
        Queue::open_sized(dir, max_bytes, SEGMENT_BYTES)
    }

    /// [`Queue::open`] with segments of `segment_bytes` (tests use small ones).
    pub fn open_sized(dir: &Path, max_bytes: u64, segment_bytes: u64) -> std::io::Result<(Arc<Queue>, QueueWriter, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> =
            std::fs::read_dir(dir)?.filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".seg")?.parse().ok()).collect();
        ids.sort_unstable();
        let cursor_file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join("cursor"))?;
        let mut cursor = read_cursor(&cursor_file).unwrap_or_default();
        if let Some(&first) = ids.first()
            && !ids.contains(&cursor.segment)
        {
            // The cursor's segment is gone, or the cursor is unreadable: from the oldest
            // segment left (sending again rather than losing).
            cursor = Position { segment: first, offset: 0, index: first };
        } else if ids.is_empty() {
            cursor = Position { segment: cursor.index, offset: 0, index: cursor.index };
        }
        for id in ids.iter().filter(|id| **id < cursor.segment) {
            let _ = std::fs::remove_file(segment_path(dir, *id));
        }
        ids.retain(|id| *id >= cursor.segment);
        let mut segments = VecDeque::new();
        for id in &ids {
            segments.push_back((*id, std::fs::metadata(segment_path(dir, *id))?.len()));
        }
        // The last segment is checked record by record (the only one written without a sync
        // before the next began); the others are trusted.
        let mut recovered = Recovered::default();
        let (last_id, last_len) = match segments.back().copied() {
            Some(last) => last,
            None => {
                File::create(segment_path(dir, cursor.segment))?;
                segments.push_back((cursor.segment, 0));
                (cursor.segment, 0)
            }
        };
        // A cursor beyond the last segment's end (the cursor file outlived data a crash lost):
        // the segment is read from its start and the cursor comes back to what is there.
        let (mut at, mut index) =
            if last_id == cursor.segment && cursor.offset <= last_len { (cursor.offset, cursor.index) } else { (0, last_id) };
        let last_file = OpenOptions::new().read(true).write(true).open(segment_path(dir, last_id))?;
        loop {
            match read_record_at(&last_file, at, last_len)? {
                Some((record_index, _, len)) if record_index == index => {
                    at += len;
                    index += 1;
                }
                _ => break,
            }
        }
        if at < last_len {
            last_file.set_len(at)?;
            last_file.sync_data()?;
            recovered.cut_bytes = last_len - at;
        }
        if let Some(last) = segments.back_mut() {
            last.1 = at;
        }
        if cursor.offset > at && last_id == cursor.segment {
            cursor = Position { segment: last_id, offset: at, index };
        }
        recovered.records = index.saturating_sub(cursor.index);
        // The age of what was queued before: the first waiting record of each segment.
        let mut written_at = VecDeque::new();
        if index > cursor.index {
            for &(id, len) in &segments {
                let offset = if id == cursor.segment { cursor.offset } else { 0 };
                if let Some((first, at_ms, _)) = read_record_at(&File::open(segment_path(dir, id))?, offset, len)? {
                    written_at.push_back((first, at_ms));
                }
            }
        }
        let state = State { segments, cursor, next_index: index, written_at, cursor_moved: false, delivered_segments: Vec::new() };
        let queue = Arc::new(Queue {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            state: Mutex::new(state),
            cursor_file,
            appended: Notify::new(),
        });
        let file = OpenOptions::new().append(true).open(segment_path(dir, last_id))?;
        let writer =
            QueueWriter { queue: queue.clone(), file, segment: last_id, len: at, unsynced: 0, first_unsynced_ms: 0, buf: Vec::new() };
        Ok((queue, writer, recovered))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The index of the first record not yet delivered (it only grows).
    pub fn delivered(&self) -> u64 {
        self.state().cursor.index
    }

    /// Records waiting (written to the queue, not yet delivered).
    pub fn queued(&self) -> u64 {
        let state = self.state();
        state.next_index - state.cursor.index
    }

    /// Records appended since the queue began (the next record's index).
    pub fn appended(&self) -> u64 {
        self.state().next_index
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> u64 {
        self.state().queued_bytes()
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cap on [`Queue::queued_bytes`].
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// When the oldest waiting record was written (Unix ms, to the second: a record may be up
    /// to a second younger; after a restart, as old as the first waiting record of its
    /// segment), if any waits.
    pub fn oldest_at_ms(&self) -> Option<u64> {
        let state = self.state();
        if state.next_index == state.cursor.index {
            return None;
        }
        state.written_at.front().map(|&(_, at_ms)| at_ms)
    }

    /// Where delivery stands: records before it were delivered.
    pub fn cursor(&self) -> Position {
        self.state().cursor
    }

    /// Records everything before `upto` as delivered: moves the cursor in memory and forgets
    /// the segments wholly before it (the queue thread writes the cursor and deletes their
    /// files, [`QueueWriter::persist_delivery`]). A position behind the cursor changes nothing.
    pub fn ack(&self, upto: Position) {
        let mut state = self.state();
        if upto.index <= state.cursor.index {
            return;
        }
        state.cursor = upto;
        state.cursor_moved = true;
        // Segments wholly delivered: those before the cursor's, and the cursor's own when the
        // cursor is at its end and a newer one exists (the cursor moves to the newer one's start).
        while state.segments.len() > 1 {
            let Some(&(id, len)) = state.segments.front() else { break };
            let done = id < state.cursor.segment || (id == state.cursor.segment && state.cursor.offset >= len);
            if !done {
                break;
            }
            state.segments.pop_front();
            state.delivered_segments.push(id);
            if let Some(&(next, _)) = state.segments.front()
                && id == state.cursor.segment
            {
                state.cursor = Position { segment: next, offset: 0, index: state.cursor.index };
            }
        }
        while state.written_at.get(1).is_some_and(|&(first, _)| first <= state.cursor.index) {
            state.written_at.pop_front();
        }
    }

    /// A reader from the cursor (the sender's).
    pub fn reader(self: &Arc<Self>) -> QueueReader {
        QueueReader { queue: self.clone(), at: self.cursor(), file: None, buffer: Vec::new(), buffered: (0, 0) }
    }
}

/// The one writer (the queue thread's).
#[derive(Debug)]
pub struct QueueWriter {
    queue: Arc<Queue>,
    file: File,
    segment: u64,
    len: u64,
    unsynced: usize,
    first_unsynced_ms: u64,
    buf: Vec<u8>,
}

impl QueueWriter {
    /// The index the next record gets.
    pub fn next_index(&self) -> u64 {
        self.queue.state().next_index
    }

    /// Appends one record per payload built by `build(index, out)` for each of `items`, in
    /// order, in one write per segment. Returns how many were refused because the queue is
    /// full (`queue_max`): those get no index.
    pub fn append<T>(&mut self, items: &[T], mut build: impl FnMut(&T, u64, &mut Vec<u8>)) -> std::io::Result<usize> {
        let (mut queued, mut index) = {
            let state = self.queue.state();
            (state.queued_bytes(), state.next_index)
        };
        let mut refused = 0;
        let now_ms = crate::clock::unix_ms();
        let mut payload = Vec::with_capacity(512);
        self.buf.clear();
        for item in items {
            payload.clear();
            build(item, index, &mut payload);
            payload.truncate(MAX_PAYLOAD);
            let size = (HEADER_BYTES + payload.len()) as u64;
            if queued + size > self.queue.max_bytes {
                refused += 1;
                continue;
            }
            if self.len + self.buf.len() as u64 + size > self.queue.segment_bytes && self.len + self.buf.len() as u64 > 0 {
                self.write_out(index, now_ms)?;
                self.rotate(index)?;
            }
            encode(&mut self.buf, index, now_ms, &payload);
            queued += size;
            index += 1;
        }
        self.write_out(index, now_ms)?;
        Ok(refused)
    }

    /// Writes the buffered records (written at `now_ms`) and publishes them (up to `next_index`).
    fn write_out(&mut self, next_index: u64, now_ms: u64) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.file.write_all(&self.buf) {
            // A write cut short (a full disk) leaves part of the batch in the file: cut it off,
            // or the next batch would land behind bytes the reader cannot read past.
            let _ = self.file.set_len(self.len);
            return Err(error);
        }
        self.len += self.buf.len() as u64;
        if self.unsynced == 0 {
            self.first_unsynced_ms = crate::clock::unix_ms();
        }
        self.unsynced += 1;
        self.buf.clear();
        {
            let mut state = self.queue.state();
            let first = state.next_index;
            if state.written_at.back().is_none_or(|&(_, at_ms)| now_ms >= at_ms + 1000) {
                state.written_at.push_back((first, now_ms));
            }
            state.next_index = next_index;
            if let Some(last) = state.segments.back_mut() {
                last.1 = self.len;
            }
        }
        self.queue.appended.notify_waiters();
        Ok(())
    }

    /// Syncs and closes the current segment and starts the one whose first index is `index`.
    fn rotate(&mut self, index: u64) -> std::io::Result<()> {
        self.sync()?;
        let path = segment_path(&self.queue.dir, index);
        self.file = OpenOptions::new().append(true).create(true).open(&path)?;
        self.segment = index;
        self.len = 0;
        self.queue.state().segments.push_back((index, 0));
        Ok(())
    }

    /// Writes the cursor to disk if it moved, then deletes the segments delivered since the
    /// last time (the queue thread calls this every round, so the sender's acknowledgements
    /// never wait on the disk). A failed write leaves everything to the next round.
    pub fn persist_delivery(&mut self) -> std::io::Result<()> {
        let (cursor, delivered) = {
            let mut state = self.queue.state();
            if !state.cursor_moved {
                return Ok(());
            }
            state.cursor_moved = false;
            (state.cursor, std::mem::take(&mut state.delivered_segments))
        };
        if let Err(error) = write_cursor(&self.queue.cursor_file, cursor) {
            let mut state = self.queue.state();
            state.cursor_moved = true;
            state.delivered_segments.extend(delivered);
            return Err(error);
        }
        for id in delivered {
            let _ = std::fs::remove_file(segment_path(&self.queue.dir, id));
        }
        Ok(())
    }

    /// `fdatasync`s when [`SYNC_EVERY_MS`] passed since the first unsynced write, or
    /// [`SYNC_EVERY_RECORDS`] writes wait.
    pub fn sync_if_due(&mut self) -> std::io::Result<()> {
        if self.unsynced > 0
            && (self.unsynced >= SYNC_EVERY_RECORDS || crate::clock::unix_ms().saturating_sub(self.first_unsynced_ms) >= SYNC_EVERY_MS)
        {
            self.sync()?;
        }
        Ok(())
    }

    /// `fdatasync`s now.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// The sender's reader: reads records in order from a position; [`QueueReader::rewind`] goes
/// back to the cursor (what was read but not delivered is read again).
#[derive(Debug)]
pub struct QueueReader {
    queue: Arc<Queue>,
    at: Position,
    file: Option<(u64, File)>,
    /// Bytes read ahead: from `buffered.0` (segment) at offset `buffered.1`.
    buffer: Vec<u8>,
    buffered: (u64, u64),
}

impl QueueReader {
    /// Goes back to the first record not delivered.
    pub fn rewind(&mut self) {
        self.at = self.queue.cursor();
    }

    /// Appends to `out` up to `max` records (at least one), waiting until there is one.
    pub async fn next(&mut self, max: usize, out: &mut Vec<Record>) -> std::io::Result<()> {
        let queue = self.queue.clone();
        loop {
            let appended = queue.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            self.read_available(max, out)?;
            if !out.is_empty() {
                return Ok(());
            }
            appended.await;
        }
    }

    /// Reads what is there now (up to `max` records), without waiting.
    pub fn read_available(&mut self, max: usize, out: &mut Vec<Record>) -> std::io::Result<()> {
        let start = out.len();
        while out.len() - start < max {
            let (len, next) = {
                let state = self.queue.state();
                let mut segments = state.segments.iter().skip_while(|(id, _)| *id != self.at.segment);
                let Some(&(_, len)) = segments.next() else {
                    // Our segment was delivered and deleted meanwhile: continue from the cursor.
                    self.at = state.cursor;
                    continue;
                };
                (len, segments.next().map(|(id, _)| *id))
            };
            if self.at.offset >= len {
                match next {
                    Some(id) => {
                        self.at = Position { segment: id, offset: 0, index: self.at.index };
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            // From the read-ahead buffer; read (up to READ_CHUNK) only when it does not hold the
            // next whole record.
            let mut used = self.take_buffered(max - (out.len() - start), out);
            if used == 0 {
                let offset = self.at.offset;
                let want = (len - offset).min(READ_CHUNK as u64) as usize;
                let mut buffer = std::mem::take(&mut self.buffer);
                buffer.resize(want, 0);
                let got = read_full_at(self.file_for(self.at.segment)?, &mut buffer, offset)?;
                buffer.truncate(got);
                self.buffer = buffer;
                self.buffered = (self.at.segment, offset);
                used = self.take_buffered(max - (out.len() - start), out);
            }
            if used == 0 {
                // A record bigger than the chunk (never written so) or damaged bytes in a
                // sealed segment: skip the rest of the segment rather than stall forever.
                match next {
                    Some(id) => self.at = Position { segment: id, offset: 0, index: id },
                    None => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// Decodes up to `max` records at the reading position from the read-ahead buffer;
    /// returns how many.
    fn take_buffered(&mut self, max: usize, out: &mut Vec<Record>) -> usize {
        let (segment, from) = self.buffered;
        if segment != self.at.segment || self.at.offset < from || self.at.offset >= from + self.buffer.len() as u64 {
            return 0;
        }
        let mut at = (self.at.offset - from) as usize;
        let mut taken = 0;
        while taken < max {
            match decode(&self.buffer[at..]) {
                Some((index, at_ms, payload, size)) if index == self.at.index => {
                    at += size;
                    self.at = Position { segment, offset: self.at.offset + size as u64, index: index + 1 };
                    out.push(Record { index, at_ms, payload: payload.to_vec(), end: self.at });
                    taken += 1;
                }
                _ => break,
            }
        }
        taken
    }

    fn file_for(&mut self, segment: u64) -> std::io::Result<&File> {
        if self.file.as_ref().is_none_or(|(id, _)| *id != segment) {
            self.file = Some((segment, File::open(segment_path(&self.queue.dir, segment))?));
        }
        match &self.file {
            Some((_, file)) => Ok(file),
            None => Err(std::io::Error::other("segment not open")),
        }
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn encode(out: &mut Vec<u8>, index: u64, at_ms: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&at_ms.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One whole, intact record at the start of `bytes`: (index, at_ms, payload, record size).
fn decode(bytes: &[u8]) -> Option<(u64, u64, &[u8], usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..HEADER_BYTES + len)?;
    if crc32(body) != crc {
        return None;
    }
    let index = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let at_ms = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((index, at_ms, &body[16..], HEADER_BYTES + len))
}

/// The record at `offset` of a segment `len` long: (index, at_ms, record size), or `None`
/// when there is no intact one.
fn read_record_at(file: &File, offset: u64, len: u64) -> std::io::Result<Option<(u64, u64, u64)>> {
    if offset + HEADER_BYTES as u64 > len {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_BYTES];
    read_full_at(file, &mut header, offset)?;
    let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if size > MAX_PAYLOAD || offset + (HEADER_BYTES + size) as u64 > len {
        return Ok(None);
    }
    let mut record = vec![0u8; HEADER_BYTES + size];
    read_full_at(file, &mut record, offset)?;
    Ok(decode(&record).map(|(index, at_ms, _, size)| (index, at_ms, size as u64)))
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn read_cursor(file: &File) -> Option<Position> {
    let mut bytes = [0u8; 28];
    if read_full_at(file, &mut bytes, 0).ok()? != bytes.len() {
        return None;
    }
    let field = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap_or_default());
    (crc32(&bytes[..24]) == crc).then(|| Position { segment: field(0), offset: field(8), index: field(16) })
}

fn write_cursor(file: &File, at: Position) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(28);
    bytes.extend_from_slice(&at.segment.to_le_bytes());
    bytes.extend_from_slice(&at.offset.to_le_bytes());
    bytes.extend_from_slice(&at.index.to_le_bytes());
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    file.write_all_at(&bytes, 0)
}

#[cfg(test)]
mod tests;
