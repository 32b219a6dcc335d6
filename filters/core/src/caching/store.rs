//! The exact tier's store in Envoy's shared data (one copy per Envoy, shared by every worker).
//!
//! Shared data has no delete and no size limit, so the store bounds itself: entries live in a fixed
//! number of slots (`slot.<n>`, the slot chosen by the key's digest; a new entry replaces whatever
//! held its slot), and a directory (`dir`) lists the occupied slots oldest first with their sizes.
//! Storing appends to the directory and evicts from its front until the stored bytes fit `max_bytes`.
//! The directory is updated with compare-and-swap, so concurrent workers never lose each other's
//! records; entries are written whole (Envoy replaces a value atomically), and every read checks the
//! entry's digest, length and checksum, so a replaced, evicted or damaged slot reads as a miss, never
//! as another request's answer.

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

/// One occupied slot, as the directory lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    slot: u32,
    bytes: u32,
    tag: u64,
}

/// The occupied slots, oldest first, and their total size.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directory {
    records: std::collections::VecDeque<Record>,
    total: u64,
}

impl Directory {
    fn decode(bytes: &[u8]) -> Option<Directory> {
        let mut reader = Reader(bytes);
        let count = reader.u32()?;
        let mut directory = Directory::default();
        for _ in 0..count {
            let record = Record {
                slot: reader.u32()?,
                bytes: reader.u32()?,
                tag: reader.u64()?,
            };
            directory.total += u64::from(record.bytes);
            directory.records.push_back(record);
        }
        Some(directory)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.records.len() * 16);
        let count = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for record in &self.records {
            out.extend_from_slice(&record.slot.to_le_bytes());
            out.extend_from_slice(&record.bytes.to_le_bytes());
            out.extend_from_slice(&record.tag.to_le_bytes());
        }
        out
    }

    fn remove_slot(&mut self, slot: u32) -> Option<Record> {
        let position = self.records.iter().position(|r| r.slot == slot)?;
        let record = self.records.remove(position)?;
        self.total -= u64::from(record.bytes);
        Some(record)
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

/// How often a contended directory update is retried before the store gives up (it then stores
/// nothing: a cache may always forget).
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

    fn dir_key(&self) -> String {
        format!("{}dir", self.prefix)
    }

    /// Creates the directory before traffic: Envoy does not compare-and-swap the first write of a
    /// key, so two workers creating it at once could lose a record.
    pub fn ensure(&self, shared: &dyn SharedData) {
        if let Ok((None, _)) = shared.get(&self.dir_key()) {
            let _ = shared.set(&self.dir_key(), &Directory::default().encode(), None);
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

    /// Stores `entry` under `digest`, evicting the oldest entries while the total exceeds
    /// `max_bytes`.
    pub fn insert(
        &self,
        shared: &dyn SharedData,
        digest: &Digest32,
        entry: &Entry,
    ) -> Result<Stored, String> {
        let encoded = entry.encode(digest);
        let size = u32::try_from(encoded.len()).map_err(|_| "entry too large".to_string())?;
        if u64::from(size) > self.max_bytes {
            return Err("entry larger than max_bytes".into());
        }
        let slot = self.slot_of(digest);
        let dir_key = self.dir_key();
        let mut outcome = None;
        for _ in 0..CAS_ATTEMPTS {
            let (bytes, cas) = shared.get(&dir_key)?;
            let mut directory = bytes
                .as_deref()
                .and_then(Directory::decode)
                .unwrap_or_default();
            // Storing the same key again refreshes its entry; only another key's entry is replaced.
            let replaced = directory
                .remove_slot(slot)
                .is_some_and(|old| old.tag != tag_of(digest));
            directory.records.push_back(Record {
                slot,
                bytes: size,
                tag: tag_of(digest),
            });
            directory.total += u64::from(size);
            let mut evicted = Vec::new();
            while directory.total > self.max_bytes {
                match directory.records.pop_front() {
                    Some(record) => {
                        directory.total -= u64::from(record.bytes);
                        evicted.push(record);
                    }
                    None => break,
                }
            }
            match shared.set(&dir_key, &directory.encode(), cas) {
                Ok(()) => {
                    outcome = Some((replaced, evicted));
                    break;
                }
                Err(WriteError::CasMismatch) => continue,
                Err(WriteError::Failed(why)) => return Err(why),
            }
        }
        let Some((replaced, evicted)) = outcome else {
            return Err("cache directory stayed contended".into());
        };
        shared
            .set(&self.slot_key(slot), &encoded, None)
            .map_err(|err| format!("{err:?}"))?;
        for record in &evicted {
            self.clear_slot(shared, record);
        }
        Ok(Stored {
            evicted: u32::try_from(evicted.len()).unwrap_or(u32::MAX),
            replaced,
        })
    }

    /// Empties an evicted slot unless another entry has taken it since.
    fn clear_slot(&self, shared: &dyn SharedData, record: &Record) {
        let key = self.slot_key(record.slot);
        if let Ok((Some(bytes), cas)) = shared.get(&key) {
            if tag_of_encoded(&bytes) == Some(record.tag) {
                let _ = shared.set(&key, &[], cas);
            }
        }
    }

    /// Entries and bytes the directory lists.
    pub fn size(&self, shared: &dyn SharedData) -> (usize, u64) {
        shared
            .get(&self.dir_key())
            .ok()
            .and_then(|(bytes, _)| bytes)
            .and_then(|bytes| Directory::decode(&bytes))
            .map_or((0, 0), |d| (d.records.len(), d.total))
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
    fn the_byte_limit_evicts_oldest_first_and_never_serves_an_evicted_entry() {
        let shared = MemoryShared::default();
        let store = Store::new("t", 64, 1_000);
        store.ensure(&shared);
        let size = entry(200, 500).encode(&digest(0)).len() as u64;
        let fits = (1_000 / size) as u8;
        for n in 0..fits {
            let stored = store.insert(&shared, &digest(n), &entry(200, 500)).unwrap();
            assert_eq!(stored.evicted, 0);
        }
        let stored = store
            .insert(&shared, &digest(fits), &entry(200, 500))
            .unwrap();
        assert_eq!(stored.evicted, 1);
        assert_eq!(
            store.lookup(&shared, &digest(0), 1),
            Lookup::Miss,
            "oldest evicted"
        );
        for n in 1..=fits {
            assert!(matches!(
                store.lookup(&shared, &digest(n), 1),
                Lookup::Hit(_)
            ));
        }
        let (entries, bytes) = store.size(&shared);
        assert_eq!(entries, usize::from(fits));
        assert!(bytes <= 1_000);
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
