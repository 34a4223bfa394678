//! The outage breaker (SPEC "Outages pause the run instead of failing
//! every row"): when attempts keep failing (connection errors, timeouts,
//! 5xx, 429) and nothing has succeeded since — at least
//! [`MIN_FAILURES`] in a row over at least [`MIN_ROWS`] rows — the API
//! may be down: the run pauses. Rows are no longer charged attempts (an
//! attempt that fails while the breaker is open is given back), and one
//! probe at a time (the request `check` sends) asks whether Banxa is up,
//! backing off up to [`PROBE_CAP`]. A probe that Banxa answers closes the
//! breaker: the failures were the rows' own, so those rows are charged
//! again and the breaker does not pause for them again. A row that uses
//! up its attempts while nothing shows Banxa up is held ([`Mark`],
//! [`Verdict`]): it ends `failed` only once Banxa is shown up. Nothing
//! succeeding for `--max-outage` stops the run (exit 3, resumable).
//!
//! The state machine ([`State`]) is pure: time comes in as an argument,
//! so the tests drive it without sleeping. [`Breaker`] wraps it for the
//! workers, with the gate they wait at while it is open.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Failed attempts in a row that may open the breaker.
pub const MIN_FAILURES: u32 = 20;
/// ... over at least this many different rows.
pub const MIN_ROWS: usize = 10;
/// The longest wait between two probes.
pub const PROBE_CAP: Duration = Duration::from_secs(60);
/// The first wait before a probe.
pub const PROBE_FIRST: Duration = Duration::from_millis(500);
/// A row held at its last attempt with no news of Banxa for this long
/// sends a probe itself (the last rows of a run may have no other row to
/// bring news).
pub const HOLD_PROBE_AFTER: Duration = Duration::from_secs(1);
/// A run whose first this many attempts all fail to connect stops at once.
pub const FIRST_CONNECT_ATTEMPTS: u32 = 10;
/// `--max-outage` by default.
pub const DEFAULT_MAX_OUTAGE: Duration = Duration::from_secs(15 * 60);

/// What an attempt's failure means for its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Counted against the row's attempts, as usual.
    Charged,
    /// Given back: the breaker is open (the API looks down); the row waits.
    Refunded,
}

/// The breaker's state, without clocks or locks.
#[derive(Debug)]
pub struct State {
    streak: u32,
    streak_rows: HashSet<u64>,
    /// Rows whose failures were shown to be their own (Banxa answered a
    /// probe while they failed): they never open the breaker again.
    exempt: HashSet<u64>,
    last_success: Instant,
    open_since: Option<Instant>,
    /// Attempts so far, and whether any got an HTTP answer.
    attempts: u32,
    any_answer: bool,
    /// Evidence so far that Banxa is up (successes, answered probes) and
    /// that it is down (failed probes): a row held at its last attempt
    /// ([`Mark`]) waits for one of them to move.
    ups: u64,
    downs: u64,
}

/// Where the evidence stood when a row used up its attempts (see
/// [`Breaker::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    ups: u64,
    downs: u64,
}

/// Whether Banxa was up after a row used up its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Banxa answered since (a success, or a probe): the failures were
    /// the row's own; it ends `failed`.
    Up,
    /// A probe failed since: the API was down; the row's last attempt is
    /// given back and it waits for the pause to end.
    Down,
}

impl State {
    pub fn new(now: Instant) -> State {
        State {
            streak: 0,
            streak_rows: HashSet::new(),
            exempt: HashSet::new(),
            last_success: now,
            open_since: None,
            attempts: 0,
            any_answer: false,
            ups: 0,
            downs: 0,
        }
    }

    /// The evidence so far, to compare a later [`State::verdict`] with.
    pub fn mark(&self) -> Mark {
        Mark {
            ups: self.ups,
            downs: self.downs,
        }
    }

    /// What happened since `mark`: `None` while nothing shows whether
    /// Banxa is up. A failed probe wins over a success (a retry is safe; a
    /// `failed` row that the API never saw is not).
    pub fn verdict(&self, mark: Mark) -> Option<Verdict> {
        if self.downs > mark.downs {
            Some(Verdict::Down)
        } else if self.ups > mark.ups {
            Some(Verdict::Up)
        } else {
            None
        }
    }

    /// The failures of `record` were shown to be its own.
    pub fn is_exempt(&self, record: u64) -> bool {
        self.exempt.contains(&record)
    }

    /// A probe failed: evidence that Banxa is down. Opens the breaker if
    /// it was closed (a probe sent for a held row); `true` then.
    pub fn probe_failed(&mut self, now: Instant) -> bool {
        self.downs += 1;
        if self.is_open() {
            return false;
        }
        self.open_since = Some(now);
        true
    }

    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    pub fn open_since(&self) -> Option<Instant> {
        self.open_since
    }

    pub fn last_success(&self) -> Instant {
        self.last_success
    }

    /// Banxa answered (any answer that is not a 429 or 5xx: a 4xx shows
    /// it is up too).
    pub fn answered(&mut self, now: Instant) {
        self.attempts += 1;
        self.any_answer = true;
        self.streak = 0;
        self.streak_rows.clear();
        self.last_success = now;
        self.ups += 1;
    }

    /// An attempt of `record` failed with a connection error, a timeout, a
    /// 5xx or a 429. `reached`: the connection was made (an HTTP answer
    /// came, or it broke after connecting). Returns whether the row is charged, and `true` when
    /// this failure opened the breaker.
    pub fn failed(&mut self, record: u64, reached: bool, now: Instant) -> (Charge, bool) {
        self.attempts += 1;
        self.any_answer |= reached;
        if self.exempt.contains(&record) {
            return (Charge::Charged, false);
        }
        if self.is_open() {
            return (Charge::Refunded, false);
        }
        self.streak += 1;
        self.streak_rows.insert(record);
        if self.streak >= MIN_FAILURES && self.streak_rows.len() >= MIN_ROWS {
            self.open_since = Some(now);
            return (Charge::Refunded, true);
        }
        (Charge::Charged, false)
    }

    /// True when every attempt so far (at least
    /// [`FIRST_CONNECT_ATTEMPTS`]) failed without reaching the server.
    pub fn never_connected(&self) -> bool {
        self.attempts >= FIRST_CONNECT_ATTEMPTS && !self.any_answer
    }

    /// A probe got an answer from Banxa: the failures of the streak were
    /// the rows' own. Closes the breaker; returns how long it was open.
    pub fn probe_answered(&mut self, now: Instant) -> Option<Duration> {
        self.any_answer = true;
        self.ups += 1;
        self.exempt.extend(self.streak_rows.drain());
        self.streak = 0;
        let since = self.open_since.take()?;
        Some(now.saturating_duration_since(since))
    }
}

/// The breaker shared by the workers.
pub struct Breaker {
    state: Mutex<State>,
    /// `true` while open: workers wait for `false`.
    open_tx: watch::Sender<bool>,
    hold_probe: tokio::sync::Mutex<()>,
    pub max_outage: Duration,
}

impl Breaker {
    pub fn new(max_outage: Duration) -> Breaker {
        let (open_tx, _) = watch::channel(false);
        Breaker {
            state: Mutex::new(State::new(Instant::now())),
            open_tx,
            hold_probe: tokio::sync::Mutex::new(()),
            max_outage,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the breaker is open.
    pub async fn closed(&self) {
        let mut rx = self.open_tx.subscribe();
        // The sender lives as long as `self`: an error cannot happen here.
        let _ = rx.wait_for(|open| !*open).await;
    }

    /// Waits until the breaker opens.
    pub async fn opened(&self) {
        let mut rx = self.open_tx.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    pub fn is_open(&self) -> bool {
        *self.open_tx.borrow()
    }

    pub fn answered(&self) {
        self.lock().answered(Instant::now());
    }

    /// See [`State::failed`]; opening is announced to the workers.
    pub fn failed(&self, record: u64, reached: bool) -> (Charge, bool) {
        let (charge, opened) = self.lock().failed(record, reached, Instant::now());
        if opened {
            self.open_tx.send_replace(true);
        }
        (charge, opened)
    }

    pub fn never_connected(&self) -> bool {
        self.lock().never_connected()
    }

    pub fn mark(&self) -> Mark {
        self.lock().mark()
    }

    pub fn verdict(&self, mark: Mark) -> Option<Verdict> {
        self.lock().verdict(mark)
    }

    pub fn is_exempt(&self, record: u64) -> bool {
        self.lock().is_exempt(record)
    }

    /// A probe failed; opening the breaker (when it was closed) is
    /// announced to the workers and to the prober.
    pub fn probe_failed(&self) {
        if self.lock().probe_failed(Instant::now()) {
            self.open_tx.send_replace(true);
        }
    }

    /// Held rows take turns: one probe at a time.
    pub async fn hold_probe_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.hold_probe.lock().await
    }

    /// Closes the breaker after a probe Banxa answered; how long it was open.
    pub fn probe_answered(&self) -> Option<Duration> {
        let open_for = self.lock().probe_answered(Instant::now());
        self.open_tx.send_replace(false);
        open_for
    }

    /// Time since the last success (the outage so far).
    pub fn down_for(&self) -> Duration {
        Instant::now().saturating_duration_since(self.lock().last_success())
    }
}

/// The wait before probe number `n` (0-based): doubling from
/// [`PROBE_FIRST`] up to [`PROBE_CAP`].
pub fn probe_delay(n: u32) -> Duration {
    PROBE_FIRST.saturating_mul(1u32 << n.min(16)).min(PROBE_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn twenty_failures_over_ten_rows_open_it() {
        let t = Instant::now();
        let mut s = State::new(t);
        // 19 failures: still closed, every one charged.
        for i in 0..19 {
            assert_eq!(s.failed(i % 10, true, t), (Charge::Charged, false));
        }
        // The 20th over 10 rows opens it, and is refunded.
        assert_eq!(s.failed(3, true, t), (Charge::Refunded, true));
        assert!(s.is_open());
        assert_eq!(s.failed(4, true, t).0, Charge::Refunded);
        // A probe answered: the rows of the streak are exempt from now on.
        assert!(s.probe_answered(t).is_some());
        assert!(!s.is_open());
        for _ in 0..100 {
            assert_eq!(s.failed(3, true, t), (Charge::Charged, false));
        }
        assert!(!s.is_open());
    }

    #[tokio::test]
    async fn one_row_failing_many_times_does_not_open_it() {
        let t = Instant::now();
        let mut s = State::new(t);
        for _ in 0..100 {
            assert_eq!(s.failed(7, true, t).0, Charge::Charged);
        }
        assert!(!s.is_open());
    }

    #[tokio::test]
    async fn a_success_resets_the_streak() {
        let t = Instant::now();
        let mut s = State::new(t);
        for round in 0..50u64 {
            for i in 0..15 {
                assert_eq!(s.failed(round * 100 + i, true, t).0, Charge::Charged);
            }
            s.answered(t);
        }
        assert!(!s.is_open());
    }

    #[tokio::test]
    async fn ten_connect_failures_at_the_start_mean_unreachable() {
        let t = Instant::now();
        let mut s = State::new(t);
        for i in 0..9 {
            s.failed(i, false, t);
            assert!(!s.never_connected());
        }
        s.failed(9, false, t);
        assert!(s.never_connected());
        let mut s = State::new(t);
        s.failed(0, true, t);
        for i in 1..20 {
            s.failed(i, false, t);
        }
        assert!(!s.never_connected(), "a 503 came: the server is there");
    }

    #[tokio::test]
    async fn a_held_row_learns_whether_banxa_was_up() {
        let t = Instant::now();
        let mut s = State::new(t);
        s.failed(1, true, t);
        let m = s.mark();
        assert_eq!(s.verdict(m), None, "no news yet");
        s.answered(t);
        assert_eq!(s.verdict(m), Some(Verdict::Up));
        let m = s.mark();
        s.failed(2, true, t);
        assert!(s.probe_failed(t), "a failed probe opens a closed breaker");
        assert!(s.is_open());
        assert_eq!(s.verdict(m), Some(Verdict::Down));
        assert!(!s.probe_failed(t), "already open");
        let m = s.mark();
        s.probe_answered(t);
        assert_eq!(s.verdict(m), Some(Verdict::Up));
        assert!(s.is_exempt(2), "the streak's rows failed on their own");
    }

    #[test]
    fn probes_back_off_to_a_minute() {
        assert_eq!(probe_delay(0), Duration::from_millis(500));
        assert_eq!(probe_delay(1), Duration::from_secs(1));
        assert_eq!(probe_delay(7), Duration::from_secs(60));
        assert_eq!(probe_delay(40), Duration::from_secs(60));
    }
}
