//! Every wire example of the repository's own protocol reference
//! (`docs/protocol/fims.md`, "Test vectors") decodes with our codec and
//! re-encodes to the same bytes, so the document and the code cannot drift apart.

use fims::{Handshake, Message};

const DOC: &str = include_str!("../../docs/protocol/fims.md");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is hex"))
        .collect()
}

/// The hex strings of the "Test vectors" section: the last backquoted span of
/// each bullet line.
fn vectors() -> Vec<(String, Vec<u8>)> {
    let section = DOC
        .split("### Test vectors")
        .nth(1)
        .expect("docs/protocol/fims.md has a Test vectors section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut out = Vec::new();
    let mut label = String::new();
    for line in section.lines() {
        if line.starts_with("- ") {
            label = line.to_string();
        }
        for span in line.split('`').skip(1).step_by(2) {
            if span.len() >= 16
                && span.len() % 2 == 0
                && span.bytes().all(|b| b.is_ascii_hexdigit())
            {
                out.push((label.clone(), hex(span)));
            }
        }
    }
    out
}

#[test]
fn every_wire_example_in_the_protocol_doc_decodes() {
    let vectors = vectors();
    assert!(vectors.len() >= 5, "found only {} vectors", vectors.len());
    for (label, bytes) in vectors {
        if bytes.len() == Handshake::LEN {
            let h = Handshake::decode(&bytes).expect("handshake decodes");
            assert_eq!(h.version, 1, "{label}");
            assert_eq!(h.encode().to_vec(), bytes, "{label}");
            continue;
        }
        let msg = Message::decode(&bytes).unwrap_or_else(|e| panic!("{label}: {e}"));
        // The broker's `sub` answer has an empty method; every other example is a data message or `sub`.
        assert!(
            msg.method.is_empty() || msg.method().is_some(),
            "{label}: unknown method"
        );
        let mut again = Vec::new();
        msg.encode(&mut again).expect("re-encodes");
        assert_eq!(again, bytes, "{label}: re-encoding differs");
    }
}

#[test]
fn the_handshake_example_announces_the_existing_limit() {
    let hs = vectors()
        .into_iter()
        .find(|(_, b)| b.len() == Handshake::LEN)
        .expect("a handshake example");
    assert_eq!(Handshake::decode(&hs.1).expect("decodes").max_len, 924_288);
}
