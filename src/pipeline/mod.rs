//! The run pipeline, shared by `run` and `demo`:
//!
//! - [`plan`]: the operator's [`Settings`] resolved once into a [`Plan`]
//!   (defaults, URL policy, credentials, paths);
//! - [`execute`]: the stages connected, run to the end or to a stop;
//! - [`feed`]: records to jobs, skipping what `--resume` and `--ledger`
//!   say is done;
//! - [`report`]: the summary, the next steps, the exit code;
//! - [`signals`]: Ctrl-C and SIGTERM.
//!
//! Not for: the command line (`cmd`) or any single stage's logic.

pub mod dry_run;
pub mod execute;
pub mod feed;
pub mod manifest;
pub mod plan;
pub mod report;
pub mod signals;
pub mod verify;

pub use execute::execute;
pub use plan::{MintSettings, Plan, PlanError, Settings};

/// Why a run could not run to its summary.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    Thread(String),
    /// Another run holds the results file's lock.
    #[error("{0}")]
    Busy(String),
    /// `--metrics-listen` could not be bound.
    #[error("{0}")]
    Listen(String),
    /// A second SIGINT/SIGTERM: the run stopped at once (exit 3).
    #[error("stopped at once by a second signal")]
    Interrupted,
}

impl RunError {
    /// A short, stable name of the kind of error, for the metrics'
    /// `error` label (exit 2): `usage`, `credentials`, `tls`, `input`,
    /// `output`, `ledger_locked`, `ledger`, `http`, `metrics_listen`,
    /// `internal`, `signal`.
    pub fn class(&self) -> &'static str {
        match self {
            RunError::Plan(p) => p.class(),
            RunError::Output(_) => "output",
            RunError::Input(_) => "input",
            RunError::Ledger(crate::ledger::LedgerError::Locked { .. }) => "ledger_locked",
            RunError::Ledger(_) => "ledger",
            RunError::Http(_) => "http",
            RunError::Listen(_) => "metrics_listen",
            RunError::Busy(_) => "results_in_use",
            RunError::Thread(_) => "internal",
            RunError::Interrupted => "signal",
        }
    }

    /// The exit code of a run that ends with this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Interrupted => 3,
            _ => 2,
        }
    }
}
