//! Readiness: a new generation takes requests once its health path answers 2xx/3xx
//! from a socket that is its own, and says why when it never does.

use std::time::Duration;

use crate::daemon::upstream::{self, Client};
use crate::daemon::{hints, holder, workers};

use super::Generation;

impl Generation {
    /// Waits until the health path answers 2xx/3xx, the process exits, or `timeout`.
    /// Each check waits up to `check_timeout` (`heartbeat.timeout`) for its answer: one
    /// slower than that would count as failing once live, so it counts as not ready yet.
    pub async fn wait_ready(
        &self,
        client: &Client,
        path: &str,
        timeout: Duration,
        check_timeout: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut exited = self.exited.clone();
        let mut last: Option<String> = None;
        // The last check's refusal, in place of `last`: told at the end, with where the
        // app listens instead (a look at `[::1]`, taken once, not at every check).
        let mut refused: Option<String> = None;
        loop {
            let status = *exited.borrow();
            if let Some(status) = status {
                self.flush_output().await;
                return Err(format!(
                    "{} before it was ready{}",
                    hints::exited(status),
                    self.tail_text()
                ));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                if let Some(e) = refused {
                    last = Some(hints::refused(path, &e, self.port).await);
                }
                return Err(format!(
                    "not ready after {} (app.ready_timeout); last health check: {}{}",
                    humantime::format_duration(timeout),
                    last.as_deref().unwrap_or("no answer yet"),
                    self.tail_text()
                ));
            }
            let check = left.min(check_timeout);
            match upstream::probe(client, self.port, path, check).await {
                Ok(status) if (200..400).contains(&status) => {
                    // A start script that left its server in the background and exited
                    // while the check was answered has ended the generation all the
                    // same: the loop's top says so.
                    if exited.borrow().is_none() {
                        return self.holds_its_port().await;
                    }
                }
                Ok(status) => {
                    last = Some(format!("GET {path} answered {status}"));
                    refused = None;
                }
                // Nothing listens on 127.0.0.1: most often an app on a port of its own
                // choosing, or one on the IPv6 loopback only (`localhost`).
                Err(e) if e.to_lowercase().contains("connection refused") => refused = Some(e),
                // A whole check that timed out names the limit to raise. One the ready
                // deadline cut short ("no answer within 212ms") says less than the check
                // before it did, unless that one was refused: the app listens now (on
                // the loopback a connect is answered at once), and was too slow.
                Err(e) if e.starts_with("no answer within") => {
                    if check == check_timeout {
                        last = Some(format!("GET {path}: {e} (heartbeat.timeout)"));
                        refused = None;
                    } else if last.is_none() || refused.is_some() {
                        last = Some(format!("GET {path}: {e}"));
                        refused = None;
                    }
                }
                Err(e) => {
                    last = Some(format!("GET {path}: {e}"));
                    refused = None;
                }
            }
            let pause = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                _ = pause => {}
                _ = exited.changed() => {}
            }
        }
    }

    /// Whether what answered its health check is its own: see [`holder`].
    async fn holds_its_port(&self) -> Result<(), String> {
        let (port, group, layout) = (self.port, self.pid, self.layout.clone());
        let generation = format!("{}/{}", self.slot, self.id);
        let owner = move || {
            let owner = holder::Owner::new(group, &layout, &generation);
            let adopted = holder::check(port, &owner)?;
            Ok(adopted.into_iter().filter_map(workers::adopt).collect())
        };
        let adopted = tokio::task::spawn_blocking(owner)
            .await
            .unwrap_or_else(|e| Err(format!("the check of who holds port {port} failed: {e}")))?;
        *self.adopted.lock().expect("no panic holds it") = adopted;
        Ok(())
    }
}
