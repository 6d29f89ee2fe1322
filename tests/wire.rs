//! The wire codec: round trips of every kind, each fatal error from crafted bytes, frames
//! split at every byte boundary, trailing bytes.

use proptest::prelude::*;
use relay::wire::catalogue::{self, *};
use relay::wire::{self, Error, Frame, HARD_MAX_FRAME, HEADER_LEN, MAGIC, Msg};

const MAX: u32 = HARD_MAX_FRAME;

fn bytes_of(msg: Msg, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(&Frame { seq, msg }, MAX, &mut out).unwrap();
    out
}

fn any_msg() -> impl Strategy<Value = Msg> {
    let s = || "[a-z0-9-]{0,40}";
    let os = || proptest::option::of("[a-zA-Z .]{0,20}");
    let b = || proptest::collection::vec(any::<u8>(), 0..512);
    prop_oneof![
        (
            any::<u16>(),
            any::<u64>(),
            s(),
            os(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(
                    protocol_version,
                    catalogue_hash,
                    endpoint_id,
                    name,
                    capabilities,
                    max_frame,
                    heartbeat_ms,
                )| {
                    Msg::Hello(Hello {
                        protocol_version,
                        catalogue_hash,
                        endpoint_id,
                        name,
                        capabilities,
                        max_frame,
                        heartbeat_ms,
                    })
                }
            ),
        (any::<bool>(), os(), s(), any::<u32>(), any::<u32>()).prop_map(
            |(accepted, reason, endpoint_id, capabilities, max_frame)| {
                Msg::HelloAck(HelloAck {
                    accepted,
                    reason,
                    endpoint_id,
                    capabilities,
                    max_frame,
                })
            }
        ),
        any::<u64>().prop_map(|nonce| Msg::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| Msg::Pong(Pong { nonce })),
        (
            s(),
            s(),
            os(),
            os(),
            os(),
            any::<u8>(),
            s(),
            b(),
            any::<i64>()
        )
            .prop_map(
                |(
                    message_id,
                    from,
                    from_name,
                    thread,
                    reply_to,
                    intent,
                    content_type,
                    body,
                    created_at,
                )| {
                    Msg::Deliver(Deliver {
                        message_id,
                        from,
                        from_name,
                        thread,
                        reply_to,
                        intent,
                        content_type,
                        body,
                        created_at,
                    })
                }
            ),
        (s(), any::<bool>(), os()).prop_map(|(message_id, accepted, reason)| Msg::DeliverAck(
            DeliverAck {
                message_id,
                accepted,
                reason
            }
        )),
        (s(), s(), s(), b()).prop_map(|(message_id, reply_to, content_type, body)| Msg::Reply(
            Reply {
                message_id,
                reply_to,
                content_type,
                body
            }
        )),
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(stream_id, capacity, shm)| {
            Msg::StreamOpen(StreamOpen {
                stream_id,
                capacity,
                shm,
            })
        }),
        (any::<u32>(), any::<bool>())
            .prop_map(|(stream_id, shm)| Msg::StreamAccept(StreamAccept { stream_id, shm })),
        (any::<u32>(), s())
            .prop_map(|(stream_id, reason)| Msg::StreamReject(StreamReject { stream_id, reason })),
        (any::<u32>(), any::<u64>(), b()).prop_map(|(stream_id, offset, data)| Msg::StreamData(
            StreamData {
                stream_id,
                offset,
                data
            }
        )),
        (any::<u32>(), any::<u64>())
            .prop_map(|(stream_id, total)| Msg::StreamClose(StreamClose { stream_id, total })),
        s().prop_map(|reason| Msg::Shutdown(Shutdown { reason })),
        Just(Msg::ShutdownAck(ShutdownAck {})),
        (any::<u16>(), s()).prop_map(|(code, message)| Msg::Error(ErrorMsg { code, message })),
    ]
}

proptest! {
    #[test]
    fn every_kind_round_trips(msg in any_msg(), seq in any::<u32>()) {
        let bytes = bytes_of(msg.clone(), seq);
        let (frame, used) = wire::decode(&bytes, MAX).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(frame, Frame { seq, msg });
    }

    #[test]
    fn decode_never_panics_and_what_it_accepts_re_encodes_identically(data in proptest::collection::vec(any::<u8>(), 0..256), kind in 1u16..=15) {
        // Random payloads under a valid header.
        let mut buf = Vec::new();
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&1u16.to_le_bytes());
        buf.extend_from_slice(&kind.to_le_bytes());
        buf.extend_from_slice(&9u32.to_le_bytes());
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&data);
        if let Ok(Some((frame, used))) = wire::decode(&buf, MAX) {
            let mut again = Vec::new();
            wire::encode(&frame, MAX, &mut again).unwrap();
            prop_assert_eq!(&again[..], &buf[..used]);
        }
    }
}

#[test]
fn a_frame_split_at_every_byte_boundary_decodes_once_whole() {
    let mut stream = Vec::new();
    for (i, m) in catalogue::samples().into_iter().enumerate() {
        stream.extend(bytes_of(m, i as u32));
    }
    for cut in 0..=stream.len() {
        // Feed the first `cut` bytes, then the rest, as a reader would.
        let mut buf = stream[..cut].to_vec();
        let mut got = Vec::new();
        let drain = |buf: &mut Vec<u8>, got: &mut Vec<Frame>| {
            while let Some((f, used)) = wire::decode(buf, MAX).unwrap() {
                got.push(f);
                buf.drain(..used);
            }
        };
        drain(&mut buf, &mut got);
        buf.extend_from_slice(&stream[cut..]);
        drain(&mut buf, &mut got);
        assert!(buf.is_empty());
        assert_eq!(got.len(), catalogue::samples().len(), "cut at {cut}");
        assert_eq!(
            got.iter().map(|f| f.msg.clone()).collect::<Vec<_>>(),
            catalogue::samples()
        );
    }
}

fn ping() -> Vec<u8> {
    bytes_of(Msg::Ping(Ping { nonce: 1 }), 5)
}

#[test]
fn each_fatal_error_comes_from_crafted_bytes() {
    let mut b = ping();
    b[0] = b'X';
    assert!(matches!(wire::decode(&b, MAX), Err(Error::BadMagic { .. })));

    let mut b = ping();
    b[4..6].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        wire::decode(&b, MAX),
        Err(Error::UnsupportedVersion { found: 2 })
    );

    for kind in [0u16, 16, 999] {
        let mut b = ping();
        b[6..8].copy_from_slice(&kind.to_le_bytes());
        assert_eq!(wire::decode(&b, MAX), Err(Error::UnknownKind { kind }));
    }

    // Oversized: refused from the header alone, before the payload exists.
    let mut header = ping()[..HEADER_LEN].to_vec();
    header[12..16].copy_from_slice(&(64 * 1024 * 1024u32).to_le_bytes());
    assert_eq!(
        wire::check(&header, MAX),
        Err(Error::FrameTooLarge {
            len: 64 << 20,
            max: MAX
        })
    );
    let b = ping();
    assert!(matches!(
        wire::decode(&b, 0),
        Err(Error::FrameTooLarge { max: 0, .. })
    ));

    // Malformed: the payload is not a Ping (too short).
    let mut b = ping();
    let n = b.len();
    b.truncate(n - 1);
    b[12..16].copy_from_slice(&((n - 1 - HEADER_LEN) as u32).to_le_bytes());
    assert!(matches!(
        wire::decode(&b, MAX),
        Err(Error::Malformed { kind: "Ping", .. })
    ));

    // Trailing bytes inside the frame are malformed, not ignored.
    let mut b = ping();
    b.push(0);
    let len = (b.len() - HEADER_LEN) as u32;
    b[12..16].copy_from_slice(&len.to_le_bytes());
    let e = wire::decode(&b, MAX).unwrap_err();
    assert!(
        matches!(&e, Error::Malformed { reason, .. } if reason.contains("trailing")),
        "{e}"
    );

    // Truncated: the stream ends inside a frame; a clean end is fine.
    let b = ping();
    assert_eq!(
        wire::decode(&b[..b.len() - 1], MAX),
        Ok(None),
        "incomplete is not an error"
    );
    assert!(matches!(
        wire::at_eof(&b[..b.len() - 1], MAX),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        wire::at_eof(&b[..3], MAX),
        Err(Error::Truncated { have: 3, need: 16 })
    ));
    assert_eq!(wire::at_eof(&[], MAX), Ok(()));
}

#[test]
fn the_header_is_exactly_as_documented() {
    let b = ping();
    assert_eq!(&b[0..4], b"RLAY");
    assert_eq!(&b[4..6], &[1, 0]);
    assert_eq!(&b[6..8], &[3, 0], "Ping is kind 3");
    assert_eq!(&b[8..12], &[5, 0, 0, 0]);
    assert_eq!(
        u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize,
        b.len() - HEADER_LEN
    );
    // Encoding over the maximum appends nothing.
    let mut out = vec![1, 2, 3];
    let big = Msg::StreamData(StreamData {
        stream_id: 1,
        offset: 0,
        data: vec![0; 100],
    });
    assert!(wire::encode(&Frame { seq: 0, msg: big }, 50, &mut out).is_err());
    assert_eq!(out, [1, 2, 3]);
}

/// Found by cargo fuzz: postcard reads a varint with a redundant continuation byte
/// (`0x97 0x00` for 23), which re-encodes as `0x17`. One message must have one encoding.
#[test]
fn regression_over_long_varints_are_malformed() {
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes()); // Ping
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&[0x97, 0x00]);
    let e = wire::decode(&b, MAX).unwrap_err();
    assert!(
        matches!(&e, Error::Malformed { reason, .. } if reason.contains("non-canonical")),
        "{e}"
    );
}
