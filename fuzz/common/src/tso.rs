//! The transmit coalescer (`libos::net::tso`) against hostile frame trains: frames cut
//! from the input by a length byte, pushed as a driver does (take and send the batch
//! when a frame cannot join, then offer it again). Every batch stays within the
//! limit, its IP header checksums, it is one segment of the flow it claims; checksum
//! completion never reaches outside the frame.

use alloc::vec::Vec;

use libos::net::tso::{self, Batch, Coalescer};

use crate::input::Input;

fn check(b: &Batch, limit: usize) {
    assert!(b.frame.len() <= limit, "batch over the limit");
    assert!(b.segments >= 1 && b.gso_size > 0);
    let ip = &b.frame[14..34];
    assert_eq!(
        tso::fold(tso::sum(ip, 0)),
        0xffff,
        "batch IP header checksum"
    );
    assert_eq!(
        14 + usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        b.frame.len(),
        "batch IP length"
    );
}

/// Runs one input.
pub fn tso(data: &[u8]) {
    let mut i = Input::new(data);
    let limit = 60 + usize::from(i.u16());
    let mut c = Coalescer::new(limit);
    let limit = limit.min(14 + tso::MAX_IP_PACKET);
    // A template segment the input mutates, so trains of one flow are common.
    let mut template: Vec<u8> = Vec::new();
    while !i.is_empty() {
        let mut frame = if i.u8().is_multiple_of(2) && template.len() >= 54 {
            let mut f = template.clone();
            let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
            let payload = f.len() - 54;
            f[38..42].copy_from_slice(&seq.wrapping_add(payload as u32).to_be_bytes());
            if i.u8().is_multiple_of(8) {
                let at = usize::from(i.u8()) % f.len();
                f[at] ^= i.u8();
            }
            f
        } else {
            let len = usize::from(i.u16()) % 1600;
            i.bytes(len).to_vec()
        };
        if frame.len() >= 54 {
            template = frame.clone();
        }
        if !c.push(&frame) {
            if let Some(b) = c.take() {
                check(&b, limit);
            }
            let _ = c.push(&frame);
        }
        let len = frame.len();
        if let Some((field, _)) = tso::partial_checksum(&frame) {
            assert!(field + 2 <= len);
        }
        tso::complete_checksum(&mut frame);
        assert_eq!(frame.len(), len);
    }
    if let Some(b) = c.take() {
        check(&b, limit);
    }
}
