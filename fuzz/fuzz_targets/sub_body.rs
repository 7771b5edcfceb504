//! The `sub` body parser on arbitrary bytes: never panics; what parses
//! re-encodes to the same bytes, and each URI matches its collapsed form.
#![no_main]

use fims::codec::{decode_sub_body, encode_sub_body};
use fims::uri::{normalize, routes};
use fims::Subscription;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = decode_sub_body(data) else {
        return;
    };
    assert!((1..=fims::codec::MAX_SUBS_PER_DATAGRAM).contains(&list.len()));
    let subs: Vec<Subscription> = list
        .iter()
        .map(|(uri, pub_only)| Subscription {
            uri: (*uri).to_owned(),
            pub_only: *pub_only,
        })
        .collect();
    let mut out = Vec::new();
    encode_sub_body(&subs, &mut out).expect("a parsed body re-encodes");
    assert_eq!(out, data);
    for (uri, _) in &list {
        let n = normalize(uri);
        assert!(routes(uri, &n) && routes(&n, uri));
    }
});
