//! Stateless parser targets: each takes the fuzzer's bytes as the hostile input and
//! checks that the parser answers (an error or a value within its documented bounds),
//! never panics.

use alloc::string::String;

use libos::memory::Region;
use upcall_kvm::{bootargs as kvm_bootargs, madt, mmio_devices, start_info as pvh};
use upcall_xen::start_info as pv;

use crate::input::Input;

/// Xen PV `start_info`.
pub fn xen_start_info(data: &[u8]) {
    if let Ok(si) = pv::parse(data) {
        let _ = si.is_dom0();
        let va = Input::new(data).u64();
        let _ = si.bootstrap_end(va);
        let _ = si.initial_mapping_end(va);
    }
    let c = pv::cmdline(data);
    assert!(c.len() <= data.len() && !c.contains(&0));
}

/// PVH `hvm_start_info` and its memory map.
pub fn kvm_start_info(data: &[u8]) {
    let _ = pvh::parse(data);
    let mut out = [Region::default(); 16];
    if let Ok(n) = pvh::ram_regions(data, &mut out) {
        assert!(n <= out.len());
        for r in &out[..n] {
            assert!(r.start <= r.end, "region {r:?} ends before it starts");
        }
    }
    let mut i = Input::new(data);
    let (pa, max) = (i.u64(), usize::from(i.u16()));
    if let Ok(n) = pvh::cmdline_window(pa, max) {
        assert!(n <= max && pa + n as u64 <= 1 << 32);
    }
}

/// The device tree's `/chosen/bootargs` (uhyve).
pub fn bootargs(data: &[u8]) {
    if let Some(n) = kvm_bootargs::total_size(data) {
        let _ = n;
    }
    if let Ok(Some(s)) = kvm_bootargs::bootargs(data) {
        assert!(s.len() <= data.len());
    }
}

/// Physical memory for the MADT walk: the input, placed at address 0.
struct Mem<'a>(&'a [u8]);

impl madt::PhysMem for Mem<'_> {
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(paddr).ok()?;
        self.0.get(start..start.checked_add(len)?)
    }
}

/// ACPI: the RSDP → RSDT/XSDT → MADT walk and the MADT itself.
pub fn madt(data: &[u8]) {
    let mut out = [0u32; 16];
    if let Ok(c) = madt::parse_madt(data, &mut out) {
        assert!(c.count <= out.len());
    }
    let mut i = Input::new(data);
    let hint = u64::from(i.u16());
    if let Ok(c) = madt::cpus(&Mem(data), hint, &mut out) {
        assert!(c.count <= out.len());
    }
}

/// virtio-mmio devices on the kernel command line.
pub fn mmio_devices(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(d) = mmio_devices::parse(&text) {
        let _ = d;
    }
    let mut out = [mmio_devices::MmioDevice::default(); 4];
    let (rest, n) = mmio_devices::split(&text, &mut out);
    assert!(n <= out.len() && rest.len() <= text.len());
}

/// The kernel command line (libos options and the app's words).
pub fn cmdline(data: &[u8]) {
    let mut buf = [0u8; 512];
    let text = libos::cmdline::copy_text(data, &mut buf);
    assert!(text.len() <= 512);
    let _ = libos::cmdline::split_words(text);
    let _ = libos::cmdline::parse(text);
    let half = text.len() / 2;
    if text.is_char_boundary(half) {
        let _ = libos::cmdline::parse_with_defaults(&text[..half], &text[half..]);
    }
}

/// pvclock: scaling a TSC delta, and time from a (hostile) record.
pub fn pvclock(data: &[u8]) {
    let mut i = Input::new(data);
    let snap = libos::pvclock::PvclockSnapshot {
        tsc_timestamp: i.u64(),
        system_time_ns: i.u64(),
        tsc_to_system_mul: i.u32(),
        tsc_shift: i.u8() as i8,
    };
    let (a, b) = (i.u64(), i.u64());
    let (lo, hi) = (a.min(b), a.max(b));
    let (t0, t1) = (snap.ns_at(lo), snap.ns_at(hi));
    // Time never runs backwards between two readings of one record, as long as the
    // record is one a hypervisor writes: the delta fits the ABI's shift (the ABI, like
    // Linux, shifts a 64-bit delta) and the sum does not wrap. Anything else: no panic.
    let span = hi.wrapping_sub(snap.tsc_timestamp);
    let fits = span <= i64::MAX as u64
        && (snap.tsc_shift <= 0 || span.leading_zeros() > snap.tsc_shift as u32);
    let wrapped = t0 < snap.system_time_ns || t1 < snap.system_time_ns;
    if lo >= snap.tsc_timestamp && fits && !wrapped {
        assert!(t1 >= t0, "pvclock ran backwards: {t0} then {t1}");
    }
    let _ = libos::pvclock::scale_delta(i.u64(), i.u32(), i.u8() as i8);
}
