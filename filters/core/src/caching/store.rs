//! The exact tier's store in Envoy's shared data (one copy per Envoy, shared by every worker).
//!
//! Shared data has no delete and no size limit, so the store bounds itself: entries live in a fixed
//! number of slots (`slot.<n>`, the slot chosen by the key's digest; a new entry replaces whatever
//! held its slot), and a small account (`account`: bytes and entries stored, and a clock hand)
//! keeps the stored bytes within `max_bytes`: past it, the hand sweeps the slots in order and empties
//! them until the bytes fit. Every store costs a constant number of shared-data operations (the
//! sweep's work is paid once per byte stored), whatever the number of entries. The account is
//! updated with compare-and-swap, so concurrent workers never lose each other's updates; entries
//! are written whole (Envoy replaces a value atomically), and every read checks the entry's digest,
//! length and checksum, so a replaced, evicted or damaged slot reads as a miss, never as another
//! request's answer.

use super::key::Digest32;

/// Envoy's shared data as the store needs it (implemented over the host by the filter).
pub trait SharedData {
    /// The value under `key` and its version (`None`: no such key).
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String>;
    /// Writes `value` if the version is still `cas` (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    CasMismatch,
    Failed(String),
}

/// One stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix seconds when it was stored (the `age` of a hit).
    pub stored_at: u64,
    /// Unix seconds after which it is no longer served.
    pub expires_at: u64,
    /// The tokens the original answer cost, reported as saved on each hit.
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// The answer in its API's non-streaming JSON shape.
    pub answer: Vec<u8>,
}

const MAGIC: &[u8; 4] = b"LLMC";
const VERSION: u8 = 1;
/// magic, version, digest, stored_at, expires_at, input, output, answer length, checksum.
const HEADER: usize = 4 + 1 + 32 + 8 + 8 + 4 + 4 + 4 + 8;

impl Entry {
    pub fn encode(&self, digest: &Digest32) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.answer.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(digest);
        out.extend_from_slice(&self.stored_at.to_le_bytes());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&self.input_tokens.to_le_bytes());
        out.extend_from_slice(&self.output_tokens.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.answer.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&checksum(&self.answer).to_le_bytes());
        out.extend_from_slice(&self.answer);
        out
    }

    /// The entry stored as `bytes` if it is whole and is the one for `digest`.
    pub fn decode(bytes: &[u8], digest: &Digest32) -> Option<Entry> {
        let mut reader = Reader(bytes);
        if reader.take(4)? != MAGIC || reader.take(1)? != [VERSION] {
            return None;
        }
        if reader.take(32)? != digest {
            return None;
        }
        let stored_at = reader.u64()?;
        let expires_at = reader.u64()?;
        let input_tokens = reader.u32()?;
        let output_tokens = reader.u32()?;
        let length = usize::try_from(reader.u32()?).ok()?;
        let sum = reader.u64()?;
        let answer = reader.0;
        if answer.len() != length || checksum(answer) != sum {
            return None;
        }
        Some(Entry {
            stored_at,
            expires_at,
            input_tokens,
            output_tokens,
            answer: answer.to_vec(),
        })
    }
}

/// The first 8 bytes of the digest stored in an encoded entry (the directory's tag for its slot).
fn tag_of_encoded(bytes: &[u8]) -> Option<u64> {
    let digest = bytes.get(5..13)?;
    Some(u64::from_le_bytes(digest.try_into().ok()?))
}

fn tag_of(digest: &Digest32) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

/// FNV-1a, 64-bit: catches a damaged or truncated value (not an adversary: only this filter writes
/// shared data, and the digest in the header already names the request).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// What the store holds, and where the eviction hand is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Account {
    bytes: u64,
    entries: u64,
    hand: u32,
}

impl Account {
    fn decode(bytes: &[u8]) -> Option<Account> {
        let mut reader = Reader(bytes);
        Some(Account {
            bytes: reader.u64()?,
            entries: reader.u64()?,
            hand: reader.u32()?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.entries.to_le_bytes());
        out.extend_from_slice(&self.hand.to_le_bytes());
        out
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit(Entry),
    Miss,
    /// The entry was there but past its TTL.
    Expired,
    /// Shared data could not be read.
    Failed(String),
}

/// What storing did to the other entries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Entries removed to make room (not counting the one this entry replaced in its slot).
    pub evicted: u32,
    /// Whether the slot held another key's entry, now replaced.
    pub replaced: bool,
}

/// How often a contended account update is retried before the store gives up (the account is
/// then off by one entry's bytes until the next update; the slots themselves stay correct).
const CAS_ATTEMPTS: usize = 32;

#[derive(Debug, Clone)]
pub struct Store {
    prefix: String,
    slots: u32,
    max_bytes: u64,
}

impl Store {
    pub fn new(namespace: &str, slots: u32, max_bytes: u64) -> Self {
        Store {
            prefix: format!("llm_cache.{namespace}."),
            slots: slots.max(1),
            max_bytes,
        }
    }

    fn slot_of(&self, digest: &Digest32) -> u32 {
        u32::try_from(tag_of(digest) % u64::from(self.slots)).unwrap_or(0)
    }

    fn slot_key(&self, slot: u32) -> String {
        format!("{}slot.{slot}", self.prefix)
    }

    fn account_key(&self) -> String {
        format!("{}account", self.prefix)
    }

    /// Creates the account before traffic: Envoy does not compare-and-swap the first write of a
    /// key, so two workers creating it at once could lose an update.
    pub fn ensure(&self, shared: &dyn SharedData) {
        if let Ok((None, _)) = shared.get(&self.account_key()) {
            let _ = shared.set(&self.account_key(), &Account::default().encode(), None);
        }
    }

    pub fn lookup(&self, shared: &dyn SharedData, digest: &Digest32, now_s: u64) -> Lookup {
        let bytes = match shared.get(&self.slot_key(self.slot_of(digest))) {
            Ok((Some(bytes), _)) => bytes,
            Ok((None, _)) => return Lookup::Miss,
            Err(why) => return Lookup::Failed(why),
        };
        match Entry::decode(&bytes, digest) {
            Some(entry) if entry.expires_at > now_s => Lookup::Hit(entry),
            Some(_) => Lookup::Expired,
            None => Lookup::Miss,
        }
    }

    /// Applies `change` to the account with compare-and-swap; the account after it.
    fn update_account(
        &self,
        shared: &dyn SharedData,
        change: impl Fn(Account) -> Account,
    ) -> Result<Account, String> {
        let key = self.account_key();
        for _ in 0..CAS_ATTEMPTS {
            let (bytes, cas) = shared.get(&key)?;
            let next = change(
                bytes
                    .as_deref()
                    .and_then(Account::decode)
                    .unwrap_or_default(),
            );
            match shared.set(&key, &next.encode(), cas) {
                Ok(()) => return Ok(next),
                Err(WriteError::CasMismatch) => continue,
                Err(WriteError::Failed(why)) => return Err(why),
            }
        }
        Err("cache account stayed contended".into())
    }

    /// Stores `entry` under `digest`; then, while the stored bytes exceed `max_bytes`, the clock
    /// hand empties slots.
    pub fn insert(
        &self,
        shared: &dyn SharedData,
        digest: &Digest32,
        entry: &Entry,
    ) -> Result<Stored, String> {
        let encoded = entry.encode(digest);
        let size = u64::try_from(encoded.len()).unwrap_or(u64::MAX);
        if size > self.max_bytes {
            return Err("entry larger than max_bytes".into());
        }
        let slot = self.slot_of(digest);
        let key = self.slot_key(slot);
        let (old, _) = shared.get(&key)?;
        let old = old.filter(|bytes| !bytes.is_empty());
        let old_size = old
            .as_ref()
            .map_or(0, |b| u64::try_from(b.len()).unwrap_or(0));
        // Storing the same key again refreshes its entry; only another key's entry is replaced.
        let replaced = old
            .as_deref()
            .and_then(tag_of_encoded)
            .is_some_and(|tag| tag != tag_of(digest));
        shared
            .set(&key, &encoded, None)
            .map_err(|err| format!("{err:?}"))?;
        let mut account = self.update_account(shared, |a| Account {
            bytes: a.bytes.saturating_sub(old_size).saturating_add(size),
            entries: a.entries + u64::from(old.is_none()),
            ..a
        })?;
        let mut evicted = 0u32;
        // Each turn empties at most one slot; a full turn of the clock empties them all.
        for _ in 0..self.slots {
            if account.bytes <= self.max_bytes {
                break;
            }
            account = self.update_account(shared, |a| Account {
                hand: (a.hand % self.slots + 1) % self.slots,
                ..a
            })?;
            // The slot the hand just passed is this turn's.
            let claimed = account.hand.checked_sub(1).unwrap_or(self.slots - 1);
            if claimed == slot {
                continue; // the entry just stored stays
            }
            let victim = self.slot_key(claimed);
            let Ok((Some(bytes), cas)) = shared.get(&victim) else {
                continue;
            };
            if bytes.is_empty() || shared.set(&victim, &[], cas).is_err() {
                continue; // empty, or just replaced by another worker: that one stays
            }
            let freed = u64::try_from(bytes.len()).unwrap_or(0);
            account = self.update_account(shared, |a| Account {
                bytes: a.bytes.saturating_sub(freed),
                entries: a.entries.saturating_sub(1),
                ..a
            })?;
            evicted += 1;
        }
        Ok(Stored { evicted, replaced })
    }

    /// Entries and bytes stored.
    pub fn size(&self, shared: &dyn SharedData) -> (u64, u64) {
        shared
            .get(&self.account_key())
            .ok()
            .and_then(|(bytes, _)| bytes)
            .and_then(|bytes| Account::decode(&bytes))
            .map_or((0, 0), |a| (a.entries, a.bytes))
    }
}

/// An in-memory [`SharedData`] with Envoy's semantics, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryShared(pub std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>);

#[cfg(test)]
impl SharedData for MemoryShared {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        Ok(match self.0.borrow().get(key) {
            Some((bytes, version)) => (Some(bytes.clone()), Some(*version)),
            None => (None, None),
        })
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        let mut map = self.0.borrow_mut();
        let version = map.get(key).map(|(_, v)| *v);
        if let (Some(expected), Some(version)) = (cas, version) {
            if expected != version {
                return Err(WriteError::CasMismatch);
            }
        }
        map.insert(
            key.to_string(),
            (value.to_vec(), version.map_or(1, |v| v + 1)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest32 {
        let mut d = [0u8; 32];
        d[0] = n;
        d[31] = n;
        d
    }

    fn entry(size: usize, expires_at: u64) -> Entry {
        Entry {
            stored_at: 100,
            expires_at,
            input_tokens: 3,
            output_tokens: 4,
            answer: vec![b'x'; size],
        }
    }

    #[test]
    fn an_entry_round_trips_and_any_damage_reads_as_nothing() {
        let e = entry(50, 200);
        let bytes = e.encode(&digest(1));
        assert_eq!(Entry::decode(&bytes, &digest(1)), Some(e));
        assert_eq!(Entry::decode(&bytes, &digest(2)), None, "another key");
        for cut in 0..bytes.len() {
            assert_eq!(
                Entry::decode(&bytes[..cut], &digest(1)),
                None,
                "torn at {cut}"
            );
        }
        for position in 0..bytes.len() {
            if (5..37).contains(&position) {
                continue; // the digest itself: checked as "another key" above
            }
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            let decoded = Entry::decode(&damaged, &digest(1));
            // Only the times and token counts are not covered by the checksum.
            if decoded.is_some() {
                assert!(
                    (37..61).contains(&position),
                    "flip at {position} undetected"
                );
            }
        }
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert_eq!(Entry::decode(&longer, &digest(1)), None);
    }

    #[test]
    fn lookup_hit_miss_and_expiry() {
        let shared = MemoryShared::default();
        let store = Store::new("t", 16, 10_000);
        store.ensure(&shared);
        assert_eq!(store.lookup(&shared, &digest(1), 150), Lookup::Miss);
        store.insert(&shared, &digest(1), &entry(10, 200)).unwrap();
        assert!(matches!(
            store.lookup(&shared, &digest(1), 150),
            Lookup::Hit(_)
        ));
        assert_eq!(store.lookup(&shared, &digest(1), 200), Lookup::Expired);
        assert_eq!(store.lookup(&shared, &digest(2), 150), Lookup::Miss);
    }

    #[test]
    fn the_byte_limit_holds_and_an_evicted_entry_is_never_served() {
        let shared = MemoryShared::default();
        let store = Store::new("t", 64, 1_000);
        store.ensure(&shared);
        let size = entry(200, 500).encode(&digest(0)).len() as u64;
        let mut evicted = 0;
        for n in 0..40u8 {
            evicted += store
                .insert(&shared, &digest(n), &entry(200, 500))
                .unwrap()
                .evicted;
            let (entries, bytes) = store.size(&shared);
            assert!(bytes <= 1_000, "{bytes} bytes after {n}");
            assert_eq!(bytes, entries * size);
        }
        assert!(evicted >= 40 - (1_000 / size) as u32);
        // Whatever survived is served whole; whatever was evicted is a miss, never another answer.
        let mut served = 0;
        for n in 0..40u8 {
            match store.lookup(&shared, &digest(n), 1) {
                Lookup::Hit(e) => {
                    assert_eq!(e, entry(200, 500));
                    served += 1;
                }
                Lookup::Miss => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(served as u64, store.size(&shared).0);
        // The latest entry always stays.
        assert!(matches!(
            store.lookup(&shared, &digest(39), 1),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn a_slot_holds_one_entry_and_a_replaced_one_misses() {
        let shared = MemoryShared::default();
        let store = Store::new("t", 1, 10_000);
        store.ensure(&shared);
        store.insert(&shared, &digest(1), &entry(10, 500)).unwrap();
        let stored = store.insert(&shared, &digest(2), &entry(10, 500)).unwrap();
        assert!(stored.replaced);
        assert_eq!(store.lookup(&shared, &digest(1), 1), Lookup::Miss);
        assert!(matches!(
            store.lookup(&shared, &digest(2), 1),
            Lookup::Hit(_)
        ));
        assert_eq!(store.size(&shared).0, 1);
    }

    #[test]
    fn an_entry_over_the_byte_limit_is_refused() {
        let shared = MemoryShared::default();
        let store = Store::new("t", 4, 100);
        assert!(store.insert(&shared, &digest(1), &entry(200, 500)).is_err());
        assert_eq!(store.lookup(&shared, &digest(1), 1), Lookup::Miss);
    }
}
