//! The canonical-encoding check without an allocation: re-encode a decoded message into a
//! postcard flavor that compares each byte with the payload it came from.

use postcard::ser_flavors::Flavor;
use serde::Serialize;

/// A postcard output that fails at the first byte differing from `expected`.
struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl Flavor for Compare<'_> {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.pos + data.len();
        if self.expected.get(self.pos..end) != Some(data) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.pos = end;
        Ok(())
    }

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.pos)
    }
}

/// True when `m` encodes to exactly `payload` (same bytes, same length).
pub(crate) fn matches<T: Serialize>(m: &T, payload: &[u8]) -> bool {
    let cmp = Compare {
        expected: payload,
        pos: 0,
    };
    matches!(postcard::serialize_with_flavor(m, cmp), Ok(n) if n == payload.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_match_and_any_difference_does_not() {
        let v: (u32, String) = (300, "hi".into());
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert!(matches(&v, &bytes));
        assert!(!matches(&v, &bytes[..bytes.len() - 1]), "short");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!matches(&v, &longer), "trailing");
        // 300 as an over-long varint: AC 82 00 instead of AC 02.
        let mut overlong = vec![0xAC, 0x82, 0x00];
        overlong.extend_from_slice(&bytes[2..]);
        assert!(!matches(&v, &overlong));
    }
}
