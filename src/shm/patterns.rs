//! Checkable contents for stream and frame tests, the demo and the benchmark: both sides
//! compute the expected bytes, so a lost, duplicated, reordered or torn byte is caught.

/// The byte at stream offset `i`: a 300-byte cycle, which no power-of-two ring size divides,
/// so wrap points fall at a different place in the cycle on every lap.
pub fn pattern(i: u64) -> u8 {
    (i % 300) as u8 ^ 0x5A
}

/// Pixels per tile: frames repeat a 4 KiB tile that depends on the frame id, so filling
/// and checking a frame are page-sized copies and compares (fast even in debug builds).
pub const TILE_PIXELS: usize = 1024;

/// Pixel `i` (a little-endian u32) of frame `id`: depends on both the id and the position
/// in the tile, so a torn frame (bytes from two frames) fails the check wherever the frames
/// meet.
pub fn pixel(id: u64, i: usize) -> u32 {
    let i = i % TILE_PIXELS;
    (id as u32).wrapping_mul(0x9E37_79B1) ^ (i as u32).wrapping_mul(0x85EB_CA77)
}

fn tile(id: u64) -> Vec<u8> {
    (0..TILE_PIXELS)
        .flat_map(|i| pixel(id, i).to_le_bytes())
        .collect()
}

/// Fills an RGBA8 frame with frame `id`'s pixels.
pub fn fill_frame(id: u64, buf: &mut [u8]) {
    let t = tile(id);
    for chunk in buf.chunks_mut(t.len()) {
        chunk.copy_from_slice(&t[..chunk.len()]);
    }
}

/// Checks a whole RGBA8 frame against frame `id`'s pixels; returns the first bad pixel.
pub fn check_frame(id: u64, bytes: &[u8]) -> Result<(), usize> {
    let t = tile(id);
    for (k, chunk) in bytes.chunks(t.len()).enumerate() {
        if chunk != &t[..chunk.len()] {
            let at = chunk.iter().zip(&t).position(|(a, b)| a != b).unwrap_or(0);
            return Err(k * TILE_PIXELS + at / 4);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_checks_and_a_torn_one_does_not() {
        let mut a = vec![0u8; 64 * 1024];
        fill_frame(7, &mut a);
        assert_eq!(check_frame(7, &a), Ok(()));
        assert!(check_frame(8, &a).is_err());
        let mut b = vec![0u8; 64 * 1024];
        fill_frame(8, &mut b);
        a[40_000..].copy_from_slice(&b[40_000..]);
        assert_eq!(
            check_frame(7, &a),
            Err(10_000),
            "torn at byte 40 000 = pixel 10 000"
        );
    }
}
