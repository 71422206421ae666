//! `/10m.bin`: 10 MiB of deterministic, non-repeating bytes for bulk-transfer tests and
//! benchmarks. Word `k` (8 bytes, little-endian) is a hash of `k`, so a lost, repeated
//! or reordered segment anywhere in the file changes its SHA-256. The host side (the
//! tests crate includes this file) generates the same bytes for comparison and for the
//! Linux guest of `cargo xtask bench net`.
#![forbid(unsafe_code)]

/// The URL path.
pub const PATH: &str = "/10m.bin";
/// The file's length in bytes.
pub const LEN: usize = 10 << 20;

/// Word `k` of the file (SplitMix64's finalizer: every bit of `k` reaches every bit).
fn word(k: u64) -> u64 {
    let mut z = k.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the file's bytes from `offset` on (any offset and length; bytes
/// past [`LEN`] continue the same sequence).
pub fn fill(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let at = offset + i as u64;
        *b = word(at / 8).to_le_bytes()[(at % 8) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_gives_the_same_bytes() {
        let mut whole = [0u8; 100];
        fill(5, &mut whole);
        let (mut a, mut b) = ([0u8; 37], [0u8; 63]);
        fill(5, &mut a);
        fill(42, &mut b);
        assert_eq!(&whole[..37], &a);
        assert_eq!(&whole[37..], &b);
    }

    #[test]
    fn no_short_period() {
        let mut buf = [0u8; 4096];
        fill(0, &mut buf);
        for period in [8, 16, 64, 512, 1448, 2048] {
            assert_ne!(buf[..period], buf[period..2 * period], "period {period}");
        }
        assert_eq!(word(0), word(0));
        assert_ne!(word(0), word(1));
    }
}
