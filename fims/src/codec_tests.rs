//! Test vectors of docs/protocol/fims.md, byte for byte, and property tests of the codec.

use crate::codec::*;
use crate::error::DecodeError;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is hex"))
        .collect()
}

/// Decodes `vector`, checks it equals `expected`, and re-encodes it to the same bytes.
fn round_trip(vector: &str, expected: Message<'_>) {
    let bytes = hex(vector);
    let msg = Message::decode(&bytes).expect("vector decodes");
    assert_eq!(msg, expected);
    let mut out = Vec::new();
    expected.encode(&mut out).expect("encodes");
    assert_eq!(out, bytes, "re-encoding differs");
    assert_eq!(expected.encoded_len(), bytes.len());
}

#[test]
fn vector_set_from_fims_send() {
    round_trip(
        "0315000900000000040000007365742f636f6d706f6e656e74732f626d735f392f63617066696d735f73656e6431323334",
        Message {
            method: "set",
            uri: "/components/bms_9/cap",
            process_name: "fims_send",
            body: b"1234",
            ..Message::default()
        },
    );
}

#[test]
fn vector_sub_confirmation() {
    round_trip(
        "0000000b000000000700000066696d735f73657276657253554343455353",
        Message {
            process_name: "fims_server",
            body: b"SUCCESS",
            ..Message::default()
        },
    );
}

#[test]
fn vector_get_from_cops() {
    round_trip(
        "030a1f0400000000000000006765742f736974652f636f70732f636f70732f6865617274626561742f736974655f636f6e74726f6c6c6572636f7073",
        Message {
            method: "get",
            uri: "/site/cops",
            replyto: "/cops/heartbeat/site_controller",
            process_name: "cops",
            ..Message::default()
        },
    );
}

#[test]
fn vector_sub_from_cops() {
    let vector = "03000004000000000e000000737562636f707302000501042f636f70732f657373";
    let subs = [Subscription::all("/cops"), Subscription::pub_only("/ess")];
    let mut body = Vec::new();
    encode_sub_body(&subs, &mut body).expect("encodes");
    round_trip(
        vector,
        Message {
            method: "sub",
            process_name: "cops",
            body: &body,
            ..Message::default()
        },
    );
    let decoded = decode_sub_body(&body).expect("decodes");
    assert_eq!(decoded, [("/cops", false), ("/ess", true)]);
}

#[test]
fn vector_handshake() {
    let bytes = hex("01000000801a0e00");
    let hs = Handshake::decode(&bytes).expect("decodes");
    assert_eq!(
        hs,
        Handshake {
            version: 1,
            max_len: DEFAULT_MAX_LEN
        }
    );
    assert_eq!(hs.encode().to_vec(), bytes);
    // Garbage padding (one client sends 0x91EC) is ignored.
    let hs2 = Handshake::decode(&hex("010091ec801a0e00")).expect("decodes");
    assert_eq!(hs2, hs);
    assert_eq!(
        Handshake::decode(&bytes[..7]),
        Err(DecodeError::Handshake { len: 7 })
    );
}

#[test]
fn malformed_datagrams() {
    assert_eq!(Message::decode(&[]), Err(DecodeError::Short { len: 0 }));
    assert_eq!(
        Message::decode(&[3; 11]),
        Err(DecodeError::Short { len: 11 })
    );
    let mut good = Vec::new();
    Message::new(Method::Set, "/a", b"1")
        .encode(&mut good)
        .expect("encodes");
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        Message::decode(&long),
        Err(DecodeError::Length { .. })
    ));
    assert!(matches!(
        Message::decode(&good[..good.len() - 1]),
        Err(DecodeError::Length { .. })
    ));
    let mut bad_utf8 = good.clone();
    bad_utf8[HEADER_LEN + 3 + 1] = 0xff; // inside the uri
    assert_eq!(
        Message::decode(&bad_utf8),
        Err(DecodeError::NotUtf8 { field: "uri" })
    );
}

/// A character cut in two by a field boundary: the five strings together are
/// valid UTF-8, but two of them are not on their own.
#[test]
fn a_character_split_between_two_fields_is_not_utf8() {
    let mut dg = Vec::new();
    Message::new(Method::Set, "/\u{e9}", b"")
        .encode(&mut dg)
        .expect("encodes");
    // "/é" is 3 bytes; give the uri 2 of them and the replyto the last.
    dg[1] = 2;
    dg[2] = 1;
    assert_eq!(
        Message::decode(&dg),
        Err(DecodeError::NotUtf8 { field: "uri" })
    );
    dg[1] = 3;
    dg[2] = 0;
    assert_eq!(Message::decode(&dg).map(|m| m.uri), Ok("/\u{e9}"));
}

#[test]
fn write_header_is_the_encoding_without_the_body() {
    let m = Message {
        method: "pub",
        uri: "/site/x",
        replyto: "/r",
        process_name: "p",
        username: "u",
        body: b"{}",
    };
    let mut whole = Vec::new();
    m.encode(&mut whole).expect("encodes");
    let mut head = vec![0xAA];
    write_header(&mut head, m.strings(), m.body.len()).expect("writes");
    assert_eq!(&head[1..], &whole[..whole.len() - 2]);
    let long = "x".repeat(256);
    let mut strs = m.strings();
    strs[3] = &long;
    assert_eq!(
        write_header(&mut head, strs, 0),
        Err(EncodeError::StringTooLong {
            field: "process_name",
            len: 256
        })
    );
    assert_eq!(head.len(), whole.len() - 1, "left as it was");
}

#[test]
fn routing_checks() {
    let m = Message::new(Method::Set, "no-slash", b"");
    assert_eq!(m.check_data(), Err(DecodeError::BadUri));
    let m = Message {
        method: "put",
        uri: "/a",
        ..Message::default()
    };
    assert_eq!(m.check_data(), Err(DecodeError::UnknownMethod));
    assert_eq!(
        Message::new(Method::Pub, "/a", b"").check_data(),
        Ok(Method::Pub)
    );
}

#[test]
fn encode_limits() {
    let long = "/".repeat(256);
    let mut out = vec![7];
    let err = Message::new(Method::Get, &long, b"").encode(&mut out);
    assert_eq!(
        err,
        Err(EncodeError::StringTooLong {
            field: "uri",
            len: 256
        })
    );
    assert_eq!(out, [7], "a failed encode leaves the buffer as it was");
}

#[test]
fn sub_body_errors() {
    assert!(decode_sub_body(b"").is_err());
    assert!(decode_sub_body(&[0]).is_err());
    assert!(decode_sub_body(&[1, 0, 3, b'/', b'a']).is_err()); // lengths do not add up
    assert!(decode_sub_body(&[1, 2, 2, b'/', b'a']).is_err()); // pub_only not 0/1
    assert!(decode_sub_body(&[1, 0, 2, b'a', b'b']).is_err()); // no leading slash
    assert_eq!(
        decode_sub_body(&[1, 1, 2, b'/', b'a']),
        Ok(vec![("/a", true)])
    );
    assert!(encode_sub_body(&[], &mut Vec::new()).is_err());
}

#[test]
fn sub_body_holds_255_uris_as_the_existing_broker() {
    let subs: Vec<_> = (0..255)
        .map(|i| Subscription {
            uri: format!("/u/{i}"),
            pub_only: i % 2 == 1,
        })
        .collect();
    let mut body = Vec::new();
    encode_sub_body(&subs, &mut body).expect("255 URIs fit one sub");
    assert_eq!(body[0], 255);
    let back = decode_sub_body(&body).expect("decodes");
    assert_eq!(back.len(), 255);
    assert_eq!(back[254], ("/u/254", false));
    assert_eq!(back[253], ("/u/253", true));
    let more = [subs.clone(), vec![Subscription::all("/x")]].concat();
    assert!(
        encode_sub_body(&more, &mut Vec::new()).is_err(),
        "256 do not"
    );
}

fn arb_str() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z/_0-9é]{0,80}").expect("regex")
}

proptest! {
    #[test]
    fn any_message_round_trips(
        method in arb_str(), uri in arb_str(), replyto in arb_str(),
        name in arb_str(), user in arb_str(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let msg = Message { method: &method, uri: &uri, replyto: &replyto,
            process_name: &name, username: &user, body: &body };
        let mut out = Vec::new();
        msg.encode(&mut out).expect("all strings under 255 bytes");
        prop_assert_eq!(out.len(), msg.encoded_len());
        prop_assert_eq!(Message::decode(&out), Ok(msg));
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(&bytes);
        let _ = Handshake::decode(&bytes);
        let _ = decode_sub_body(&bytes);
    }

    #[test]
    fn header_shaped_garbage_never_panics(
        lens in proptest::array::uniform5(any::<u8>()),
        data_len in 0u32..512,
        tail in proptest::collection::vec(any::<u8>(), 0..1600),
    ) {
        let mut bytes = lens.to_vec();
        bytes.extend_from_slice(&[0, 0, 0]);
        bytes.extend_from_slice(&data_len.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decode_agrees_with_field_by_field_validation(
        lens in proptest::array::uniform5(0u8..6),
        strings in proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(0xc3u8), Just(0xa9u8), Just(0xffu8)], 25),
    ) {
        let total: usize = lens.iter().map(|&l| usize::from(l)).sum();
        let mut dg = lens.to_vec();
        dg.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        dg.extend_from_slice(&strings[..total]);
        let mut pos = 12;
        let mut want = Ok(());
        for (len, field) in lens.iter().zip(["method", "uri", "replyto", "process_name", "username"]) {
            let end = pos + usize::from(*len);
            if want.is_ok() && std::str::from_utf8(&dg[pos..end]).is_err() {
                want = Err(DecodeError::NotUtf8 { field });
            }
            pos = end;
        }
        prop_assert_eq!(Message::decode(&dg).map(|_| ()), want);
    }

    #[test]
    fn subscriptions_round_trip(uris in proptest::collection::vec(("/[a-z]{0,20}", any::<bool>()), 1..64)) {
        let subs: Vec<_> = uris.iter().map(|(u, p)| Subscription { uri: u.clone(), pub_only: *p }).collect();
        let mut body = Vec::new();
        encode_sub_body(&subs, &mut body).expect("encodes");
        let back = decode_sub_body(&body).expect("decodes");
        let expected: Vec<_> = uris.iter().map(|(u, p)| (u.as_str(), *p)).collect();
        prop_assert_eq!(back, expected);
    }
}
