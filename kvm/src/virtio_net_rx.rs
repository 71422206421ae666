//! virtio-net's receive step (pure; host-tested and fuzzed): take the used buffers of
//! the next frame, hand the frame on, and post every buffer again at once, whatever
//! the device did with it, so receive never runs out of buffers.
//!
//! Without `VIRTIO_NET_F_MRG_RXBUF` a frame is one buffer: the 12-byte header, then
//! the frame. With it (the driver negotiates it together with `GUEST_TSO4`, whose
//! 64 KiB segments do not fit a 2 KiB buffer) the first buffer's header says in
//! `num_buffers` how many used buffers the frame fills, the header's own included;
//! the others hold frame bytes only. [`Receiver`] copies such a frame together
//! (buffer by buffer, each posted again as soon as its bytes are copied), and checks
//! what the device claims: `num_buffers` of 0 or more than the queue holds drops that
//! one buffer (nothing says where the frame ends); a frame growing past the largest
//! the driver takes has the rest of its buffers consumed and is dropped whole. A
//! device that lies about `num_buffers` can only make frames of garbage (which the
//! checksum and header checks after this drop), never an access outside a buffer, a
//! lost buffer, or a frame larger than the limit.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::virtq::{Error, RingMemory, Virtq};

/// The virtio-net header in front of every frame (with `num_buffers`, virtio 1.x).
pub const HEADER: usize = crate::virtio_net_hdr::LEN;

/// Where `num_buffers` lies in the header.
const NUM_BUFFERS: usize = 10;

/// Where a frame goes: its header, its bytes, and how many buffers it came in.
pub type Deliver<'a> = &'a mut dyn FnMut(&[u8; HEADER], &[u8], u16);

/// What one step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rx {
    /// No (further) buffer came back; a frame spanning several buffers may be half
    /// received (the next step goes on with it).
    Empty,
    /// A frame was delivered, from this many buffers.
    Frame { buffers: u16 },
    /// A frame was dropped (its buffers posted again).
    Dropped(RxDrop),
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// A first buffer came back shorter than the header.
    Short,
    /// `num_buffers` was 0, or more than the queue has buffers.
    BadNumBuffers(u16),
    /// The buffers together held more than the largest frame the driver takes.
    TooLong,
    /// A buffer of the frame came back with a device error (reported by the step that
    /// met it).
    DeviceError,
}

/// A frame being copied together from several buffers.
#[derive(Debug)]
struct Partial {
    header: [u8; HEADER],
    /// Buffers the header announced, and how many of them came so far.
    expected: u16,
    got: u16,
    /// Dropped already (too long, or a buffer with a device error): the rest of its
    /// buffers are consumed, nothing is delivered.
    dropped: Option<RxDrop>,
}

/// The receive side's state across steps (a frame half received).
#[derive(Debug)]
pub struct Receiver {
    mergeable: bool,
    max_frame: usize,
    partial: Option<Partial>,
    /// The frame being copied together (kept allocated between frames).
    frame: Vec<u8>,
}

impl Receiver {
    /// A receiver for frames of at most `max_frame` bytes (header not counted), which
    /// may span several buffers if `mergeable` (`VIRTIO_NET_F_MRG_RXBUF` negotiated).
    pub fn new(mergeable: bool, max_frame: usize) -> Self {
        Receiver {
            mergeable,
            max_frame,
            partial: None,
            frame: Vec::new(),
        }
    }

    /// Whether a frame is half received.
    pub fn in_frame(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes used buffers from `q` until one frame is complete (then delivers its header
    /// and bytes) or dropped, or no buffer is left; every buffer taken is posted again
    /// first. A device error is returned after the buffer it named, if any, was posted
    /// again (a frame it was part of is dropped). The caller notifies the device
    /// unless nothing was taken.
    pub fn receive<M: RingMemory, B: AsRef<[u8]>>(
        &mut self,
        q: &mut Virtq<M, B>,
        deliver: Deliver<'_>,
    ) -> Result<Rx, Error> {
        loop {
            let (buf, len) = match q.pop_used() {
                Ok(None) => return Ok(Rx::Empty),
                Ok(Some(used)) => (used.token, used.len as usize),
                // A buffer with a bad length comes back with the error: its contents
                // are untrusted, but the buffer is posted again, and counted as one of
                // its frame's (which is dropped).
                Err(e) => {
                    if let Some(p) = &mut self.partial {
                        p.got += 1;
                        p.dropped = Some(RxDrop::DeviceError);
                        if p.got >= p.expected {
                            self.partial = None;
                        }
                    }
                    if let Some(buf) = e.token {
                        post(q, buf)?;
                    }
                    return Err(e.error);
                }
            };
            let step = self.buffer(buf.as_ref(), len, q.layout().size, deliver);
            post(q, buf)?;
            if let Some(rx) = step {
                return Ok(rx);
            }
        }
    }

    /// One used buffer of a queue of `queue_size` (`len` bytes written into `buf`;
    /// more than it has count as all of it): the step's result if a frame ended here.
    pub fn buffer(
        &mut self,
        buf: &[u8],
        len: usize,
        queue_size: u16,
        deliver: Deliver<'_>,
    ) -> Option<Rx> {
        let bytes = buf.get(..len).unwrap_or(buf);
        let Some(p) = &mut self.partial else {
            let (Some(header), Some(data)) = (bytes.get(..HEADER), bytes.get(HEADER..)) else {
                return Some(Rx::Dropped(RxDrop::Short));
            };
            let header: [u8; HEADER] = header.try_into().expect("HEADER bytes");
            let n = if self.mergeable {
                u16::from_le_bytes([header[NUM_BUFFERS], header[NUM_BUFFERS + 1]])
            } else {
                1
            };
            if n == 0 || n > queue_size {
                return Some(Rx::Dropped(RxDrop::BadNumBuffers(n)));
            }
            if data.len() > self.max_frame {
                if n == 1 {
                    return Some(Rx::Dropped(RxDrop::TooLong));
                }
                self.frame.clear();
                self.partial = Some(Partial {
                    header,
                    expected: n,
                    got: 1,
                    dropped: Some(RxDrop::TooLong),
                });
                return None;
            }
            if n == 1 {
                // The common case: straight from the buffer, no copy.
                deliver(&header, data, 1);
                return Some(Rx::Frame { buffers: 1 });
            }
            self.frame.clear();
            self.frame.extend_from_slice(data);
            self.partial = Some(Partial {
                header,
                expected: n,
                got: 1,
                dropped: None,
            });
            return None;
        };
        p.got += 1;
        if p.dropped.is_none() {
            if self.frame.len() + bytes.len() > self.max_frame {
                p.dropped = Some(RxDrop::TooLong);
            } else {
                self.frame.extend_from_slice(bytes);
            }
        }
        if p.got < p.expected {
            return None;
        }
        let p = self.partial.take().expect("in a frame");
        let rx = match p.dropped {
            Some(why) => Rx::Dropped(why),
            None => {
                deliver(&p.header, &self.frame, p.expected);
                Rx::Frame {
                    buffers: p.expected,
                }
            }
        };
        self.frame.clear();
        Some(rx)
    }
}

/// Posts `buf` (device-writable) on `q`.
pub fn post<M: RingMemory, B: AsRef<[u8]>>(q: &mut Virtq<M, B>, buf: B) -> Result<(), Error> {
    let (addr, len) = (buf.as_ref().as_ptr() as u64, buf.as_ref().len());
    q.push(addr, len, true, buf).map(drop)
}

/// A device model's side (tests and fuzzing): writes `header` and `frame` into the
/// buffers `bufs` (their lengths) as QEMU does with mergeable buffers, each filled
/// before the next: the used length of each, and `num_buffers` patched into `header`.
/// `None` if the buffers are too few.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fill(header: &mut [u8; HEADER], frame: &[u8], bufs: &[u32]) -> Option<Vec<(usize, u32)>> {
    let mut left = HEADER + frame.len();
    let mut lens = Vec::new();
    for (i, &cap) in bufs.iter().enumerate() {
        if left == 0 {
            break;
        }
        let n = left.min(cap as usize);
        if i == 0 && n < HEADER {
            return None;
        }
        lens.push((i, n as u32));
        left -= n;
    }
    if left > 0 {
        return None;
    }
    header[NUM_BUFFERS..].copy_from_slice(&(lens.len() as u16).to_le_bytes());
    Some(lens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtq::Layout;
    use crate::virtq::mock::{Device, VecMemory};
    use proptest::prelude::*;

    type Q = Virtq<VecMemory, Vec<u8>>;

    fn queue(size: u16, buf: usize) -> Q {
        let mut q = Virtq::new(VecMemory(vec![0; Layout { size }.bytes()]), size).unwrap();
        while q.free() > 0 {
            post(&mut q, vec![0u8; buf]).unwrap();
        }
        q
    }

    #[test]
    fn every_buffer_is_posted_again_whatever_the_device_says() {
        let mut q = queue(4, 64);
        let l = q.layout();
        let mut dev = Device::default();
        let mut rx = Receiver::new(false, 1514);
        let mut frames = 0;
        for (i, len) in [60u32, 5, 65, 12, 1000, 64]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let (id, ..) = dev.take(&q.memory().clone(), l).expect("a posted buffer");
            let mut mem = q.memory().clone();
            dev.give(&mut mem, l, u32::from(id), len);
            *q.memory_mut() = mem;
            match rx.receive(&mut q, &mut |_, f, n| {
                assert!(f.len() + HEADER <= 64);
                assert_eq!(n, 1);
                frames += 1;
            }) {
                Ok(Rx::Frame { buffers: 1 }) => {
                    assert!(len as usize >= HEADER && len <= 64, "step {i}")
                }
                Ok(Rx::Dropped(RxDrop::Short)) => assert!((len as usize) < HEADER),
                Ok(other) => panic!("step {i}: {other:?}"),
                Err(e) => assert!(matches!(e, Error::UsedLengthTooLong { .. }), "{e}"),
            }
            assert_eq!(q.free(), 0, "step {i}: a buffer was lost");
        }
        assert!(frames > 0);
    }

    /// The buffers a device fills with `frame` (header first, `num_buffers` set), as
    /// (contents, used length) pairs, buffers of `cap` bytes.
    fn filled(frame: &[u8], cap: u32, flags: u8) -> Vec<(Vec<u8>, usize)> {
        let mut header = [0u8; HEADER];
        header[0] = flags;
        let caps = vec![cap; 1 + (HEADER + frame.len()) / cap as usize];
        let lens = fill(&mut header, frame, &caps).expect("enough buffers");
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(frame);
        let mut at = 0;
        lens.iter()
            .map(|&(_, n)| {
                let mut b = vec![0xa5u8; cap as usize];
                b[..n as usize].copy_from_slice(&bytes[at..at + n as usize]);
                at += n as usize;
                (b, n as usize)
            })
            .collect()
    }

    /// A delivered frame: its header's flags, its bytes, its buffers.
    type Delivered = (u8, Vec<u8>, u16);

    /// Feeds buffers to `rx`; what it delivered (header's flags, frame, buffers) and
    /// each step's result.
    fn feed(
        rx: &mut Receiver,
        bufs: &[(Vec<u8>, usize)],
        queue_size: u16,
    ) -> (Vec<Delivered>, Vec<Option<Rx>>) {
        let mut got = Vec::new();
        let steps = bufs
            .iter()
            .map(|(b, len)| {
                rx.buffer(b, *len, queue_size, &mut |h, f, n| {
                    got.push((h[0], f.to_vec(), n))
                })
            })
            .collect();
        (got, steps)
    }

    #[test]
    fn a_large_frame_spans_buffers_and_comes_out_whole() {
        let frame: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let bufs = filled(&frame, 2048, 1);
        assert_eq!(bufs.len(), 3);
        let mut rx = Receiver::new(true, 65549);
        let (got, steps) = feed(&mut rx, &bufs, 256);
        assert_eq!(steps, [None, None, Some(Rx::Frame { buffers: 3 })]);
        assert_eq!(got, [(1, frame, 3)]);
        assert!(!rx.in_frame());
    }

    #[test]
    fn hostile_num_buffers_and_lengths_are_dropped() {
        let mut rx = Receiver::new(true, 3000);
        let mut nothing = |_: &[u8; HEADER], _: &[u8], _: u16| panic!("delivered");
        let mut first = vec![0u8; 2048];
        // num_buffers 0, and more than the queue holds: that buffer alone is dropped.
        assert_eq!(
            rx.buffer(&first, 100, 256, &mut nothing),
            Some(Rx::Dropped(RxDrop::BadNumBuffers(0)))
        );
        first[NUM_BUFFERS] = 0x01;
        first[NUM_BUFFERS + 1] = 0x01;
        assert_eq!(
            rx.buffer(&first, 100, 256, &mut nothing),
            Some(Rx::Dropped(RxDrop::BadNumBuffers(257)))
        );
        assert!(!rx.in_frame());
        // Shorter than the header; a length beyond the buffer counts as all of it.
        assert_eq!(
            rx.buffer(&first, 11, 256, &mut nothing),
            Some(Rx::Dropped(RxDrop::Short))
        );
        // Two buffers of 2048 would make a frame beyond 3000 bytes: both are consumed,
        // the frame dropped, and the next frame comes out right.
        first[NUM_BUFFERS..HEADER].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(rx.buffer(&first, 1 << 20, 256, &mut nothing), None);
        assert_eq!(
            rx.buffer(&first, 2048, 256, &mut nothing),
            Some(Rx::Dropped(RxDrop::TooLong))
        );
        let frame = vec![7u8; 2500];
        let (got, _) = feed(&mut rx, &filled(&frame, 2048, 0), 256);
        assert_eq!(got, [(0, frame, 2)]);
        // Without MRG_RXBUF num_buffers means nothing: every frame is one buffer.
        let mut plain = Receiver::new(false, 3000);
        first[NUM_BUFFERS..HEADER].copy_from_slice(&9u16.to_le_bytes());
        assert_eq!(
            plain.buffer(&first, 1500, 256, &mut |_, f, n| assert_eq!(
                (f.len(), n),
                (1488, 1)
            )),
            Some(Rx::Frame { buffers: 1 })
        );
    }

    proptest! {
        /// An honest device's frames, cut into buffers of any size, come out exactly
        /// as they went in, each from the buffers it filled.
        #[test]
        fn honest_frames_come_out_whole(
            frames in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..9000), any::<u8>()), 1..8),
            cap in (HEADER as u32)..4096,
        ) {
            let mut rx = Receiver::new(true, 9000);
            for (frame, flags) in &frames {
                let bufs = filled(frame, cap, *flags);
                let (got, steps) = feed(&mut rx, &bufs, u16::MAX);
                let n = bufs.len() as u16;
                prop_assert_eq!(got, vec![(*flags, frame.clone(), n)]);
                prop_assert_eq!(steps.last().copied().flatten(), Some(Rx::Frame { buffers: n }));
                prop_assert!(!rx.in_frame());
            }
        }

        /// A hostile device (any bytes, any used length, any num_buffers): never a
        /// panic, no frame beyond the limit or from more buffers than the queue has,
        /// and once no frame is half received, an honest frame comes out right.
        #[test]
        fn hostile_buffers_never_break_the_receiver(
            bufs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..300), 0usize..400, any::<u16>()), 0..40),
            mergeable in any::<bool>(),
            max in 0usize..2000,
            queue_size in 1u16..64,
        ) {
            let mut rx = Receiver::new(mergeable, max);
            for (mut b, len, nb) in bufs {
                if b.len() >= HEADER && nb % 3 != 0 {
                    b[NUM_BUFFERS..HEADER].copy_from_slice(&(nb % 8).to_le_bytes());
                }
                let step = rx.buffer(&b, len, queue_size, &mut |_, f, n| {
                    assert!(f.len() <= max, "frame of {} beyond {max}", f.len());
                    assert!(n >= 1 && n <= queue_size && (mergeable || n == 1));
                });
                if let Some(Rx::Frame { buffers }) = step {
                    prop_assert!(buffers <= queue_size);
                }
            }
            if !rx.in_frame() {
                let frame = vec![3u8; max.min(100)];
                let (got, _) = feed(&mut rx, &filled(&frame, 64, 0), u16::MAX);
                let n = if mergeable { (HEADER + frame.len()).div_ceil(64) as u16 } else { 1 };
                if mergeable || HEADER + frame.len() <= 64 {
                    prop_assert_eq!(got, vec![(0, frame, n)]);
                }
            }
        }
    }
}
