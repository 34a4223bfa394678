//! The duplicate index: which identityReference a valid record already
//! claimed, and in which record.
//!
//! An open-addressing table (linear probing) of 16-byte slots, 96 bits of
//! the identityReference's xxh3-128 hash and the first record's number,
//! kept at most seven eighths full (as the standard library's map: the same
//! memory, 16 to 37 bytes a customer, 32 MiB at a million). Written for the one thing a general
//! hash map cannot do here: the slot a record will look at is known as soon
//! as its identityReference is read, so [`SeenIndex::prefetch`] asks the
//! CPU for that memory while the record's other fields are validated, and
//! the look-up afterwards finds it in cache. At a million identities the
//! table is 32 MiB, far larger than the caches: without the prefetch, every
//! record waited for memory (about 0.2 s of a 1,000,000-row dry run's 0.9 s,
//! measured in docs/performance.md).
//!
//! A false match needs two identityReferences whose 96-bit hashes are
//! equal: about 1 in 10^16 for a file of ten million.

/// 96 bits of an identityReference's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key([u32; 3]);

impl Key {
    pub fn of(identity_reference: &str) -> Key {
        let h = xxhash_rust::xxh3::xxh3_128(identity_reference.as_bytes());
        Key([h as u32, (h >> 32) as u32, (h >> 64) as u32])
    }

    /// The slot to start probing at (the hash's low bits).
    fn home(&self, mask: usize) -> usize {
        (u64::from(self.0[0]) | u64::from(self.0[1]) << 32) as usize & mask
    }
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct Slot {
    key: [u32; 3],
    /// The record that claimed the key; 0 for an empty slot (records are
    /// numbered from 1).
    record: u32,
}

/// The smallest table (slots); always a power of two.
const MIN_SLOTS: usize = 1 << 10;

/// identityReference hash -> first record, sized by doubling or by
/// [`SeenIndex::try_reserve`].
#[derive(Debug, Default)]
pub struct SeenIndex {
    slots: Vec<Slot>,
    len: usize,
}

impl SeenIndex {
    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys the table holds before it grows.
    pub fn capacity(&self) -> usize {
        self.slots.len() / 8 * 7
    }

    /// Asks the CPU to bring `key`'s first slot into cache: a hint, with no
    /// effect on what the index holds.
    #[inline]
    pub fn prefetch(&self, key: &Key) {
        if self.slots.is_empty() {
            return;
        }
        let slot: *const Slot = &self.slots[key.home(self.slots.len() - 1)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults and reads nothing into the
        // program; the address is of a live element besides.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// The record that claimed `key` before, or `None` after `record`
    /// claims it now. Record numbers past `u32::MAX` are kept as `u32::MAX`.
    pub fn claim(&mut self, key: Key, record: u64) -> Option<u64> {
        if self.len + 1 > self.capacity() {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        let mask = self.slots.len() - 1;
        let mut i = key.home(mask);
        loop {
            let slot = &mut self.slots[i];
            if slot.record == 0 {
                *slot = Slot {
                    key: key.0,
                    record: u32::try_from(record).unwrap_or(u32::MAX).max(1),
                };
                self.len += 1;
                return None;
            }
            if slot.key == key.0 {
                return Some(u64::from(slot.record));
            }
            i = (i + 1) & mask;
        }
    }

    /// Makes room for `more` keys beyond those held, at once (no doubling
    /// on the way). A failed allocation leaves the index as it was: it then
    /// grows as it fills.
    pub fn try_reserve(&mut self, more: usize) -> Result<(), std::collections::TryReserveError> {
        let want = self.len.saturating_add(more);
        if want <= self.capacity() {
            return Ok(());
        }
        let slots = (want.saturating_mul(8) / 7 + 1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1)
            .max(MIN_SLOTS);
        let mut fresh: Vec<Slot> = Vec::new();
        fresh.try_reserve_exact(slots)?;
        self.rehash_into(fresh, slots);
        Ok(())
    }

    fn resize(&mut self, slots: usize) {
        self.rehash_into(Vec::with_capacity(slots), slots);
    }

    fn rehash_into(&mut self, mut fresh: Vec<Slot>, slots: usize) {
        fresh.resize(slots, Slot::default());
        let mask = slots - 1;
        for s in self.slots.iter().filter(|s| s.record != 0) {
            let mut i = Key(s.key).home(mask);
            while fresh[i].record != 0 {
                i = (i + 1) & mask;
            }
            fresh[i] = *s;
        }
        self.slots = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_first_record_keeps_its_claim_through_growth() {
        let mut idx = SeenIndex::default();
        for i in 1..=100_000u64 {
            assert_eq!(idx.claim(Key::of(&format!("c-{i}")), i), None, "{i}");
        }
        assert_eq!(idx.len(), 100_000);
        assert!(idx.capacity() >= 100_000);
        for i in 1..=100_000u64 {
            assert_eq!(
                idx.claim(Key::of(&format!("c-{i}")), 200_000 + i),
                Some(i),
                "{i}"
            );
        }
        assert_eq!(idx.len(), 100_000, "a repeat adds nothing");
    }

    #[test]
    fn agrees_with_a_hash_map_on_keys_that_share_their_low_bits() {
        // Keys built to collide on the home slot and on its neighbours:
        // the probe sequence, wrap-around at the end of the table and
        // rehashing are exercised, not only the happy path.
        let mut idx = SeenIndex::default();
        let mut model: HashMap<[u32; 3], u64> = HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for record in 1..=50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let low = if record % 3 == 0 {
                u32::MAX - (x % 4) as u32
            } else {
                (x % 64) as u32
            };
            let key = Key([low, 0, (x >> 40) as u32 % 20_000]);
            let want = match model.get(&key.0) {
                Some(r) => Some(*r),
                None => {
                    model.insert(key.0, record);
                    None
                }
            };
            assert_eq!(idx.claim(key, record), want, "record {record}");
        }
        assert_eq!(idx.len(), model.len());
    }

    #[test]
    fn reserving_sizes_once_and_keeps_what_is_held() {
        let mut idx = SeenIndex::default();
        for i in 1..=1000u64 {
            idx.claim(Key::of(&i.to_string()), i);
        }
        idx.try_reserve(150_000).unwrap();
        let cap = idx.capacity();
        assert!(cap >= 151_000, "{cap}");
        assert!(cap < 400_000, "not oversized: {cap}");
        for i in 1001..=151_000u64 {
            idx.claim(Key::of(&i.to_string()), i);
        }
        assert_eq!(idx.capacity(), cap, "no growth after the reservation");
        assert_eq!(idx.claim(Key::of("7"), 999_999), Some(7));
        assert!(idx.try_reserve(usize::MAX).is_err());
        assert_eq!(idx.claim(Key::of("8"), 999_999), Some(8));
    }

    #[test]
    fn record_numbers_saturate_and_never_read_as_empty() {
        let mut idx = SeenIndex::default();
        idx.claim(Key::of("a"), u64::from(u32::MAX) + 5);
        assert_eq!(idx.claim(Key::of("a"), 1), Some(u64::from(u32::MAX)));
        // Record 0 (not a record number, but a caller's slip) still
        // claims: it is never read back as an empty slot.
        idx.claim(Key::of("z"), 0);
        assert_eq!(idx.claim(Key::of("z"), 9), Some(1));
        SeenIndex::default().prefetch(&Key::of("b"));
        idx.prefetch(&Key::of("b"));
    }
}
