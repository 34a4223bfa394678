//! Why a run stopped early, and the stop signal every stage watches.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Why a run stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    Unauthorized(String),
    Signal(String),
    Storage(String),
    Input(String),
    /// The server's TLS certificate is not trusted.
    Untrusted(String),
    /// The first attempts all failed to reach the server.
    Unreachable(String),
    /// Nothing succeeded for `--max-outage`.
    Outage(String),
    /// The ledger could not record an outcome (its server went away, its
    /// disk is full): no more rows are sent.
    Ledger(String),
}

impl AbortReason {
    /// A short, stable name of the kind of stop, for the metrics'
    /// `error` label: `unauthorized`, `signal`, `storage`, `input`,
    /// `untrusted`, `unreachable`, `outage`, `ledger`.
    pub fn class(&self) -> &'static str {
        match self {
            AbortReason::Unauthorized(_) => "unauthorized",
            AbortReason::Signal(_) => "signal",
            AbortReason::Storage(_) => "storage",
            AbortReason::Input(_) => "input",
            AbortReason::Untrusted(_) => "untrusted",
            AbortReason::Unreachable(_) => "unreachable",
            AbortReason::Outage(_) => "outage",
            AbortReason::Ledger(_) => "ledger",
        }
    }
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::Unauthorized(m) => write!(f, "{m}"),
            AbortReason::Signal(s) => write!(
                f,
                "{s} received: stopped taking new rows, let requests in flight finish"
            ),
            AbortReason::Storage(m) => write!(f, "cannot write the results: {m}"),
            AbortReason::Input(m) => write!(f, "input error: {m}"),
            AbortReason::Untrusted(m) => write!(f, "{m}"),
            AbortReason::Unreachable(m) => write!(f, "{m}"),
            AbortReason::Outage(m) => write!(f, "{m}"),
            AbortReason::Ledger(m) => write!(
                f,
                "cannot write the ledger: {m}; stopped sending (rows it cannot record are not sent)"
            ),
        }
    }
}

/// Stop signal shared by every stage; the first reason wins.
#[derive(Clone, Default)]
pub struct Abort {
    token: CancellationToken,
    reason: Arc<Mutex<Option<AbortReason>>>,
}

impl Abort {
    pub fn new() -> Abort {
        Abort::default()
    }

    pub fn trigger(&self, reason: AbortReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            tracing::warn!(reason = %reason, "stopping the run");
            *r = Some(reason);
        }
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn reason(&self) -> Option<AbortReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub async fn triggered(&self) {
        self.token.cancelled().await
    }
}
