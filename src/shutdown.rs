//! One shutdown signal shared by every long-running task.

use tokio::sync::watch;

/// A cloneable handle: [`Shutdown::trigger`] once, [`Shutdown::wait`] anywhere.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A handle that has not fired.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown { tx }
    }

    /// Fires the signal; every waiter wakes.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// Fires on SIGINT or SIGTERM.
    pub fn on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop signal received: finishing in-flight requests");
            this.trigger();
        });
    }

    /// Fires on the first SIGINT or SIGTERM, saying `first`; a second
    /// one exits the process at once with `code`, saying so.
    pub fn on_signals_or_exit(&self, first: &'static str, code: i32) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!("{first}");
            this.trigger();
            wait_for_signal().await;
            eprintln!("tapedeck: second stop signal: exiting at once");
            std::process::exit(code);
        });
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            // Signal handlers could not be installed; Ctrl-C still works.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
