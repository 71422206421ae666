//! The PV `start_info` page (pure; host-tested).
//!
//! Read as bytes at the offsets of [`crate::abi::start_info`] ([`crate::abi::si`]). Layout
//! (xen/include/public/xen.h, x86-64; `abi` asserts it):
//! ```text
//!  0 char magic[32]          32 u64 nr_pages         40 u64 shared_info (machine addr)
//! 48 u32 flags               56 u64 store_mfn        64 u32 store_evtchn
//! 72 console: domU {u64 mfn; u32 evtchn} / dom0 {u32 info_off; u32 info_size}
//! 88 u64 pt_base (virt)      96 u64 nr_pt_frames    104 u64 mfn_list (virt)
//! 112 u64 mod_start         120 u64 mod_len         128 char cmd_line[1024]
//! 1152 u64 first_p2m_pfn   1160 u64 nr_p2m_frames
//! ```
#![forbid(unsafe_code)]

use core::fmt;

use libos::bytes::{le_u32, le_u64};

use crate::abi::{SIF_INITDOMAIN, si};

/// Bytes of `start_info` we read.
pub const LEN: usize = si::LEN;
const CMDLINE_OFF: usize = si::CMD_LINE;
const CMDLINE_LEN: usize = si::CMD_LINE_LEN;

/// The fields boot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    /// Pages given to the domain.
    pub nr_pages: u64,
    /// Machine address of the shared-info page.
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Xenstore ring frame and event channel.
    pub store_mfn: u64,
    /// Xenstore event channel.
    pub store_evtchn: u32,
    /// domU console ring frame (0 for dom0).
    pub console_mfn: u64,
    /// domU console event channel.
    pub console_evtchn: u32,
    /// Virtual address of the top-level page table.
    pub pt_base: u64,
    /// Frames of bootstrap page tables.
    pub nr_pt_frames: u64,
    /// Virtual address of the pfn → mfn list.
    pub mfn_list: u64,
}

impl StartInfo {
    /// Whether this is dom0.
    pub fn is_dom0(&self) -> bool {
        self.flags & SIF_INITDOMAIN != 0
    }

    /// The end of Xen's bootstrap structures in the initial mapping (page tables plus
    /// the bootstrap stack page after them, the p2m list, start_info itself at
    /// `self_va`), page-aligned: everything above it, up to the end of the initial
    /// mapping, is free.
    pub fn bootstrap_end(&self, self_va: u64) -> u64 {
        // Saturating: the values come from the hypervisor.
        let pt_end = self
            .pt_base
            .saturating_add(self.nr_pt_frames.saturating_add(1).saturating_mul(4096));
        let p2m_end = self
            .mfn_list
            .saturating_add(self.nr_pages.saturating_mul(8));
        pt_end
            .max(p2m_end)
            .max(self_va.saturating_add(4096))
            .saturating_add(4095)
            & !4095
    }

    /// The end of the initial mapping Xen guarantees: at least 512 KiB past the
    /// bootstrap structures, extended to a 4 MiB boundary (public/xen.h).
    pub fn initial_mapping_end(&self, self_va: u64) -> u64 {
        self.bootstrap_end(self_va)
            .saturating_add(512 * 1024 + (4 << 20) - 1)
            & !((4 << 20) - 1)
    }
}

/// Malformed `start_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the structure.
    Truncated,
    /// `magic` does not start with `xen-3.0-x86_64`.
    BadMagic,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "start_info truncated"),
            Error::BadMagic => write!(
                f,
                "start_info magic is not xen-3.0-x86_64 (not a 64-bit PV boot?)"
            ),
        }
    }
}

/// Parses `start_info`.
pub fn parse(b: &[u8]) -> Result<StartInfo, Error> {
    if b.len() < LEN {
        return Err(Error::Truncated);
    }
    if !b[si::MAGIC..].starts_with(b"xen-3.0-x86_64") {
        return Err(Error::BadMagic);
    }
    Ok(StartInfo {
        nr_pages: le_u64(b, si::NR_PAGES),
        shared_info: le_u64(b, si::SHARED_INFO),
        flags: le_u32(b, si::FLAGS),
        store_mfn: le_u64(b, si::STORE_MFN),
        store_evtchn: le_u32(b, si::STORE_EVTCHN),
        console_mfn: le_u64(b, si::CONSOLE_MFN),
        console_evtchn: le_u32(b, si::CONSOLE_EVTCHN),
        pt_base: le_u64(b, si::PT_BASE),
        nr_pt_frames: le_u64(b, si::NR_PT_FRAMES),
        mfn_list: le_u64(b, si::MFN_LIST),
    })
}

/// The guest command line (up to the first NUL).
pub fn cmdline(b: &[u8]) -> &[u8] {
    let Some(raw) = b.get(CMDLINE_OFF..CMDLINE_OFF + CMDLINE_LEN) else {
        return &[];
    };
    &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; LEN];
        b[..18].copy_from_slice(b"xen-3.0-x86_64\0\0\0\0");
        b[32..40].copy_from_slice(&16384u64.to_le_bytes());
        b[48..52].copy_from_slice(&SIF_INITDOMAIN.to_le_bytes());
        b[88..96].copy_from_slice(&0x40_5000u64.to_le_bytes());
        b[96..104].copy_from_slice(&6u64.to_le_bytes());
        b[104..112].copy_from_slice(&0x38_0000u64.to_le_bytes());
        b[128..139].copy_from_slice(b"hello world");
        b
    }

    #[test]
    fn parses_and_computes_the_free_area() {
        let b = sample();
        let s = parse(&b).unwrap();
        assert!(s.is_dom0());
        assert_eq!(s.nr_pages, 16384);
        assert_eq!(cmdline(&b), b"hello world");
        // Page tables end at 0x40b000, plus the stack page: 0x40c000.
        assert_eq!(s.bootstrap_end(0x40_4000), 0x40_c000);
        assert_eq!(s.initial_mapping_end(0x40_4000), 0x80_0000);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(&[0; 10]), Err(Error::Truncated));
        let mut b = sample();
        b[0] = b'y';
        assert_eq!(parse(&b), Err(Error::BadMagic));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = parse(&bytes);
            let _ = cmdline(&bytes);
        }
    }
}
