//! Which FastCGI request ids are in use on one connection. The connection state (`state.rs`)
//! owns the allocator and is its only user, so it needs no lock.
//!
//! An id becomes free again only when the backend's END_REQUEST for it has been read (FastCGI
//! 1.0 §3.3: the application owns the id until then), so a late record can never be mistaken
//! for a newer request's. Ids start at 1; 0 is the management id.

use crate::protocol::RequestId;

/// The ids in flight, lowest first; a connection carries a handful at most.
#[derive(Debug, Default)]
pub(crate) struct RequestIds {
    in_use: Vec<u16>,
}

impl RequestIds {
    /// The lowest free id, marked in use; `None` when all 65,535 are taken.
    pub(crate) fn allocate(&mut self) -> Option<RequestId> {
        // `in_use` is sorted, so the first gap is the lowest free id.
        let mut candidate: u16 = 1;
        let mut index = 0;
        while index < self.in_use.len() && self.in_use[index] == candidate {
            candidate = candidate.checked_add(1)?;
            index += 1;
        }
        self.in_use.insert(index, candidate);
        Some(RequestId(candidate))
    }

    /// Frees `id`; freeing an id not in use does nothing.
    pub(crate) fn release(&mut self, id: RequestId) {
        if let Ok(index) = self.in_use.binary_search(&id.0) {
            self.in_use.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_the_lowest_free_id_and_reuses_released_ones() {
        let mut ids = RequestIds::default();
        assert_eq!(ids.allocate(), Some(RequestId(1)));
        assert_eq!(ids.allocate(), Some(RequestId(2)));
        assert_eq!(ids.allocate(), Some(RequestId(3)));
        ids.release(RequestId(2));
        assert_eq!(ids.in_use, vec![1, 3]);
        assert_eq!(ids.allocate(), Some(RequestId(2)));
        assert_eq!(ids.allocate(), Some(RequestId(4)));
    }

    #[test]
    fn an_id_is_never_handed_out_twice_while_in_use() {
        let mut ids = RequestIds::default();
        let mut live = std::collections::BTreeSet::new();
        for round in 0..2000u32 {
            if round % 3 == 2 {
                let victim = *live.iter().nth((round as usize) % live.len()).unwrap_or(&1);
                live.remove(&victim);
                ids.release(RequestId(victim));
            } else {
                let id = ids.allocate().map(|id| id.0);
                assert!(
                    id.is_some_and(|id| live.insert(id)),
                    "id {id:?} was already live"
                );
            }
        }
        assert_eq!(ids.in_use, live.into_iter().collect::<Vec<_>>());
    }
}
