//! The accepted set, loaded into memory at open, and [`LedgerReader`], which
//! answers `should_skip` from it on another thread (see "Threads:
//! `should_skip`" in the module doc of [`crate::ledger`]).

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::{sql, LedgerError};

/// What a ledger is opened for, and so what it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A run: the accepted set is loaded for its skips, without the
    /// identities `--reshare-unverified AGE` sends again.
    Run { reshare_age: Option<Duration> },
    /// `verify`: only statuses are recorded; nothing is loaded (a run's
    /// skips would be 52 bytes an identity of memory and a full read of
    /// the ledger for nothing).
    Statuses,
}

/// The accepted set loaded at open: sorted `(xxh3-128 of identityReference,
/// fingerprint)`. A 128-bit key makes a collision between two of even a
/// billion identities negligible (and a false skip would also need equal
/// fingerprints).
#[derive(Debug, Default)]
pub(super) struct AcceptedSet {
    slots: Vec<(u128, [u8; 32])>,
    /// `dir[b]..dir[b + 1]`: the slots whose key's top `bits` bits are `b`
    /// (about one per bucket: a lookup is one or two cache misses, not the
    /// twenty steps of a binary search).
    dir: Vec<u32>,
    bits: u32,
}

impl AcceptedSet {
    pub(super) fn key(identity_reference: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(identity_reference.as_bytes())
    }

    pub(super) fn contains(&self, identity_reference: &str, fp: &[u8; 32]) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let k = Self::key(identity_reference);
        let b = (k >> (128 - self.bits)) as usize;
        let (lo, hi) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        self.slots[lo..hi]
            .iter()
            .find(|s| s.0 == k)
            .is_some_and(|s| &s.1 == fp)
    }

    pub(super) fn new(mut slots: Vec<(u128, [u8; 32])>) -> AcceptedSet {
        slots.sort_unstable_by_key(|s| s.0);
        // About one slot per bucket, at most 2^24 buckets (64 MB).
        let bits = (usize::BITS - slots.len().leading_zeros()).clamp(1, 24);
        let mut dir = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for b in 0..(1u128 << bits) {
            while i < slots.len() && (slots[i].0 >> (128 - bits)) < b {
                i += 1;
            }
            dir.push(i as u32);
        }
        dir.push(slots.len() as u32);
        AcceptedSet { slots, dir, bits }
    }

    /// The accepted identities; with `reshare_age` (`--reshare-unverified
    /// AGE`), without those whose last verification, made at least AGE
    /// after the identity was accepted, found a status other than
    /// `VERIFIED`: they are to be sent again. A status seen sooner (a
    /// `PENDING` minutes after the share) says nothing yet; an identity
    /// never verified is left alone.
    pub(super) fn load(
        conn: &Connection,
        path: &str,
        reshare_age: Option<std::time::Duration>,
    ) -> Result<AcceptedSet, LedgerError> {
        // Without --reshare-unverified the query is the one of a ledger
        // with no verification columns: the nightly path does not change.
        let filter = match reshare_age {
            None => "last_outcome = 'accepted'",
            Some(_) => {
                "last_outcome = 'accepted' AND NOT (kyc_status IS NOT NULL AND kyc_status <> 'VERIFIED' \
                 AND (julianday(kyc_checked_at) - julianday(accepted_at)) * 86400.0 >= ?1)"
            }
        };
        let args: Vec<f64> = reshare_age.map(|a| a.as_secs_f64()).into_iter().collect();
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM identities WHERE {filter}"),
                rusqlite::params_from_iter(args.iter()),
                |r| r.get(0),
            )
            .map_err(sql(path, "counting accepted identities"))?;
        let mut slots = Vec::with_capacity(n as usize);
        let mut stmt = conn
            .prepare(&format!(
                "SELECT identity_reference, fingerprint FROM identities WHERE {filter}"
            ))
            .map_err(sql(path, "reading accepted identities"))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(sql(path, "reading accepted identities"))?;
        while let Some(row) = rows
            .next()
            .map_err(sql(path, "reading accepted identities"))?
        {
            let id = row
                .get_ref(0)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(sql(path, "reading accepted identities"))?;
            let fp = row
                .get_ref(1)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(sql(path, "reading accepted identities"))?;
            if let Ok(fp) = <[u8; 32]>::try_from(fp) {
                slots.push((Self::key(id), fp));
            }
        }
        Ok(AcceptedSet::new(slots))
    }
}

/// The read side of a ledger for the thread that reads the input: answers
/// [`should_skip`](LedgerReader::should_skip) from the accepted set loaded
/// at open. Cheap to clone, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct LedgerReader {
    pub(super) set: Arc<AcceptedSet>,
}

impl LedgerReader {
    /// True iff the identity's last outcome (as of open) is `accepted`, sent
    /// with this fingerprint.
    pub fn should_skip(&self, identity_reference: &str, fp: &[u8; 32]) -> bool {
        self.set.contains(identity_reference, fp)
    }

    /// Identities whose last outcome is `accepted`, as of open.
    pub fn accepted(&self) -> usize {
        self.set.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::model::fingerprint;

    #[test]
    fn accepted_set_finds_every_key_and_only_those() {
        assert!(!AcceptedSet::new(vec![]).contains("x", &[0; 32]));
        for n in [1usize, 2, 3, 1000, 20_000] {
            let fp = |i: usize| fingerprint(&format!("u{i}@x.io"), "61410001000", "sumsub");
            let set = AcceptedSet::new(
                (0..n)
                    .map(|i| (AcceptedSet::key(&format!("c-{i}")), fp(i)))
                    .collect(),
            );
            for i in 0..n {
                assert!(set.contains(&format!("c-{i}"), &fp(i)), "{n} {i}");
                assert!(!set.contains(&format!("c-{i}"), &fp(i + 1)));
                assert!(!set.contains(&format!("d-{i}"), &fp(i)));
            }
        }
    }

    #[test]
    fn reader_is_send_sync() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<LedgerReader>();
        fn send<T: Send>() {}
        send::<Ledger>();
    }
}
