//! Looking at eight bytes at a time in one `u64` ("SIMD within a register"). The modules are built for
//! size and Wasm has no vectorized `memchr`-like loops for these tests, so a byte-by-byte scan over a
//! long prompt costs as much as a regex pass; these steps skip eight plain bytes at once.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = ONES * 0x80;

/// The bytes of an eight-byte `chunk` (from `chunks_exact(8)`) as one word.
pub(crate) fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().unwrap_or_default())
}

/// Non-zero when some byte of `x` is below `n` (n ≤ 128): such a byte borrows into its own top bit,
/// which was clear. Exact for "is there one"; which lane is set past the first is not.
pub(crate) fn any_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// Non-zero when some byte of `x` is `byte`.
pub(crate) fn any_equal(x: u64, byte: u8) -> u64 {
    any_below(x ^ (ONES * u64::from(byte)), 1)
}

/// Whether some byte of `x` is an ASCII digit.
#[cfg_attr(
    not(any(feature = "regex", feature = "regex-lite")),
    allow(dead_code, reason = "the PII detectors use it")
)]
pub(crate) fn any_digit(x: u64) -> bool {
    any_below(x ^ (ONES * u64::from(b'0')), 10) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_in_every_lane_is_told_exactly() {
        for lane in 0..8 {
            for byte in 0..=255u8 {
                let mut bytes = [b'x'; 8];
                bytes[lane] = byte;
                let x = word(&bytes);
                assert_eq!(any_below(x, 0x20) != 0, byte < 0x20, "{byte} in {lane}");
                assert_eq!(any_equal(x, b'"') != 0, byte == b'"', "{byte} in {lane}");
                assert_eq!(any_digit(x), byte.is_ascii_digit(), "{byte} in {lane}");
            }
        }
    }
}
