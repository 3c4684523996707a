//! Order: which copies may be out at the same time, and how many are done.
//!
//! Copies overlap on the standby only where their writes overlapped on the active. Each
//! write takes a tick of one clock when it is routed and another when the active has
//! answered it (before its client sees the answer). A copy may go out once every copy
//! still out was answered after its own write was routed: a write sent after another
//! was answered (a client that waited for it, or one that read what it wrote) is applied
//! to the standby after it, as on the active; writes that were in flight on the active
//! together may be in flight on the standby together. One at a time bounded the
//! mirror's rate by the standby's latency (about 600 copies/s with the sample app,
//! against the 1,700 writes/s it took from 32 clients), and dropped the rest.
//!
//! A switch's flush waits for every copy queued before it: `done` is how many copies,
//! counted from the first, are done with no gap, so a later copy finishing first does
//! not count for an earlier one still out.

use std::collections::BTreeSet;

/// The copies out, and the count of those done.
#[derive(Debug, Default)]
pub struct Order {
    /// The answer ticks of the copies out.
    out: BTreeSet<u64>,
    /// Copies taken from the queue, ever; the next one's number.
    taken: u64,
    /// Copies done, counted from the first with no gap.
    done: u64,
    /// Numbers of the copies done after one before them that is still out.
    done_ahead: BTreeSet<u64>,
}

impl Order {
    /// Whether a copy whose write was routed at tick `routed` may go out now.
    pub fn may_start(&self, routed: u64) -> bool {
        self.out.first().is_none_or(|&first| first > routed)
    }

    /// Copies out.
    pub fn out(&self) -> usize {
        self.out.len()
    }

    /// Counts a copy taken from the queue, out from now until [`Order::finish`] with the
    /// number returned here; `answered` is its write's answer tick.
    pub fn start(&mut self, answered: u64) -> u64 {
        self.out.insert(answered);
        self.taken += 1;
        self.taken - 1
    }

    /// Copy `number`, answered at tick `answered`, is done (sent or dropped). Returns
    /// how many more copies now count as done from the first with no gap.
    pub fn finish(&mut self, number: u64, answered: u64) -> u64 {
        self.out.remove(&answered);
        let before = self.done;
        self.done_ahead.insert(number);
        while self.done_ahead.remove(&self.done) {
            self.done += 1;
        }
        self.done - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_sent_after_another_was_answered_waits_for_its_copy() {
        let mut order = Order::default();
        // Write A routed at 1, answered at 2; write B routed at 3 (after A's answer).
        assert!(order.may_start(1));
        let a = order.start(2);
        assert!(!order.may_start(3), "B's client may have seen A's answer");
        assert_eq!(order.finish(a, 2), 1);
        assert!(order.may_start(3));
    }

    #[test]
    fn writes_in_flight_together_on_the_active_go_out_together() {
        let mut order = Order::default();
        // Three writes routed at 1, 2, 3, answered at 4, 5, 6: none saw another's answer.
        let a = order.start(4);
        assert!(order.may_start(2));
        let b = order.start(5);
        assert!(order.may_start(3));
        let c = order.start(6);
        assert_eq!(order.out(), 3);
        // A write routed at 7, after all three answers, waits for all three.
        assert!(!order.may_start(7));
        assert_eq!(order.finish(a, 4), 1);
        assert_eq!(
            order.finish(c, 6),
            0,
            "b is still out: c does not count yet"
        );
        assert!(!order.may_start(7));
        assert_eq!(order.finish(b, 5), 2, "b, and c behind it");
        assert!(order.may_start(7));
        assert_eq!(order.out(), 0);
    }

    #[test]
    fn a_write_routed_between_two_answers_waits_only_for_the_first() {
        let mut order = Order::default();
        // A answered at 3; B routed at 4 while C (routed at 2) is still on the active,
        // answered at 5.
        let _a = order.start(3);
        let _c = order.start(5);
        assert!(!order.may_start(4), "A was answered before B was routed");
        let mut order = Order::default();
        let _c = order.start(5);
        assert!(order.may_start(4), "C was answered after B was routed");
    }
}
