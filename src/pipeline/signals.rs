//! Signals: the first asks the run to drain and stop, the second to stop now.

use tokio_util::sync::CancellationToken;

use crate::model::{Abort, AbortReason};

/// First SIGINT/SIGTERM: stop taking rows, drain (exit 3). Second: cancel
/// `hard`, on which the run returns at once ([`super::RunError::Interrupted`]);
/// every row already journaled is safe (written as soon as nothing more is
/// waiting).
pub async fn watch(abort: Abort, hard: CancellationToken, resume: String) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut seen = 0;
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        seen += 1;
        if seen == 1 {
            eprintln!("\nkycshare: {name}: finishing requests in flight, then stopping (again to stop at once)");
            abort.trigger(AbortReason::Signal(name.to_string()));
        } else {
            eprintln!("kycshare: {name} again: exiting now; rows in the results file are safe (answers that arrived in the last moment may be sent again); continue with: {resume}");
            hard.cancel();
            return;
        }
    }
}
