//! Tests of the disk queue: order, delivery cursor, restart, torn tails, segments, the cap.

use super::*;

fn push(writer: &mut QueueWriter, lines: &[&str]) -> usize {
    writer.append(lines, |line, index, out| out.extend_from_slice(format!("{index}:{line}").as_bytes())).unwrap()
}

fn read_all(reader: &mut QueueReader) -> Vec<String> {
    let mut out = Vec::new();
    reader.read_available(usize::MAX, &mut out).unwrap();
    out.iter().map(|r| String::from_utf8(r.payload.clone()).unwrap()).collect()
}

#[test]
fn records_come_back_in_order_and_only_undelivered_ones_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, mut writer, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered, Recovered::default());
    assert_eq!(push(&mut writer, &["a", "b", "c"]), 0);
    let mut reader = queue.reader();
    let mut records = Vec::new();
    reader.read_available(2, &mut records).unwrap();
    assert_eq!(records.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1]);
    queue.ack(records[0].end);
    assert_eq!((queue.queued(), queue.queued_bytes()), (2, 2 * (HEADER_BYTES as u64 + 3)));
    writer.persist_delivery().unwrap();
    // Read but not delivered: read again after a rewind.
    reader.rewind();
    assert_eq!(read_all(&mut reader), ["1:b", "2:c"]);
    drop((queue, writer, reader));

    // A restart (no sync, no clean close: the page cache is what kill -9 leaves).
    let (queue, mut writer, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered, Recovered { records: 2, cut_bytes: 0 });
    assert_eq!(read_all(&mut queue.reader()), ["1:b", "2:c"]);
    push(&mut writer, &["d"]);
    assert_eq!(read_all(&mut queue.reader()), ["1:b", "2:c", "3:d"], "indices continue after the restart");
    assert!(queue.oldest_at_ms().is_some_and(|at| at.abs_diff(crate::clock::unix_ms()) < 10_000));
}

#[test]
fn a_torn_or_damaged_tail_is_cut_at_the_last_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut writer, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    push(&mut writer, &["one", "two", "three"]);
    drop(writer);
    let segment = segment_path(dir.path(), 0);
    let full = std::fs::metadata(&segment).unwrap().len();
    // A power loss mid-write: the last record is half there.
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(full - 3).unwrap();
    let (queue, mut writer, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.records, 2);
    assert_eq!(recovered.cut_bytes, full - 3 - 2 * (HEADER_BYTES as u64 + 5));
    push(&mut writer, &["four"]);
    assert_eq!(read_all(&mut queue.reader()), ["0:one", "1:two", "2:four"]);
    drop((queue, writer));
    // A flipped byte in a payload: the checksum catches it.
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    std::fs::write(&segment, bytes).unwrap();
    let (queue, _, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.records, 2);
    assert_eq!(read_all(&mut queue.reader()), ["0:one", "1:two"]);
}

#[test]
fn segments_roll_over_and_delivered_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, mut writer, _) = Queue::open_sized(dir.path(), 1 << 20, 100).unwrap();
    let lines: Vec<String> = (0..10).map(|i| format!("line-{i:02}-{}", "x".repeat(20))).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    push(&mut writer, &refs);
    let segments = || std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some()).count();
    assert!(segments() >= 5, "{} segments", segments());
    let mut reader = queue.reader();
    let mut records = Vec::new();
    reader.read_available(usize::MAX, &mut records).unwrap();
    assert_eq!(records.iter().map(|r| r.index).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    let before = segments();
    queue.ack(records[6].end);
    assert_eq!(segments(), before, "an acknowledgement does not touch the disk");
    assert_eq!(queue.queued(), 3);
    writer.persist_delivery().unwrap();
    assert!(segments() <= 3, "{} segments left", segments());
    assert_eq!(queue.queued(), 3);
    drop((queue, writer, reader));
    let (queue, _, recovered) = Queue::open_sized(dir.path(), 1 << 20, 100).unwrap();
    assert_eq!(recovered.records, 3);
    let left = read_all(&mut queue.reader());
    assert_eq!(left.len(), 3);
    assert!(left[0].starts_with("7:line-07"), "{left:?}");
}

#[test]
fn a_full_queue_keeps_the_oldest_and_refuses_the_newest_until_some_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let record = HEADER_BYTES as u64 + 10;
    let (queue, mut writer, _) = Queue::open(dir.path(), 3 * record).unwrap();
    assert_eq!(push(&mut writer, &["aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd", "eeeeeeee"]), 2);
    assert_eq!(queue.queued(), 3);
    let mut reader = queue.reader();
    let mut records = Vec::new();
    reader.read_available(1, &mut records).unwrap();
    queue.ack(records[0].end);
    assert_eq!(push(&mut writer, &["ffffffff", "gggggggg"]), 1);
    assert_eq!(read_all(&mut reader), ["1:bbbbbbbb", "2:cccccccc", "3:ffffffff"], "the refused lines took no index");
}

#[test]
fn a_cursor_not_yet_persisted_sends_again_after_a_crash_and_the_oldest_age_follows_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, mut writer, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(queue.oldest_at_ms(), None);
    push(&mut writer, &["a", "b"]);
    let first_at = queue.oldest_at_ms().unwrap();
    assert!(first_at.abs_diff(crate::clock::unix_ms()) < 10_000);
    let mut records = Vec::new();
    queue.reader().read_available(2, &mut records).unwrap();
    queue.ack(records[1].end);
    assert_eq!(queue.oldest_at_ms(), None, "nothing waits");
    // kill -9 before the queue thread wrote the cursor: both are sent again, none lost.
    drop((queue, writer));
    let (queue, mut writer, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.records, 2);
    assert_eq!(queue.oldest_at_ms(), Some(first_at), "the age survives the restart");
    let mut records = Vec::new();
    queue.reader().read_available(2, &mut records).unwrap();
    queue.ack(records[1].end);
    writer.persist_delivery().unwrap();
    drop((queue, writer));
    let (_, _, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.records, 0, "persisted: nothing sent twice");
}

#[tokio::test]
async fn a_waiting_reader_wakes_when_a_record_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, mut writer, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    let mut reader = queue.reader();
    let waiting = tokio::spawn(async move {
        let mut out = Vec::new();
        reader.next(10, &mut out).await.unwrap();
        out.len()
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    push(&mut writer, &["x"]);
    assert_eq!(tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap(), 1);
}

#[test]
fn a_cursor_beyond_the_data_a_crash_lost_comes_back_and_new_lines_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, mut writer, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    push(&mut writer, &["a", "b", "c"]);
    let mut reader = queue.reader();
    let mut records = Vec::new();
    reader.read_available(3, &mut records).unwrap();
    queue.ack(records[2].end); // all three delivered: the cursor is at the end
    writer.persist_delivery().unwrap();
    drop((queue, writer, reader));
    // The cursor file survived, the segment's data did not (a power loss).
    let segment = segment_path(dir.path(), 0);
    OpenOptions::new().write(true).open(&segment).unwrap().set_len(HEADER_BYTES as u64 + 3).unwrap();
    let (queue, mut writer, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    push(&mut writer, &["d", "e"]);
    assert_eq!(read_all(&mut queue.reader()), ["1:d", "2:e"], "the lines written after the restart are read, not skipped");
}

/// Unmounts the small file system of a test, whatever the test's outcome.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_no_partial_record_behind_and_a_restart_finds_only_whole_records() {
    // A real full disk: a 16 KiB tmpfs (root only: mount; skipped elsewhere).
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "portcullis-test"])
        .arg(dir.path())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs (not root)");
        return;
    }
    let _unmount = Mounted(dir.path().to_path_buf());
    let (queue, mut writer, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    let line = "x".repeat(1000);
    let mut written = 0;
    let failed = loop {
        match writer.append(&[line.as_str(), line.as_str(), line.as_str()], |l, _, out| out.extend_from_slice(l.as_bytes())) {
            Ok(_) => written += 3,
            Err(error) => break error,
        }
        assert!(written < 1000, "the 16 KiB file system never filled");
    };
    assert!(written > 0, "{failed}");
    let whole = written as u64 * (HEADER_BYTES as u64 + 1000);
    assert_eq!(std::fs::metadata(segment_path(dir.path(), 0)).unwrap().len(), whole, "no partial batch left in the segment");
    // Every whole record reads back.
    let mut reader = queue.reader();
    let mut records = Vec::new();
    reader.read_available(usize::MAX, &mut records).unwrap();
    assert_eq!(records.len(), written);
    drop((queue, writer, reader));
    let (_, _, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.cut_bytes, 0, "a restart finds only whole records");
}
