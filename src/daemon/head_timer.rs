//! The header-read timeout of a client connection, on one tokio timer per connection.
//!
//! hyper asks its [`Timer`] for a new sleep each time it starts reading a request head,
//! and drops it once the head is in. With hyper-util's `TokioTimer`, each of those is a
//! new tokio timer, entered into the runtime's timer wheel and taken out again under the
//! driver's lock: for every request. A `HeadTimer` belongs to one connection and keeps
//! one tokio `Sleep` for all of its requests: a new deadline, always later than the
//! last, only moves it (an atomic update while it has not fired). A deadline left
//! behind by a head that came in time may still fire while the answer is under way: the
//! connection's task is then polled once for nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// One connection's timer (see the module's text). Made on the connection's runtime.
#[derive(Clone)]
pub struct HeadTimer(Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>);

impl HeadTimer {
    pub fn new() -> HeadTimer {
        // Far off until hyper sets the first deadline; not in the wheel before polled.
        let sleep = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        HeadTimer(Arc::new(Mutex::new(Box::pin(sleep))))
    }

    fn locked(&self) -> MutexGuard<'_, Pin<Box<tokio::time::Sleep>>> {
        // A poisoned lock still holds a usable timer: a panic can't leave it half-set.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reset_to(&self, deadline: Instant) {
        self.locked()
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.reset_to(deadline);
        Box::pin(Armed(self.clone()))
    }

    fn reset(&self, _sleep: &mut Pin<Box<dyn Sleep>>, deadline: Instant) {
        // Every sleep of this timer is the same one.
        self.reset_to(deadline);
    }
}

/// The connection's timer, as the sleep hyper holds while it reads a head.
struct Armed(HeadTimer);

impl Future for Armed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.locked().as_mut().poll(cx)
    }
}

impl Sleep for Armed {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deadlines on the paused clock's time (hyper takes them from the real one, which
    /// the paused clock leaves behind).
    fn after(seconds: u64) -> Instant {
        tokio::time::Instant::now().into_std() + Duration::from_secs(seconds)
    }

    #[tokio::test(start_paused = true)]
    async fn each_sleep_ends_at_its_own_deadline() {
        let timer = HeadTimer::new();
        let mut first = timer.sleep_until(after(30));
        assert!(futures_poll(&mut first).is_pending());
        drop(first);
        // The next head's deadline, later: the same tokio timer, moved.
        let waited = tokio::time::Instant::now();
        timer.sleep_until(after(60)).await;
        ends(waited, 60);
        // And again after it fired.
        let waited = tokio::time::Instant::now();
        timer.sleep_until(after(5)).await;
        ends(waited, 5);
    }

    /// `seconds` passed since `waited`, to the timer wheel's millisecond.
    fn ends(waited: tokio::time::Instant, seconds: u64) {
        let (elapsed, expected) = (waited.elapsed(), Duration::from_secs(seconds));
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(1),
            "{elapsed:?} instead of {expected:?}"
        );
    }

    fn futures_poll(sleep: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
        let waker = std::task::Waker::noop();
        sleep.as_mut().poll(&mut Context::from_waker(waker))
    }
}
