//! Kernel mirror of the shield's bans (`protection.nftables_set`): banned sources are also
//! added, in batches, to sets with per-element timeouts in one nftables table Portcullis owns,
//! so the kernel drops their packets to our listener ports before any socket work.
//!
//! The table (`inet <protection.nftables_table>`, default `portcullis`; with `[firewall]` on,
//! the firewall's table, see [`super::firewall`]) is replaced as a whole at start (with every
//! ban in force), again whenever its owner asks ([`NftMirror::replace`]: the firewall when a
//! listener starts or stops), and deleted at a clean shutdown; Portcullis never touches
//! another table. The mirror's own table holds `ports` (the listeners' ports), `banned4`
//! (IPv4 addresses) and `banned6` (IPv6 prefixes of `ipv6_prefix` bits, stored as their first
//! address and matched as `ip6 saddr & mask` — a plain set, because adding and deleting one
//! element in the same transaction fails on interval sets) and one `input` chain at priority
//! `filter - 10` that drops new TCP connections (SYN without ACK) and UDP datagrams from
//! `@banned*` sources to `@ports`. Only a SYN pays for the set lookup, so established
//! traffic costs one flags test per packet; a connection opened before its ban is answered by
//! the shield itself. One task writes to the kernel, in order: changes are applied by `nft -f -`
//! in one atomic transaction per batch (at most [`MAX_BATCH`] changes, collected for
//! [`BATCH_DELAY`]). The mirror is best effort: the shield's own check stays authoritative, so
//! a failed `nft` run is logged to `error.log` and costs nothing but kernel-level dropping.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::Shield;
use crate::event::{Event, Received, Subscriber};
use crate::telemetry::logging::ErrorLog;

/// Most changes applied in one `nft` transaction.
pub const MAX_BATCH: usize = 10_000;
/// How long changes are collected before a batch is applied.
pub const BATCH_DELAY: Duration = Duration::from_millis(20);
/// Most changes waiting to be applied; beyond this, changes are dropped (and counted in
/// `error.log`): the shield still refuses those sources itself.
pub const MAX_QUEUED: usize = 200_000;
/// Longest kernel timeout set on an element; a longer ban is re-added at the next start.
pub const MAX_ELEMENT_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// One change to the kernel sets. An IPv6 source is masked when it is written, with the
/// prefix of the table then in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Ban { source: IpAddr, remaining: Duration },
    Unban { source: IpAddr },
}

/// Work for the task that writes to the kernel.
enum Job {
    Change(Change),
    /// Replace the whole table with the script `render` makes when the job's turn comes (so
    /// it sees every ban applied before it), and say how it went. `ipv6_prefix` is the one
    /// its rules mask with: later changes are masked alike once it is in.
    Replace {
        ipv6_prefix: u8,
        render: Box<dyn FnOnce() -> String + Send>,
        done: oneshot::Sender<Result<(), NftError>>,
    },
    /// Delete the table (after everything queued before) and drop changes until a replacement.
    Remove {
        done: oneshot::Sender<Result<(), NftError>>,
    },
}

/// A running mirror; changes are queued and applied by a background task.
#[derive(Debug, Clone)]
pub struct NftMirror {
    jobs: mpsc::Sender<Job>,
    /// Changes refused because the queue was full (reported by the next batch).
    dropped: Arc<AtomicU64>,
    /// The table was taken down on purpose: changes are dropped until a replacement succeeds
    /// (it re-adds every ban in force).
    suspended: Arc<AtomicBool>,
    /// The IPv6 prefix the owner renders the table's rules with (the elements follow the
    /// table actually in the kernel: see [`Job::Replace`]). Changed only together with a
    /// replacement of the table ([`NftMirror::set_ipv6_prefix`]).
    ipv6_prefix: Arc<std::sync::atomic::AtomicU8>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Change(change) => write!(f, "{change:?}"),
            Job::Replace { .. } => f.write_str("Replace"),
            Job::Remove { .. } => f.write_str("Remove"),
        }
    }
}

/// Where each applied (or failed) batch of ban changes is recorded (the firewall's
/// `firewall.log`): one line, e.g. `applied table=t_bans reason=bans banned=3 lifted=1
/// took_ms=9`.
pub type BatchLog = Arc<dyn Fn(&str) + Send + Sync>;

/// A ban to mirror: the banned source, its prefix length and the time it has left.
pub type MirroredBan = (IpAddr, u8, Duration);

impl NftMirror {
    /// Applies `script` (which must create `table` with the `banned4`/`banned6` sets and
    /// hold the bans in force) and starts the writer; an error (no `nft`, not root…) says why
    /// and leaves no mirror.
    pub async fn start(
        table: &str,
        ipv6_prefix: u8,
        script: &str,
        error_log: ErrorLog,
        batches: Option<BatchLog>,
    ) -> Result<NftMirror, NftError> {
        run_nft(script).await?;
        let (sender, receiver) = mpsc::channel(MAX_QUEUED);
        let dropped = Arc::new(AtomicU64::new(0));
        let suspended = Arc::new(AtomicBool::new(false));
        let writer =
            Writer { table: table.to_string(), ipv6_prefix, dropped: dropped.clone(), suspended: suspended.clone(), error_log, batches };
        tokio::spawn(writer.apply_jobs(receiver));
        Ok(NftMirror { jobs: sender, dropped, suspended, ipv6_prefix: Arc::new(std::sync::atomic::AtomicU8::new(ipv6_prefix)) })
    }

    /// Replaces the whole table with what `render` makes (its IPv6 rules masking with
    /// `ipv6_prefix`) once every change queued before this call has been applied; waits for
    /// the outcome.
    pub async fn replace(&self, ipv6_prefix: u8, render: impl FnOnce() -> String + Send + 'static) -> Result<(), NftError> {
        let (done, outcome) = oneshot::channel();
        self.jobs.send(Job::Replace { ipv6_prefix, render: Box::new(render), done }).await.map_err(|_| NftError::Stopped)?;
        outcome.await.map_err(|_| NftError::Stopped)?
    }

    /// The IPv6 prefix new elements are masked with.
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix.load(Ordering::SeqCst)
    }

    /// Masks later IPv6 elements with `prefix`: the caller then replaces the table with rules
    /// and elements of the same prefix (a reload that changed `protection.ipv6_prefix`).
    pub fn set_ipv6_prefix(&self, prefix: u8) {
        self.ipv6_prefix.store(prefix, Ordering::SeqCst);
    }

    /// Queues a ban of `source` for `remaining` (IPv6: its prefix of the table's length).
    pub fn ban(&self, source: IpAddr, remaining: Duration) {
        self.queue(Change::Ban { source, remaining });
    }

    /// Queues the removal of `source` (IPv6: its prefix of the table's length).
    pub fn unban(&self, source: IpAddr) {
        self.queue(Change::Unban { source });
    }

    fn queue(&self, change: Change) {
        if self.jobs.try_send(Job::Change(change)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Follows the bans published on `events` until the bus closes: a ban in force is added
    /// with its remaining time, a lifted one removed. After a lag every ban still in force in
    /// `shield` is added again (an unban missed then ends with the element's timeout).
    pub async fn follow(self: Arc<Self>, mut events: Subscriber, shield: Weak<Shield>) {
        while let Some(received) = events.next().await {
            match received {
                Received::Event(event) => match &*event {
                    Event::BanInForce { source, until_ms, .. } | Event::Banned { source, until_ms, .. } => {
                        // Whole seconds, rounded up: the kernel's timeout granularity.
                        let remaining_ms = until_ms.saturating_sub(crate::clock::unix_ms());
                        self.ban(*source, Duration::from_secs(remaining_ms.div_ceil(1000)));
                    }
                    Event::BanLifted { source, .. } => self.unban(*source),
                    _ => {}
                },
                Received::Missed(_) => {
                    let Some(shield) = shield.upgrade() else { return };
                    for (source, _, remaining) in shield.mirrored_bans() {
                        self.ban(source, remaining);
                    }
                }
            }
        }
    }

    /// Deletes the table (clean shutdown, or the operator's `firewall remove`); ban changes
    /// are dropped from then on, until a [`NftMirror::replace`] puts the table back.
    pub async fn remove(&self) -> Result<(), NftError> {
        self.suspended.store(true, Ordering::SeqCst);
        let (done, outcome) = oneshot::channel();
        self.jobs.send(Job::Remove { done }).await.map_err(|_| NftError::Stopped)?;
        outcome.await.map_err(|_| NftError::Stopped)?
    }
}

/// The task that writes to the kernel, in order.
struct Writer {
    table: String,
    /// The IPv6 prefix of the table in the kernel (its rules' mask).
    ipv6_prefix: u8,
    dropped: Arc<AtomicU64>,
    suspended: Arc<AtomicBool>,
    error_log: ErrorLog,
    batches: Option<BatchLog>,
}

impl Writer {
    async fn apply_jobs(self, mut receiver: mpsc::Receiver<Job>) {
        let Writer { table, mut ipv6_prefix, dropped, suspended, error_log, batches } = self;
        let mut next = None;
        loop {
            let job = match next.take() {
                Some(job) => job,
                None => match receiver.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let first = match job {
                Job::Replace { ipv6_prefix: rendered_with, render, done } => {
                    let outcome = run_nft(&render()).await;
                    if outcome.is_ok() {
                        suspended.store(false, Ordering::SeqCst);
                        ipv6_prefix = rendered_with;
                    }
                    let _ = done.send(outcome);
                    continue;
                }
                // Everything queued before it has run: the table stays gone.
                Job::Remove { done } => {
                    suspended.store(true, Ordering::SeqCst);
                    let _ = done.send(run_nft(&format!("delete table inet {table}\n")).await);
                    continue;
                }
                Job::Change(change) => change,
            };
            tokio::time::sleep(BATCH_DELAY).await;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(Job::Change(change)) => batch.push(change),
                    // A replacement waits for the changes queued before it.
                    Ok(replace) => {
                        next = Some(replace);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if suspended.load(Ordering::SeqCst) {
                continue; // the table is down on purpose; a replacement re-adds the bans in force
            }
            let began = tokio::time::Instant::now();
            let outcome = run_nft(&changes_script(&table, ipv6_prefix, &batch)).await;
            let banned = batch.iter().filter(|c| matches!(c, Change::Ban { .. })).count();
            let what = format!("table={table} reason=bans banned={banned} lifted={}", batch.len() - banned);
            match outcome {
                Ok(()) => {
                    if let Some(log) = &batches {
                        log(&format!("applied {what} took_ms={}", began.elapsed().as_millis()));
                    }
                }
                Err(error) => {
                    if let Some(log) = &batches {
                        log(&format!("failed {what} error={error}"));
                    }
                    error_log.error(&format!("nftables mirror: {} change(s) not applied: {error}", batch.len()));
                }
            }
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                error_log.error(&format!("nftables mirror: {lost} change(s) dropped (queue of {MAX_QUEUED} full)"));
            }
        }
    }
}

/// The mirror's own table (no `[firewall]`): `ports`, the ban sets with `bans` in them, and
/// the rules that drop banned sources' new connections to `ports`. `table … {}` then
/// `delete` makes the first run and every later one alike (nft 1.0 has no `destroy`).
pub fn mirror_table(table: &str, ports: &[u16], ipv6_prefix: u8, bans: &[MirroredBan]) -> String {
    let mask = ipv6_mask(ipv6_prefix);
    let mut script = format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n\
         \tset ports {{ type inet_service; }}\n\
         \tset banned4 {{ type ipv4_addr; flags timeout; size {size}; }}\n\
         \tset banned6 {{ type ipv6_addr; flags timeout; size {size}; }}\n\
         \tchain input {{\n\t\ttype filter hook input priority filter - 10; policy accept;\n\
         \t\ttcp flags & (syn | ack) == syn tcp dport @ports ip saddr @banned4 drop\n\
         \t\ttcp flags & (syn | ack) == syn tcp dport @ports ip6 saddr & {mask} @banned6 drop\n\
         \t\tudp dport @ports ip saddr @banned4 drop\n\
         \t\tudp dport @ports ip6 saddr & {mask} @banned6 drop\n\t}}\n}}\n{}",
        ports_script(table, ports),
        size = crate::protect::MAX_BANS,
    );
    script.push_str(&bans_script(table, ipv6_prefix, bans));
    script
}

/// The mask of an IPv6 prefix of `bits` bits, as an address (`ffff:ffff:ffff:ffff::` for 64).
pub fn ipv6_mask(bits: u8) -> Ipv6Addr {
    let bits = u32::from(bits.min(128));
    Ipv6Addr::from(if bits == 0 { 0 } else { u128::MAX << (128 - bits) })
}

/// Statements that add `bans` to the ban sets of a table just created (so no element exists
/// yet): one `add element` per set and [`MAX_BATCH`] bans, which keeps a replacement with
/// 100,000 bans to a few statements.
pub fn bans_script(table: &str, ipv6_prefix: u8, bans: &[MirroredBan]) -> String {
    let mut script = String::new();
    for set in ["banned4", "banned6"] {
        let elements: Vec<String> = bans
            .iter()
            .map(|&(source, _, remaining)| (element(source, ipv6_prefix), remaining))
            .filter(|((in_set, _), _)| *in_set == set)
            .map(|((_, element), remaining)| format!("{element} timeout {}s", timeout_secs(remaining)))
            .collect();
        for chunk in elements.chunks(MAX_BATCH) {
            let _ = writeln!(script, "add element inet {table} {set} {{ {} }}", chunk.join(", "));
        }
    }
    script
}

/// A ban's kernel timeout: whole seconds, at least one, at most [`MAX_ELEMENT_TIMEOUT`].
fn timeout_secs(remaining: Duration) -> u64 {
    remaining.min(MAX_ELEMENT_TIMEOUT).as_secs().max(1)
}

fn ports_script(table: &str, ports: &[u16]) -> String {
    if ports.is_empty() {
        return String::new();
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("add element inet {table} ports {{ {} }}\n", list.join(", "))
}

/// The set and element of a banned source: an IPv4 address, or the first address of an IPv6
/// prefix (the rules mask the source the same way).
fn element(source: IpAddr, prefix: u8) -> (&'static str, String) {
    match crate::protect::source_of(source, prefix) {
        IpAddr::V4(v4) => ("banned4", v4.to_string()),
        IpAddr::V6(v6) => ("banned6", v6.to_string()),
    }
}

/// Statements for `changes`. Each element is first added without a timeout and deleted (so
/// neither an unknown element nor an existing one fails the transaction), then a ban adds it
/// back with its timeout (nft's `add` does not refresh an existing element's timeout).
fn changes_script(table: &str, ipv6_prefix: u8, changes: &[Change]) -> String {
    let mut script = String::new();
    for change in changes {
        let (Change::Ban { source, .. } | Change::Unban { source }) = change;
        let (set, element) = element(*source, ipv6_prefix);
        let _ = writeln!(script, "add element inet {table} {set} {{ {element} }}");
        let _ = writeln!(script, "delete element inet {table} {set} {{ {element} }}");
        if let Change::Ban { remaining, .. } = change {
            let _ = writeln!(script, "add element inet {table} {set} {{ {element} timeout {}s }}", timeout_secs(*remaining));
        }
    }
    script
}

/// Why an `nft` run failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    #[error("cannot write to nft: {0}")]
    Write(std::io::Error),
    #[error("nft did not finish within 30 s")]
    Timeout,
    #[error("nft failed: {0}")]
    Wait(std::io::Error),
    #[error("the nftables writer stopped")]
    Stopped,
    #[error("nft exited with {status}: {stderr}")]
    Refused { status: std::process::ExitStatus, stderr: String },
}

/// What `nft ARGS` prints (a listing), `None` when it cannot run, fails or takes over 10 s.
pub async fn list(args: &[&str]) -> Option<String> {
    let listed = tokio::process::Command::new("nft").args(args).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(10), listed).await.ok()?.ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `script` as one `nft -f -` transaction.
pub async fn run_nft(script: &str) -> Result<(), NftError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(NftError::Write)?;
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| NftError::Timeout)?
        .map_err(NftError::Wait)?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(NftError::Refused { status: output.status, stderr: stderr.lines().take(3).collect::<Vec<_>>().join(" | ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_replaces_any_existing_element_and_an_unban_never_fails_on_a_missing_one() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        let script =
            changes_script("pc", 64, &[Change::Ban { source: v4, remaining: Duration::from_millis(1500) }, Change::Unban { source: v6 }]);
        assert_eq!(
            script,
            "add element inet pc banned4 { 192.0.2.7 }\ndelete element inet pc banned4 { 192.0.2.7 }\n\
             add element inet pc banned4 { 192.0.2.7 timeout 1s }\n\
             add element inet pc banned6 { 2001:db8:: }\ndelete element inet pc banned6 { 2001:db8:: }\n"
        );
    }

    #[test]
    fn ipv6_elements_are_masked_with_the_prefix_of_the_table_in_the_kernel() {
        let v6: IpAddr = "2001:db8:5:6::1".parse().unwrap();
        let per_48 = changes_script("t", 48, &[Change::Unban { source: v6 }]);
        assert!(per_48.contains("banned6 { 2001:db8:5:: }"), "{per_48}");
        let per_64 = changes_script("t", 64, &[Change::Unban { source: v6 }]);
        assert!(per_64.contains("banned6 { 2001:db8:5:6:: }"), "{per_64}");
    }

    #[test]
    fn element_timeouts_are_capped_and_never_zero() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let long = changes_script("t", 64, &[Change::Ban { source: ip, remaining: Duration::from_secs(400 * 24 * 3600) }]);
        assert!(long.contains(&format!("timeout {}s", MAX_ELEMENT_TIMEOUT.as_secs())), "{long}");
        let short = changes_script("t", 64, &[Change::Ban { source: ip, remaining: Duration::ZERO }]);
        assert!(short.contains("timeout 1s"), "{short}");
    }
}
