//! A cloneable, lock-free handle on the responder's liveness signal and loop
//! meter, for hosts whose FIMS I/O runs on another thread or task than the
//! work loop.

use std::sync::Arc;
use std::time::Instant;

use crate::meter::{LoopStats, Meter};

/// Pets the liveness gate and ticks the loop meter of one
/// [`Responder`](crate::Responder) from the work loop while a driver answers
/// elsewhere. Get one from [`Responder::pet_handle`](crate::Responder::pet_handle)
/// (or a driver's `pet_handle`).
///
/// Clones share the responder's signal. [`pet`](Self::pet) is one atomic
/// operation and [`tick`](Self::tick) a handful: call one of them from the loop
/// that does the process's real work, every iteration (a tick pets too). The
/// responder reads them when it handles each message: nothing to apply.
#[derive(Clone)]
pub struct PetHandle {
    meter: Arc<Meter>,
}

impl std::fmt::Debug for PetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PetHandle")
            .field("meter", &self.meter)
            .finish()
    }
}

impl PetHandle {
    pub(crate) fn new(meter: Arc<Meter>) -> PetHandle {
        PetHandle { meter }
    }

    /// The work loop is alive now.
    pub fn pet(&self) {
        self.meter.pet(Instant::now());
    }

    /// The work loop was alive at `now`.
    pub fn pet_at(&self, now: Instant) {
        self.meter.pet(now);
    }

    /// One iteration of the work loop ended now (it pets too). Call it from
    /// one thread, the work loop's.
    pub fn tick(&self) {
        self.meter.tick(Instant::now());
    }

    /// One iteration of the work loop ended at `now` (a clock reading the loop
    /// already has saves reading it again).
    pub fn tick_at(&self, now: Instant) {
        self.meter.tick(now);
    }

    /// The latest pet or tick, if any.
    pub fn last_pet(&self) -> Option<Instant> {
        self.meter.last_alive()
    }

    /// The loop figures now (`None` until the first tick), without resetting
    /// the per-beat ones.
    pub fn loop_stats(&self) -> Option<LoopStats> {
        self.meter.stats()
    }
}
