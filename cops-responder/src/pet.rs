//! A cloneable, lock-free liveness signal for hosts whose FIMS I/O runs on
//! another thread or task than the work loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pets the liveness gate from the work loop while a driver answers elsewhere.
///
/// Clones share one signal. [`pet`](Self::pet) is one atomic store: call it
/// from the loop that does the process's real work, every iteration. The
/// driver that owns the [`Responder`](crate::Responder) applies the latest pet
/// before it handles each message.
#[derive(Debug, Clone)]
pub struct PetHandle {
    base: Instant,
    /// Nanoseconds since `base` plus one; 0 means never petted.
    last: Arc<AtomicU64>,
}

impl Default for PetHandle {
    fn default() -> Self {
        PetHandle::new()
    }
}

impl PetHandle {
    /// A handle that was never petted.
    pub fn new() -> PetHandle {
        PetHandle {
            base: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The work loop is alive now.
    pub fn pet(&self) {
        self.pet_at(Instant::now());
    }

    /// The work loop was alive at `now`.
    pub fn pet_at(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        let v = u64::try_from(nanos)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        self.last.fetch_max(v, Ordering::Relaxed);
    }

    /// The latest pet, if any.
    pub fn last_pet(&self) -> Option<Instant> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            v => self.base.checked_add(Duration::from_nanos(v - 1)),
        }
    }

    /// Applies the latest pet to `responder`.
    pub(crate) fn apply(&self, responder: &mut crate::Responder) {
        if let Some(t) = self.last_pet() {
            responder.pet(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pets_move_forward_only() {
        let h = PetHandle::new();
        assert_eq!(h.last_pet(), None);
        let t = Instant::now() + Duration::from_millis(5);
        h.clone().pet_at(t);
        assert_eq!(h.last_pet(), Some(t));
        h.pet_at(t - Duration::from_millis(1));
        assert_eq!(h.last_pet(), Some(t));
    }
}
