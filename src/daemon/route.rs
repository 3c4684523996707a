//! `Route`: which generation a slot's requests go to, and the in-flight count drain waits for.
//!
//! A swap takes the write lock, replaces the live generation and bumps `version`. A
//! request counts itself in the generation it chose, then checks that `version` has not
//! moved; if it has, it counts itself out and chooses again. Both sides are sequentially
//! consistent, so once `set` returns, a request either is already counted in the old
//! generation's `in_flight` or will see the new version and go to the new one: a drain
//! that sees zero really has nothing left.
//!
//! On the data path nothing shared is written: each proxy thread keeps its own copy of
//! the route (`Cached`, refreshed when `version` moves), counts in its own shard of
//! `in_flight`, and holds the generation through an `Arc` only it clones. Shared
//! counters and locks bounced between the cores on every request.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, RwLock};

use super::generation::Generation;

/// Shards of an in-flight count: proxy thread `n` counts in shard `n % SHARDS`.
const SHARDS: usize = 16;

pub struct Route {
    live: RwLock<Option<Arc<Generation>>>,
    /// Moves on every change of `live`.
    version: AtomicU64,
    /// Why there is no live generation, for the 503 a client gets.
    reason: RwLock<String>,
}

/// Requests in flight to one generation, counted per proxy thread.
pub struct Count {
    shards: [Shard; SHARDS],
}

/// One thread's share of a count, on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

impl Count {
    pub fn new() -> Count {
        Count {
            shards: Default::default(),
        }
    }

    /// Requests in flight, over every thread.
    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(SeqCst)).sum()
    }

    fn add(&self, shard: usize) {
        self.shards[shard % SHARDS].0.fetch_add(1, SeqCst);
    }

    fn sub(&self, shard: usize) {
        self.shards[shard % SHARDS].0.fetch_sub(1, SeqCst);
    }
}

/// A generation as one thread's requests hold it.
struct Held {
    generation: Arc<Generation>,
    shard: usize,
}

/// A request counted in a generation's `in_flight` until dropped.
pub struct InFlight(Arc<Held>);

impl InFlight {
    pub fn generation(&self) -> &Generation {
        &self.0.generation
    }

    /// The handshake of an upgrade is done: the request leaves the count a drain waits
    /// for, and its tunnel is counted in [`Tunnels`] until dropped.
    pub fn into_tunnel(self) -> Tunnel {
        let generation = self.0.generation.clone();
        generation.tunnels.0.fetch_add(1, SeqCst);
        Tunnel(generation)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.generation.in_flight.sub(self.0.shard);
    }
}

/// Tunnels open to one generation: a few at most per request, so one shared counter.
#[derive(Default)]
pub struct Tunnels(AtomicU64);

impl Tunnels {
    pub fn get(&self) -> u64 {
        self.0.load(SeqCst)
    }
}

/// An open tunnel, counted in its generation's `tunnels` until dropped.
pub struct Tunnel(Arc<Generation>);

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.0.tunnels.0.fetch_sub(1, SeqCst);
    }
}

/// A proxy thread's copy of a route.
#[derive(Default)]
pub struct Cached {
    version: u64,
    live: Option<Arc<Held>>,
    /// Whether `version` and `live` were ever read.
    filled: bool,
}

impl Route {
    pub fn new(reason: String) -> Route {
        Route {
            live: RwLock::new(None),
            version: AtomicU64::new(0),
            reason: RwLock::new(reason),
        }
    }

    /// The live generation, counted in flight in `shard`; or why there is none.
    pub fn acquire(&self, shard: usize) -> Result<InFlight, String> {
        self.acquire_cached(&mut Cached::default(), shard)
    }

    /// As `acquire`, through a thread's own copy of the route.
    pub fn acquire_cached(&self, cached: &mut Cached, shard: usize) -> Result<InFlight, String> {
        loop {
            if !cached.filled || cached.version != self.version.load(SeqCst) {
                let live = self.live.read().expect("route lock: no panic holds it");
                // Under the lock the version can't move: it goes with `live`.
                cached.version = self.version.load(SeqCst);
                cached.live = live.as_ref().map(|generation| {
                    Arc::new(Held {
                        generation: generation.clone(),
                        shard,
                    })
                });
                cached.filled = true;
            }
            let Some(held) = &cached.live else {
                return Err(self.reason());
            };
            held.generation.in_flight.add(shard);
            if self.version.load(SeqCst) == cached.version {
                return Ok(InFlight(held.clone()));
            }
            // A swap came in between: count out and choose again.
            held.generation.in_flight.sub(shard);
        }
    }

    /// Why there is no live generation, as the 503 says it.
    pub fn reason(&self) -> String {
        self.reason
            .read()
            .expect("route lock: no panic holds it")
            .clone()
    }

    pub fn live(&self) -> Option<Arc<Generation>> {
        self.live
            .read()
            .expect("route lock: no panic holds it")
            .clone()
    }

    /// Routes to `generation` from now on; returns the one it replaces.
    pub fn set(&self, generation: Arc<Generation>) -> Option<Arc<Generation>> {
        let mut live = self.live.write().expect("route lock: no panic holds it");
        let old = live.replace(generation);
        self.version.fetch_add(1, SeqCst);
        old
    }

    /// Replaces the reason requests get while there is no live generation, if it is
    /// still `old` (a start's failure may have told a newer one meanwhile).
    pub fn replace_reason(&self, old: &str, new: String) {
        let mut reason = self.reason.write().expect("route lock: no panic holds it");
        if *reason == old {
            *reason = new;
        }
    }

    /// Stops routing; requests get a 503 with `reason`. Returns the generation removed.
    pub fn clear(&self, reason: String) -> Option<Arc<Generation>> {
        // The reason first: a request that sees no generation must find the new one.
        *self.reason.write().expect("route lock: no panic holds it") = reason;
        let mut live = self.live.write().expect("route lock: no panic holds it");
        let old = live.take();
        self.version.fetch_add(1, SeqCst);
        old
    }
}
