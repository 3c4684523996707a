//! `Route`: which generation a slot's requests go to, and the in-flight count drain waits for.
//!
//! A request takes the read lock, clones the live generation and counts itself in
//! before releasing it; a swap takes the write lock. So once `set` returns, every
//! request that chose the old generation is already counted in its `in_flight`, and a
//! drain that sees zero there really has nothing left.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::generation::Generation;

pub struct Route {
    live: RwLock<Option<Arc<Generation>>>,
    /// Why there is no live generation, for the 503 a client gets.
    reason: RwLock<String>,
}

/// A request counted in a generation's `in_flight` until dropped.
pub struct InFlight(pub Arc<Generation>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Route {
    pub fn new(reason: String) -> Route {
        Route {
            live: RwLock::new(None),
            reason: RwLock::new(reason),
        }
    }

    /// The live generation, counted in flight; or why there is none.
    pub fn acquire(&self) -> Result<InFlight, String> {
        {
            let live = self.live.read().expect("route lock: no panic holds it");
            if let Some(generation) = &*live {
                generation.in_flight.fetch_add(1, Ordering::AcqRel);
                return Ok(InFlight(generation.clone()));
            }
        }
        // Never hold both locks at once: `clear` takes them in the other order.
        Err(self
            .reason
            .read()
            .expect("route lock: no panic holds it")
            .clone())
    }

    pub fn live(&self) -> Option<Arc<Generation>> {
        self.live
            .read()
            .expect("route lock: no panic holds it")
            .clone()
    }

    /// Routes to `generation` from now on; returns the one it replaces.
    pub fn set(&self, generation: Arc<Generation>) -> Option<Arc<Generation>> {
        self.live
            .write()
            .expect("route lock: no panic holds it")
            .replace(generation)
    }

    /// Stops routing; requests get a 503 with `reason`. Returns the generation removed.
    pub fn clear(&self, reason: String) -> Option<Arc<Generation>> {
        *self.reason.write().expect("route lock: no panic holds it") = reason;
        self.live
            .write()
            .expect("route lock: no panic holds it")
            .take()
    }
}
