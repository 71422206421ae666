//! The PV console ring's producer side (pure; host-tested).
//!
//! `struct xencons_interface`: `in[1024]`, `out[2048]`, then the indices `in_cons`,
//! `in_prod`, `out_cons`, `out_prod` (free-running u32; the ring position is the index
//! modulo the ring size). The backend (xenconsoled) advances `out_cons`.
#![forbid(unsafe_code)]

/// Size of the output ring.
pub const OUT_SIZE: u32 = 2048;
/// Byte offset of `out` in the page.
pub const OUT_OFFSET: usize = 1024;
/// Byte offsets of `out_cons` and `out_prod`.
pub const OUT_CONS_OFFSET: usize = 3080;
/// Byte offset of `out_prod`.
pub const OUT_PROD_OFFSET: usize = 3084;

/// A producer state that is impossible (the backend claims to have consumed more than
/// was produced, or more than the ring holds is outstanding): a hostile or broken peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt {
    /// The producer index we hold.
    pub prod: u32,
    /// The consumer index the backend shows.
    pub cons: u32,
}

/// Copies as much of `data` as fits into `out` (the ring) at `prod`; returns the new
/// producer index and how many bytes were queued.
pub fn produce(out: &mut [u8], prod: u32, cons: u32, data: &[u8]) -> Result<(u32, usize), Corrupt> {
    let used = prod.wrapping_sub(cons);
    if used > OUT_SIZE || out.len() != OUT_SIZE as usize {
        return Err(Corrupt { prod, cons });
    }
    let n = ((OUT_SIZE - used) as usize).min(data.len());
    for (i, &b) in data[..n].iter().enumerate() {
        out[(prod.wrapping_add(i as u32) % OUT_SIZE) as usize] = b;
    }
    Ok((prod.wrapping_add(n as u32), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_and_stops_when_full() {
        let mut ring = vec![0u8; OUT_SIZE as usize];
        let (p, n) = produce(&mut ring, OUT_SIZE - 2, OUT_SIZE - 2, b"abcd").unwrap();
        assert_eq!((p, n), (OUT_SIZE + 2, 4));
        assert_eq!(&ring[OUT_SIZE as usize - 2..], b"ab");
        assert_eq!(&ring[..2], b"cd");
        assert_eq!(produce(&mut ring, 100 + OUT_SIZE, 100, b"x").unwrap(), (100 + OUT_SIZE, 0));
        assert_eq!(produce(&mut ring, 5, 10, b"x"), Err(Corrupt { prod: 5, cons: 10 }));
    }

    proptest! {
        #[test]
        fn never_overwrites_unconsumed_bytes(prod in any::<u32>(), used in 0..=OUT_SIZE, len in 0usize..5000) {
            let cons = prod.wrapping_sub(used);
            let mut ring = vec![7u8; OUT_SIZE as usize];
            let data = vec![1u8; len];
            let (p, n) = produce(&mut ring, prod, cons, &data).unwrap();
            prop_assert_eq!(n, len.min((OUT_SIZE - used) as usize));
            prop_assert!(p.wrapping_sub(cons) <= OUT_SIZE);
            prop_assert_eq!(ring.iter().filter(|&&b| b == 1).count(), n);
        }

        #[test]
        fn hostile_indices_are_errors_not_panics(prod in any::<u32>(), cons in any::<u32>()) {
            let mut ring = vec![0u8; OUT_SIZE as usize];
            let r = produce(&mut ring, prod, cons, b"hello");
            prop_assert_eq!(r.is_err(), prod.wrapping_sub(cons) > OUT_SIZE);
        }
    }
}
