//! The 2-level event-channel scan (pure; host-tested).
//!
//! Xen marks a pending port in `evtchn_pending[word]` and the word in the vCPU's
//! `evtchn_pending_sel`. The upcall takes the selector, and for each selected word the
//! bits that are pending and not masked; ports that are masked stay pending (they are
//! delivered when unmasked). The caller does the atomic fetch/clear on shared memory;
//! this module decides which ports to handle, in order.
#![forbid(unsafe_code)]

/// Bits per word of the pending/mask bitmaps (x86-64).
pub const BITS: usize = 64;
/// Words in `evtchn_pending`/`evtchn_mask` (4096 ports).
pub const WORDS: usize = 64;

/// Calls `handle(port)` for every port that is selected, pending and unmasked, lowest
/// first; `clear(word, bits)` is called before handling to acknowledge those bits.
pub fn scan(
    selector: u64,
    pending: impl Fn(usize) -> u64,
    mask: impl Fn(usize) -> u64,
    mut clear: impl FnMut(usize, u64),
    mut handle: impl FnMut(u32),
) {
    let mut sel = selector;
    while sel != 0 {
        let word = sel.trailing_zeros() as usize;
        sel &= sel - 1;
        if word >= WORDS {
            continue;
        }
        let mut bits = pending(word) & !mask(word);
        if bits == 0 {
            continue;
        }
        clear(word, bits);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            handle((word * BITS + bit) as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn handles_exactly_the_selected_pending_unmasked_ports(
            pending in proptest::collection::vec(any::<u64>(), WORDS),
            mask in proptest::collection::vec(any::<u64>(), WORDS),
            selector in any::<u64>(),
        ) {
            let mut cleared = vec![0u64; WORDS];
            let mut handled = Vec::new();
            scan(selector, |w| pending[w], |w| mask[w], |w, b| cleared[w] |= b, |p| handled.push(p));
            let mut want = Vec::new();
            for w in 0..WORDS {
                if selector & (1 << w) != 0 {
                    for b in 0..BITS {
                        if pending[w] & !mask[w] & (1 << b) != 0 {
                            want.push((w * BITS + b) as u32);
                        }
                    }
                }
            }
            prop_assert_eq!(&handled, &want);
            for w in 0..WORDS {
                // Masked ports are never acknowledged: they stay pending for later.
                prop_assert_eq!(cleared[w] & mask[w], 0);
            }
        }
    }
}
