//! virtio-net's receive step (pure; host-tested and fuzzed): take the next used
//! buffer, hand its frame on, and post the buffer again at once, whatever the device
//! did with it, so receive never runs out of buffers.
#![forbid(unsafe_code)]

use crate::virtq::{Error, RingMemory, Virtq};

/// The virtio-net header in front of every frame (with `num_buffers`, virtio 1.x).
pub const HEADER: usize = crate::virtio_net_hdr::LEN;

/// What one step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rx {
    /// No buffer came back.
    Empty,
    /// A frame was delivered.
    Frame,
    /// A buffer came back shorter than the header: dropped (the buffer is posted again).
    Short,
}

/// Takes one used buffer from `q`, delivers its header and frame (the bytes after the
/// header) and posts the buffer again. A device error is returned after the buffer it named, if
/// any, was posted again; the caller notifies the device unless the result is
/// [`Rx::Empty`].
pub fn receive<M: RingMemory, B: AsRef<[u8]>>(
    q: &mut Virtq<M, B>,
    deliver: &mut dyn FnMut(&[u8; HEADER], &[u8]),
) -> Result<Rx, Error> {
    let (buf, result) = match q.pop_used() {
        Ok(None) => return Ok(Rx::Empty),
        Ok(Some(used)) => {
            let len = used.len as usize;
            let buf = used.token.as_ref();
            let r = match (buf.get(..HEADER), buf.get(HEADER..len)) {
                (Some(header), Some(frame)) => {
                    deliver(header.try_into().expect("HEADER bytes"), frame);
                    Ok(Rx::Frame)
                }
                _ => Ok(Rx::Short),
            };
            (Some(used.token), r)
        }
        // A buffer with a bad length comes back with the error: its contents are
        // untrusted, but the buffer is posted again.
        Err(e) => (e.token, Err(e.error)),
    };
    if let Some(buf) = buf {
        post(q, buf)?;
    }
    result
}

/// Posts `buf` (device-writable) on `q`.
pub fn post<M: RingMemory, B: AsRef<[u8]>>(q: &mut Virtq<M, B>, buf: B) -> Result<(), Error> {
    let (addr, len) = (buf.as_ref().as_ptr() as u64, buf.as_ref().len());
    q.push(addr, len, true, buf).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtq::Layout;
    use crate::virtq::mock::{Device, VecMemory};

    fn queue(size: u16) -> Virtq<VecMemory, Vec<u8>> {
        let mut q = Virtq::new(VecMemory(vec![0; Layout { size }.bytes()]), size).unwrap();
        while q.free() > 0 {
            post(&mut q, vec![0u8; 64]).unwrap();
        }
        q
    }

    #[test]
    fn every_buffer_is_posted_again_whatever_the_device_says() {
        let mut q = queue(4);
        let l = q.layout();
        let mut dev = Device::default();
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
            match receive(&mut q, &mut |_, f| {
                assert!(f.len() + HEADER <= 64);
                frames += 1;
            }) {
                Ok(Rx::Frame) => assert!(len as usize >= HEADER && len <= 64, "step {i}"),
                Ok(Rx::Short) => assert!((len as usize) < HEADER),
                Ok(Rx::Empty) => panic!("step {i}: a used buffer was not seen"),
                Err(e) => assert!(matches!(e, Error::UsedLengthTooLong { .. }), "{e}"),
            }
            assert_eq!(q.free(), 0, "step {i}: a buffer was lost");
        }
        assert!(frames > 0);
    }
}
