//! The message codec on arbitrary datagrams: decoding never panics, and what
//! decodes re-encodes to the same bytes (padding aside); the URI helpers on
//! arbitrary text keep their laws.
#![no_main]

use fims::uri::{normalize, routes};
use fims::{Handshake, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let mut out = Vec::new();
        m.encode(&mut out).expect("a decoded message re-encodes");
        // Padding is ignored when decoding and written as zeros.
        let mut want = data.to_vec();
        want[5..8].fill(0);
        assert_eq!(out, want);
        assert_eq!(m.encoded_len(), data.len());
        let _ = m.check_data();
    }
    if let Ok(h) = Handshake::decode(data) {
        assert_eq!(Handshake::decode(&h.encode()), Ok(h));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let n = normalize(s);
        assert_eq!(normalize(&n), n, "collapsing twice changes nothing");
        assert!(n.starts_with('/') && !n[1..].contains("//") && (n == "/" || !n.ends_with('/')));
        assert!(routes(s, &n));
        // A message URI must start with `/`; one that does not matches nothing.
        assert_eq!(routes(&n, s), s.starts_with('/'));
        assert_eq!(routes("/", s), s.starts_with('/'));
    }
});
