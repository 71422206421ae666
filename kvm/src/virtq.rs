//! The split virtqueue of virtio 1.x, driver side (pure; host-tested).
//!
//! One queue is three areas in memory shared with the device: the descriptor table, the
//! driver's avail ring and the device's used ring. This module owns the bookkeeping —
//! free descriptors, avail/used index arithmetic (free-running 16-bit counters), which
//! buffer each descriptor carries — and validates everything the device writes: a used
//! element naming a descriptor that is not in flight, a length beyond what was posted,
//! or a used index running ahead by more than the queue size is an [`Error`], never an
//! out-of-bounds access. The memory itself is behind [`RingMemory`], so the unit tests
//! play the device on a plain byte vector and the driver uses volatile DMA memory.
//!
//! Every buffer is one descriptor (virtio-net 1.x puts its header in the same buffer),
//! so chains are not needed.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{Ordering, fence};

/// Largest queue size the virtio spec allows for split rings.
pub const MAX_SIZE: u16 = 32768;

/// Descriptor flag: the device writes this buffer (otherwise it reads it).
const DESC_F_WRITE: u16 = 2;
/// Bytes per descriptor: addr u64, len u32, flags u16, next u16.
const DESC_BYTES: usize = 16;
/// Bytes per used element: id u32, len u32.
const USED_ELEM_BYTES: usize = 8;

/// Byte offsets of the three areas inside one queue's memory, as the device is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Entries in the queue (a power of two).
    pub size: u16,
}

impl Layout {
    /// The descriptor table (16-byte aligned when the memory is).
    pub const fn desc(&self) -> usize {
        0
    }
    /// The avail ring: flags u16, idx u16, ring[size] u16, used_event u16.
    pub const fn avail(&self) -> usize {
        DESC_BYTES * self.size as usize
    }
    /// The used ring, 4-byte aligned: flags u16, idx u16, ring[size] {u32, u32}, avail_event u16.
    pub const fn used(&self) -> usize {
        (self.avail() + 6 + 2 * self.size as usize).next_multiple_of(4)
    }
    /// Total bytes the queue's memory must have.
    pub const fn bytes(&self) -> usize {
        self.used() + 6 + USED_ELEM_BYTES * self.size as usize
    }
}

/// The memory shared with the device. Offsets are relative to the queue's base;
/// implementations access it as the device may write concurrently (volatile).
pub trait RingMemory {
    /// Reads a little-endian u16 at `offset`.
    fn read_u16(&self, offset: usize) -> u16;
    /// Reads a little-endian u32 at `offset`.
    fn read_u32(&self, offset: usize) -> u32;
    /// Writes a little-endian u16 at `offset`.
    fn write_u16(&mut self, offset: usize, value: u16);
    /// Writes a little-endian u32 at `offset`.
    fn write_u32(&mut self, offset: usize, value: u32);
    /// Writes a little-endian u64 at `offset`.
    fn write_u64(&mut self, offset: usize, value: u64);
    /// Bytes available (at least [`Layout::bytes`]).
    fn size(&self) -> usize;
}

/// What the device did wrong, or why a buffer cannot be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Queue size is not a power of two in 1..=32768, or the memory is too small.
    BadSize(u16),
    /// No free descriptor.
    Full,
    /// The buffer is longer than a descriptor can describe.
    TooLong(usize),
    /// A used element names a descriptor outside the table.
    UsedIdOutOfRange(u32),
    /// A used element names a descriptor the driver has not made available.
    UsedIdNotInFlight(u32),
    /// A used element claims more bytes than the buffer has.
    UsedLengthTooLong {
        /// The descriptor.
        id: u32,
        /// The length the device claimed.
        len: u32,
        /// The buffer's length.
        max: u32,
    },
    /// The used index moved ahead by more than there are buffers in flight; the queue
    /// is unusable from now on.
    UsedIndexJump {
        /// Where the driver was.
        last: u16,
        /// What the device wrote.
        now: u16,
    },
    /// An earlier [`Error::UsedIndexJump`] broke the queue.
    Broken,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadSize(n) => write!(f, "bad queue size {n} (or memory too small)"),
            Error::Full => write!(f, "no free descriptor"),
            Error::TooLong(n) => write!(f, "buffer of {n} bytes is too long for a descriptor"),
            Error::UsedIdOutOfRange(id) => {
                write!(f, "device returned descriptor {id}, outside the table")
            }
            Error::UsedIdNotInFlight(id) => write!(
                f,
                "device returned descriptor {id}, which was not in flight"
            ),
            Error::UsedLengthTooLong { id, len, max } => {
                write!(
                    f,
                    "device wrote {len} bytes into descriptor {id} of {max} bytes"
                )
            }
            Error::UsedIndexJump { last, now } => {
                write!(
                    f,
                    "device moved the used index from {last} to {now}, past the buffers in flight"
                )
            }
            Error::Broken => write!(f, "queue unusable after a device error"),
        }
    }
}

/// A used element the device got wrong: what, and the buffer when the element named one
/// in flight (the driver takes it back, e.g. to post it again, so no buffer is lost).
#[derive(Debug, PartialEq, Eq)]
pub struct UsedError<T> {
    /// What the device did wrong.
    pub error: Error,
    /// The buffer the element named, now back with the driver.
    pub token: Option<T>,
}

impl<T> From<Error> for UsedError<T> {
    fn from(error: Error) -> Self {
        UsedError { error, token: None }
    }
}

impl<T> fmt::Display for UsedError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// A buffer the device handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Used<T> {
    /// The token given to [`Virtq::push`].
    pub token: T,
    /// Bytes the device wrote (≤ the buffer's length).
    pub len: u32,
}

struct InFlight<T> {
    token: T,
    len: u32,
}

/// One split virtqueue. `T` is what the driver wants back with each buffer (for
/// example the owning allocation, which must not move or be freed while in flight).
pub struct Virtq<M, T> {
    mem: M,
    layout: Layout,
    /// Descriptor ids not in flight (a stack).
    free: Vec<u16>,
    /// Per descriptor: the buffer in flight, if any.
    in_flight: Vec<Option<InFlight<T>>>,
    /// Next avail index to publish (free-running).
    next_avail: u16,
    /// Used index up to which the driver has consumed (free-running).
    last_used: u16,
    /// Avail index the device was last notified of (or found it needed no notice).
    kicked: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` is in use: `used_event` and `avail_event` steer
    /// interrupts and notifications.
    event_idx: bool,
    broken: bool,
}

/// `vring_need_event`: whether moving an index from `old` to `new` passes `event`
/// (the other side asked to hear once the index goes past `event`).
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

impl<M, T> fmt::Debug for Virtq<M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Virtq")
            .field("size", &self.layout.size)
            .field("free", &self.free.len())
            .field("next_avail", &self.next_avail)
            .field("last_used", &self.last_used)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<M: RingMemory, T> Virtq<M, T> {
    /// A queue of `size` entries over `mem`, which is zeroed (an empty ring).
    pub fn new(mut mem: M, size: u16) -> Result<Self, Error> {
        let layout = Layout { size };
        if !size.is_power_of_two() || size > MAX_SIZE || mem.size() < layout.bytes() {
            return Err(Error::BadSize(size));
        }
        for off in (0..layout.bytes()).step_by(2) {
            mem.write_u16(off, 0);
        }
        Ok(Virtq {
            mem,
            layout,
            free: (0..size).rev().collect(),
            in_flight: (0..size).map(|_| None).collect(),
            next_avail: 0,
            last_used: 0,
            kicked: 0,
            event_idx: false,
            broken: false,
        })
    }

    /// Where the areas lie in the queue's memory.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Descriptors free for [`Virtq::push`].
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Buffers the device holds.
    pub fn in_flight(&self) -> usize {
        self.layout.size as usize - self.free.len()
    }

    /// Makes the buffer at `addr` (`len` bytes, written by the device if `device_writes`)
    /// available; `token` comes back with it from [`Virtq::pop_used`]. The caller then
    /// notifies the device.
    pub fn push(
        &mut self,
        addr: u64,
        len: usize,
        device_writes: bool,
        token: T,
    ) -> Result<u16, Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        let len32 = u32::try_from(len).map_err(|_| Error::TooLong(len))?;
        let id = self.free.pop().ok_or(Error::Full)?;
        let d = self.layout.desc() + DESC_BYTES * id as usize;
        self.mem.write_u64(d, addr);
        self.mem.write_u32(d + 8, len32);
        self.mem
            .write_u16(d + 12, if device_writes { DESC_F_WRITE } else { 0 });
        self.mem.write_u16(d + 14, 0);
        self.in_flight[id as usize] = Some(InFlight { token, len: len32 });
        let slot = self.next_avail % self.layout.size;
        self.mem
            .write_u16(self.layout.avail() + 4 + 2 * slot as usize, id);
        self.next_avail = self.next_avail.wrapping_add(1);
        // The descriptor and ring entry must be visible before the index that publishes them.
        fence(Ordering::Release);
        self.mem.write_u16(self.layout.avail() + 2, self.next_avail);
        Ok(id)
    }

    /// Takes the next buffer the device returned, if any. A bad used element is
    /// consumed and reported; if it named a buffer in flight but claimed too many bytes,
    /// the buffer comes back with the error (its contents untrusted). A used index that
    /// runs ahead breaks the queue.
    pub fn pop_used(&mut self) -> Result<Option<Used<T>>, UsedError<T>> {
        if self.broken {
            return Err(Error::Broken.into());
        }
        let now = self.mem.read_u16(self.layout.used() + 2);
        // Read the element only after the index that published it.
        fence(Ordering::Acquire);
        if now == self.last_used {
            return Ok(None);
        }
        if now.wrapping_sub(self.last_used) as usize > self.in_flight() {
            self.broken = true;
            return Err(Error::UsedIndexJump {
                last: self.last_used,
                now,
            }
            .into());
        }
        let slot = self.last_used % self.layout.size;
        let e = self.layout.used() + 4 + USED_ELEM_BYTES * slot as usize;
        let (id, len) = (self.mem.read_u32(e), self.mem.read_u32(e + 4));
        self.last_used = self.last_used.wrapping_add(1);
        let entry = self
            .in_flight
            .get_mut(id as usize)
            .ok_or(Error::UsedIdOutOfRange(id))?;
        let InFlight { token, len: posted } = entry.take().ok_or(Error::UsedIdNotInFlight(id))?;
        self.free.push(id as u16);
        if len > posted {
            return Err(UsedError {
                error: Error::UsedLengthTooLong {
                    id,
                    len,
                    max: posted,
                },
                token: Some(token),
            });
        }
        Ok(Some(Used { token, len }))
    }

    /// Whether the device asked not to be notified (`VIRTQ_USED_F_NO_NOTIFY`).
    pub fn notify_suppressed(&self) -> bool {
        self.mem.read_u16(self.layout.used()) & 1 != 0
    }

    /// Uses `VIRTIO_RING_F_EVENT_IDX` (negotiated with the device) from now on.
    pub fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    /// Whether the buffers made available since the last call need a notification
    /// (the caller then notifies): any at all, and the device did not ask to be left
    /// alone — with event index, its `avail_event` lies among them. Batching pushes and
    /// asking once per batch is what saves the notifications (each one an exit).
    pub fn kick_needed(&mut self) -> bool {
        let (old, new) = (self.kicked, self.next_avail);
        if old == new {
            return false;
        }
        self.kicked = new;
        // The published avail index must be visible before we read what the device
        // wants (it reads our index after writing its own).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let at = self.layout.used() + 4 + USED_ELEM_BYTES * self.layout.size as usize;
            need_event(self.mem.read_u16(at), new, old)
        } else {
            !self.notify_suppressed()
        }
    }

    /// With event index: asks for an interrupt once the device has returned `n` more
    /// buffers (1: the next one; 0: none until this is called again, as long as the
    /// device returns fewer than 65536). The caller must look for used buffers once
    /// more afterwards: one returned before the device saw this raises no interrupt.
    /// Without event index the device interrupts for every buffer anyway.
    pub fn interrupt_after(&mut self, n: u16) {
        if !self.event_idx {
            return;
        }
        let at = self.layout.avail() + 4 + 2 * self.layout.size as usize;
        self.mem
            .write_u16(at, self.last_used.wrapping_add(n).wrapping_sub(1));
        fence(Ordering::SeqCst);
    }

    /// Whether the device returned buffers not yet taken by [`Virtq::pop_used`].
    pub fn has_used(&self) -> bool {
        self.mem.read_u16(self.layout.used() + 2) != self.last_used
    }

    /// The queue's memory (for its base address).
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The queue's memory, for a device model to write (tests and fuzzing only).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }
}

/// Ring memory in an ordinary byte vector: the device side of the unit tests and the
/// fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
pub mod mock {
    use super::*;

    /// Plain memory.
    #[derive(Debug, Clone)]
    pub struct VecMemory(pub Vec<u8>);

    impl RingMemory for VecMemory {
        fn read_u16(&self, o: usize) -> u16 {
            u16::from_le_bytes(self.0[o..o + 2].try_into().unwrap())
        }
        fn read_u32(&self, o: usize) -> u32 {
            u32::from_le_bytes(self.0[o..o + 4].try_into().unwrap())
        }
        fn write_u16(&mut self, o: usize, v: u16) {
            self.0[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
        fn write_u32(&mut self, o: usize, v: u32) {
            self.0[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn write_u64(&mut self, o: usize, v: u64) {
            self.0[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn size(&self) -> usize {
            self.0.len()
        }
    }

    /// The device's view: consumes the avail ring, writes the used ring.
    #[derive(Debug, Default)]
    pub struct Device {
        /// Avail index consumed so far.
        pub last_avail: u16,
        /// Used index published so far.
        pub used_idx: u16,
    }

    impl Device {
        /// Takes the next available descriptor: (id, addr, len, device-writable).
        pub fn take(&mut self, mem: &VecMemory, l: Layout) -> Option<(u16, u64, u32, bool)> {
            if mem.read_u16(l.avail() + 2) == self.last_avail {
                return None;
            }
            let id = mem.read_u16(l.avail() + 4 + 2 * (self.last_avail % l.size) as usize);
            self.last_avail = self.last_avail.wrapping_add(1);
            let d = DESC_BYTES * id as usize;
            let addr = u64::from_le_bytes(mem.0[d..d + 8].try_into().unwrap());
            Some((
                id,
                addr,
                mem.read_u32(d + 8),
                mem.read_u16(d + 12) & DESC_F_WRITE != 0,
            ))
        }

        /// Returns descriptor `id` with `len` bytes written.
        pub fn give(&mut self, mem: &mut VecMemory, l: Layout, id: u32, len: u32) {
            let e = l.used() + 4 + USED_ELEM_BYTES * (self.used_idx % l.size) as usize;
            mem.write_u32(e, id);
            mem.write_u32(e + 4, len);
            self.used_idx = self.used_idx.wrapping_add(1);
            mem.write_u16(l.used() + 2, self.used_idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mock::{Device, VecMemory};
    use super::*;
    use proptest::prelude::*;

    fn queue(size: u16) -> Virtq<VecMemory, u32> {
        let bytes = Layout { size }.bytes();
        Virtq::new(VecMemory(vec![0xaa; bytes]), size).unwrap()
    }

    /// The device's memory is the queue's; tests reach it through this.
    fn mem(q: &mut Virtq<VecMemory, u32>) -> &mut VecMemory {
        &mut q.mem
    }

    #[test]
    fn kicks_are_batched_and_follow_avail_event() {
        let mut q = queue(8);
        let l = q.layout();
        assert!(!q.kick_needed(), "nothing pushed, nothing to say");
        q.push(0x1000, 64, false, 1).unwrap();
        q.push(0x2000, 64, false, 2).unwrap();
        assert!(q.kick_needed(), "two buffers, one notification");
        assert!(!q.kick_needed());
        // Without event index the NO_NOTIFY flag rules.
        mem(&mut q).write_u16(l.used(), 1);
        q.push(0x3000, 64, false, 3).unwrap();
        assert!(!q.kick_needed());
        // With it, avail_event: the device wants to hear once index 5 is published.
        q.set_event_idx(true);
        mem(&mut q).write_u16(l.used() + 4 + 8 * 8, 4);
        q.push(0x4000, 64, false, 4).unwrap(); // avail idx 3 -> 4: not past 4
        assert!(!q.kick_needed());
        q.push(0x5000, 64, false, 5).unwrap(); // 4 -> 5: passes 4
        assert!(q.kick_needed());
    }

    #[test]
    fn used_event_asks_for_the_nth_buffer() {
        let mut q = queue(8);
        q.set_event_idx(true);
        let l = q.layout();
        let mut d = Device::default();
        for t in 0..4 {
            q.push(0x1000, 64, true, t).unwrap();
        }
        q.interrupt_after(3);
        let used_event = mem(&mut q).read_u16(l.avail() + 4 + 2 * 8);
        // The device interrupts when its used index passes used_event.
        let mut interrupts = 0;
        for _ in 0..4 {
            let (id, ..) = d.take(mem(&mut q), l).unwrap();
            let old = d.used_idx;
            d.give(mem(&mut q), l, u32::from(id), 1);
            interrupts += u32::from(need_event(used_event, d.used_idx, old));
        }
        assert_eq!(interrupts, 1, "one interrupt, at the third buffer");
        assert!(q.has_used());
        while q.pop_used().unwrap().is_some() {}
        assert!(!q.has_used());
    }

    #[test]
    fn layout_matches_the_spec_formulas() {
        let l = Layout { size: 256 };
        assert_eq!(l.avail(), 4096);
        assert_eq!(l.used(), 4096 + 6 + 512 + 2); // rounded up to 4
        assert_eq!(l.used() % 4, 0);
        assert_eq!(l.bytes(), l.used() + 6 + 8 * 256);
    }

    #[test]
    fn rejects_bad_sizes_and_small_memory() {
        for size in [0, 3, 100] {
            assert_eq!(
                Virtq::<_, u32>::new(VecMemory(vec![0; 1 << 20]), size).unwrap_err(),
                Error::BadSize(size)
            );
        }
        assert!(Virtq::<_, u32>::new(VecMemory(vec![0; 10]), 8).is_err());
    }

    #[test]
    fn round_trip_and_full() {
        let mut q = queue(4);
        let mut dev = Device::default();
        let l = q.layout();
        for i in 0..4 {
            q.push(0x1000 * (i + 1), 100, true, i as u32).unwrap();
        }
        assert_eq!(q.push(0, 1, true, 9), Err(Error::Full));
        let (id, addr, len, w) = dev.take(mem(&mut q), l).unwrap();
        assert_eq!((addr, len, w), (0x1000, 100, true));
        assert_eq!(q.pop_used(), Ok(None));
        dev.give(mem(&mut q), l, u32::from(id), 60);
        assert_eq!(q.pop_used(), Ok(Some(Used { token: 0, len: 60 })));
        assert_eq!(q.free(), 1);
    }

    #[test]
    fn device_errors_are_reported_not_trusted() {
        let mut q = queue(8);
        let mut dev = Device::default();
        let l = q.layout();
        q.push(0x1000, 64, true, 1).unwrap();
        q.push(0x2000, 64, true, 2).unwrap();
        dev.give(mem(&mut q), l, 1000, 1);
        assert_eq!(q.pop_used(), Err(Error::UsedIdOutOfRange(1000).into()));
        dev.give(mem(&mut q), l, 5, 1); // a valid slot, but never posted
        assert_eq!(q.pop_used(), Err(Error::UsedIdNotInFlight(5).into()));
        let (id, ..) = dev.take(mem(&mut q), l).unwrap();
        dev.give(mem(&mut q), l, u32::from(id), 65);
        assert_eq!(
            q.pop_used(),
            Err(UsedError {
                error: Error::UsedLengthTooLong {
                    id: u32::from(id),
                    len: 65,
                    max: 64
                },
                token: Some(1),
            })
        );
        // The index runs ahead of what is in flight: the queue breaks, for good.
        let used_idx = l.used() + 2;
        mem(&mut q).write_u16(used_idx, 100);
        assert!(matches!(
            q.pop_used(),
            Err(UsedError {
                error: Error::UsedIndexJump { .. },
                ..
            })
        ));
        assert_eq!(q.pop_used(), Err(Error::Broken.into()));
        assert_eq!(q.push(0, 1, false, 0), Err(Error::Broken));
    }

    /// A used element claiming more bytes than its buffer has is reported, but the
    /// buffer comes back to the driver: a device doing it for every buffer cannot
    /// leave the queue without any (receive dead for good).
    #[test]
    fn too_long_used_lengths_do_not_lose_buffers() {
        let mut q = queue(8);
        let mut dev = Device::default();
        let l = q.layout();
        for round in 0..3u32 {
            while q.push(0x1000, 64, true, round).is_ok() {}
            let mut errors = 0;
            while let Some((id, ..)) = dev.take(mem(&mut q), l) {
                dev.give(mem(&mut q), l, u32::from(id), 65 + round);
                if q.pop_used().is_err() {
                    errors += 1;
                }
            }
            assert_eq!(errors, 8, "every bad element is reported");
            assert_eq!(q.free(), 8, "round {round}: every buffer came back");
        }
    }

    proptest! {
        /// need_event matches its definition: the event index lies in [old, new).
        #[test]
        fn need_event_is_passing_the_index(event in any::<u16>(), old in any::<u16>(), step in 0u16..1000) {
            let new = old.wrapping_add(step);
            let passed = (0..step).any(|i| old.wrapping_add(i) == event);
            prop_assert_eq!(need_event(event, new, old), passed);
        }

        /// A driver that re-arms with interrupt_after(1) and looks again never sleeps
        /// with a buffer waiting: after any interleaving of device returns and driver
        /// polls, either the driver saw every buffer or an interrupt is due.
        #[test]
        fn no_lost_interrupt(ops in proptest::collection::vec(any::<bool>(), 1..200)) {
            let mut q = queue(16);
            q.set_event_idx(true);
            let l = q.layout();
            let mut d = Device::default();
            let mut pending_irq = false;
            for t in 0..16 { q.push(0x1000, 64, true, t).unwrap(); }
            for device_turn in ops {
                if device_turn {
                    if let Some((id, ..)) = d.take(mem(&mut q), l) {
                        let old = d.used_idx;
                        d.give(mem(&mut q), l, u32::from(id), 1);
                        let ev = mem(&mut q).read_u16(l.avail() + 4 + 2 * 16);
                        pending_irq |= need_event(ev, d.used_idx, old);
                    }
                } else {
                    // The driver's poll: drain, re-arm, look again, re-post.
                    pending_irq = false;
                    loop {
                        while let Some(u) = q.pop_used().unwrap() {
                            q.push(0x1000, 64, true, u.token).unwrap();
                        }
                        q.interrupt_after(1);
                        if !q.has_used() { break; }
                    }
                }
                // The driver sleeps now: a buffer waiting must have an interrupt due.
                prop_assert!(!q.has_used() || pending_irq, "a returned buffer and no interrupt due");
            }
        }

        /// Any interleaving of posts and in-order or out-of-order completions by an
        /// honest device: every token comes back exactly once with its length, indices
        /// wrap correctly, and the free count is consistent.
        #[test]
        fn honest_device_returns_every_token_once(
            size_log in 0u32..5,
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), 0u32..200), 1..400),
        ) {
            let size = 1u16 << size_log;
            let mut q = queue(size);
            let l = q.layout();
            let mut dev = Device::default();
            let mut held: Vec<(u16, u32)> = Vec::new();
            let mut outstanding = std::collections::BTreeMap::new();
            let mut next_token = 0u32;
            for (post, pick, len) in ops {
                if post {
                    match q.push(u64::from(next_token) * 4096, 200, true, next_token) {
                        Ok(_) => { outstanding.insert(next_token, ()); next_token += 1; }
                        Err(e) => prop_assert_eq!(e, Error::Full),
                    }
                    while let Some((id, _, blen, _)) = dev.take(mem(&mut q), l) {
                        held.push((id, blen));
                    }
                } else if !held.is_empty() {
                    let (id, blen) = held.remove(pick as usize % held.len());
                    let len = len.min(blen);
                    dev.give(mem(&mut q), l, u32::from(id), len);
                    let used = q.pop_used().unwrap().unwrap();
                    prop_assert_eq!(used.len, len);
                    prop_assert!(outstanding.remove(&used.token).is_some());
                }
                prop_assert_eq!(q.free() + outstanding.len(), size as usize);
            }
        }

        /// Whatever a hostile device writes into the used ring, the driver never
        /// panics, never hands out a token twice, and never frees a descriptor that was
        /// not in flight.
        #[test]
        fn hostile_device_cannot_corrupt(
            writes in proptest::collection::vec((any::<u32>(), any::<u32>(), 0u16..6), 1..100),
        ) {
            let mut q = queue(8);
            let l = q.layout();
            for t in 0..6 {
                q.push(0x1000 * u64::from(t), 64, true, t).unwrap();
            }
            let mut seen = std::collections::BTreeSet::new();
            let mut used_idx = 0u16;
            for (id, len, step) in writes {
                let e = l.used() + 4 + 8 * (used_idx % 8) as usize;
                mem(&mut q).write_u32(e, id % 16);
                mem(&mut q).write_u32(e + 4, len % 128);
                used_idx = used_idx.wrapping_add(step);
                mem(&mut q).write_u16(l.used() + 2, used_idx);
                loop {
                    match q.pop_used() {
                        Ok(Some(u)) => {
                            prop_assert!(u.len <= 64);
                            prop_assert!(seen.insert(u.token), "token returned twice");
                        }
                        Ok(None) => break,
                        Err(e) => {
                            if let Some(t) = e.token {
                                prop_assert!(
                                    matches!(e.error, Error::UsedLengthTooLong { .. }),
                                    "a buffer comes back with a length error only"
                                );
                                prop_assert!(seen.insert(t), "token returned twice");
                            }
                            if matches!(e.error, Error::Broken | Error::UsedIndexJump { .. }) {
                                break;
                            }
                        }
                    }
                }
                prop_assert!(q.free() <= 8);
                prop_assert_eq!(q.free(), 2 + seen.len());
            }
        }
    }
}
