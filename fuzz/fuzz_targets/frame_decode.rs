//! Fuzz the frame decoder: it must never panic, and whatever it accepts must re-encode to
//! exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::wire::{self, HARD_MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = wire::decode(rest, HARD_MAX_FRAME) {
        let mut again = Vec::new();
        wire::encode(&frame, HARD_MAX_FRAME, &mut again).expect("an accepted frame re-encodes");
        assert_eq!(&again[..], &rest[..used], "re-encoding differs");
        rest = &rest[used..];
    }
    let _ = wire::at_eof(rest, HARD_MAX_FRAME);
});
