//! Checkable contents for stream and frame tests, the demo and the benchmark: both sides
//! compute the expected bytes, so a lost, duplicated, reordered or torn byte is caught.

/// The byte at stream offset `i`: a 300-byte cycle, which no power-of-two ring size divides,
/// so wrap points fall at a different place in the cycle on every lap.
pub fn pattern(i: u64) -> u8 {
    (i % 300) as u8 ^ 0x5A
}

/// Pixel `i` (a little-endian u32) of frame `id`: every pixel depends on both, so a torn
/// frame (rows from two frames) fails the check anywhere.
pub fn pixel(id: u64, i: usize) -> u32 {
    (id as u32).wrapping_mul(0x9E37_79B1) ^ (i as u32).wrapping_mul(0x85EB_CA77)
}

/// Checks a whole RGBA8 frame against [`pixel`]; returns the first bad pixel index.
pub fn check_frame(id: u64, bytes: &[u8]) -> Result<(), usize> {
    for (i, px) in bytes.chunks_exact(4).enumerate() {
        if u32::from_le_bytes([px[0], px[1], px[2], px[3]]) != pixel(id, i) {
            return Err(i);
        }
    }
    Ok(())
}
