//! This instance's connection slots (`--max-connections`). A slot is reserved atomically before a
//! dial or a claim and released when its holder is dropped, on every path: a check made before the
//! dial and a count taken after it would let every concurrent Connect through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The slots; `max` 0 means no limit (slots are still counted).
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    taken: Arc<AtomicUsize>,
}

/// One reserved slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    taken: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            max,
            taken: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Slots reserved now (connections held plus dials and claims under way).
    #[cfg(test)]
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    /// Reserves a slot, or `None` when all are taken.
    pub fn reserve(&self) -> Option<Slot> {
        let limit = if self.max == 0 { usize::MAX } else { self.max };
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Slot {
            taken: Arc::clone(&self.taken),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_reservations_never_pass_the_limit_and_drops_give_slots_back() {
        let slots = Arc::new(Slots::new(10));
        let held: Vec<Slot> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let slots = Arc::clone(&slots);
                    scope
                        .spawn(move || (0..100).filter_map(|_| slots.reserve()).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(held.len(), 10);
        assert_eq!(slots.taken(), 10);
        assert!(slots.reserve().is_none());
        drop(held);
        assert_eq!(slots.taken(), 0);
        assert!(Slots::new(0).reserve().is_some(), "0 = no limit");
    }
}
