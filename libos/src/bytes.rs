//! Little-endian field reads for the pure parsers of hypervisor-supplied structures.
#![forbid(unsafe_code)]

/// The u32 at byte `offset` (the caller checked the length).
///
/// # Panics
/// If `b` is shorter than `offset + 4`.
pub fn le_u32(b: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(b[offset..offset + 4].try_into().expect("4 bytes"))
}

/// The u64 at byte `offset` (the caller checked the length).
///
/// # Panics
/// If `b` is shorter than `offset + 8`.
pub fn le_u64(b: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(b[offset..offset + 8].try_into().expect("8 bytes"))
}
