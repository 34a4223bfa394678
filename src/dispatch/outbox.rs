//! Final outcomes on their way from the workers to the journal thread, in
//! blocks.
//!
//! A worker that reaches a final outcome puts it here and goes on; one
//! task hands everything waiting to the journal as a single message. On
//! the run's single-threaded runtime that task runs after the other
//! workers woken by the same network event, so the answers that arrived
//! together cross the thread boundary together: one wake-up of the journal
//! thread (and one write of the results file) for the block instead of one
//! for each row. Nothing waits for a timer: an outcome leaves in the same
//! turn of the runtime that produced it, so a kill loses no more than
//! before (what was in flight).
//!
//! Bounded: a worker waits while [`LIMIT`] outcomes are waiting here, and
//! these wait while the journal's channel is full ([`OUT_DEPTH`] blocks):
//! when the journal is behind, at most ([`OUT_DEPTH`] + 1) × [`LIMIT`]
//! answered outcomes (and the block it is writing) are held.
//!
//! [`OUT_DEPTH`]: crate::model::OUT_DEPTH

use std::sync::Mutex;

use tokio::sync::{mpsc, Notify};

use crate::model::{Final, OutMsg};

/// Outcomes waiting before a worker has to wait.
pub const LIMIT: usize = 1024;

#[derive(Default)]
struct State {
    items: Vec<Final>,
    /// No more outcomes will come: deliver what is left and stop.
    closed: bool,
}

/// See the module doc.
#[derive(Default)]
pub struct Outbox {
    st: Mutex<State>,
    /// Something to deliver (or closed).
    ready: Notify,
    /// Room again after a delivery.
    room: Notify,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not lose the outcomes: the data is a Vec.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a final outcome for the journal; waits only while the
    /// outbox is full.
    pub async fn push(&self, f: Final) {
        let mut f = Some(f);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut st = self.lock();
                if st.items.len() < LIMIT || st.closed {
                    st.items.extend(f.take());
                    drop(st);
                    self.ready.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    /// No more outcomes: [`deliver`](Outbox::deliver) ends once it has
    /// handed over what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Hands the waiting outcomes to `out`, a block per message, until the
    /// outbox is closed and empty. If the journal is gone (the run is being
    /// torn down), outcomes are dropped so that no worker waits forever.
    pub async fn deliver(&self, out: mpsc::Sender<OutMsg>) {
        let mut open = true;
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let (batch, closed) = {
                let mut st = self.lock();
                (std::mem::take(&mut st.items), st.closed)
            };
            if !batch.is_empty() {
                self.room.notify_waiters();
                if open {
                    open = out.send(OutMsg::Finals(batch)).await.is_ok();
                }
                continue;
            }
            if closed {
                return;
            }
            ready.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;
    use std::sync::Arc;

    fn fin(record: u64) -> Final {
        Final {
            record,
            line: record + 1,
            identity_reference: format!("c-{record}"),
            outcome: Outcome::Accepted,
            http_status: Some(202),
            attempts: 1,
            trace_id: String::new(),
            message: String::new(),
            errors: String::new(),
            latency_ms: Some(1),
            completed_at: std::time::SystemTime::UNIX_EPOCH,
            raw: None,
            fingerprint: None,
            problems: Vec::new(),
            kyc_status: None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn outcomes_of_one_turn_leave_together_in_order_and_none_is_lost() {
        let outbox = Arc::new(Outbox::default());
        let (tx, mut rx) = mpsc::channel(4);
        let deliver = tokio::spawn({
            let o = outbox.clone();
            async move { o.deliver(tx).await }
        });
        for r in 1..=10 {
            outbox.push(fin(r)).await;
        }
        // Pushed in one turn (no await point that yields in between):
        // the deliverer runs after and takes them as one block.
        let Some(OutMsg::Finals(first)) = rx.recv().await else {
            panic!("a block")
        };
        assert_eq!(
            first.iter().map(|f| f.record).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        // More than LIMIT while the journal does not read: the producer
        // waits (bounded) and everything still arrives, in order.
        let producer = tokio::spawn({
            let o = outbox.clone();
            async move {
                for r in 11..=(10 + 5 * LIMIT as u64) {
                    o.push(fin(r)).await;
                }
                o.close();
            }
        });
        let mut next = 11;
        while let Some(msg) = rx.recv().await {
            let OutMsg::Finals(v) = msg else {
                panic!("only blocks")
            };
            assert!(v.len() <= LIMIT + 1, "bounded: {}", v.len());
            for f in v {
                assert_eq!(f.record, next);
                next += 1;
            }
        }
        assert_eq!(next, 11 + 5 * LIMIT as u64);
        producer.await.unwrap();
        deliver.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stalled_journal_stops_the_workers_after_a_bounded_number() {
        let outbox = Arc::new(Outbox::default());
        // The run's channel; nobody reads it (the journal is stuck).
        let (tx, rx) = mpsc::channel(crate::model::OUT_DEPTH);
        let deliver = tokio::spawn({
            let o = outbox.clone();
            async move { o.deliver(tx).await }
        });
        let pushed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let producers: Vec<_> = (0..64)
            .map(|w| {
                let (o, pushed) = (outbox.clone(), pushed.clone());
                tokio::spawn(async move {
                    for r in 0..1_000_000u64 {
                        o.push(fin(w * 1_000_000 + r + 1)).await;
                        pushed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let held = pushed.load(std::sync::atomic::Ordering::Relaxed);
        // OUT_DEPTH (4) blocks in the channel, one in the outbox, one
        // being handed over, and a push per worker: a fixed figure, so
        // that a deeper channel fails here.
        let bound = 6 * LIMIT + 64;
        assert!(held >= LIMIT, "the workers ran: {held}");
        assert!(held <= bound, "{held} outcomes held, more than {bound}");
        for p in producers {
            p.abort();
        }
        drop(rx);
        deliver.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gone_journal_does_not_block_the_workers() {
        let outbox = Arc::new(Outbox::default());
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let deliver = tokio::spawn({
            let o = outbox.clone();
            async move { o.deliver(tx).await }
        });
        for r in 1..=(3 * LIMIT as u64) {
            outbox.push(fin(r)).await;
        }
        outbox.close();
        deliver.await.unwrap();
    }
}
