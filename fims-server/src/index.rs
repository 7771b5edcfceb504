//! The subscription index: which connections want a message URI.
//!
//! Subscriptions are stored under their collapsed URI ([`fims::uri::normalize`]:
//! no empty segment, no trailing `/`). A collapsed message URI `U` is matched by
//! looking up `/` and each of its segment prefixes (`/a`, `/a/b`, ..., `U`
//! itself), which is exactly [`fims::uri::routes`] (see the property test).
//! Pure data structure, no I/O.

use std::collections::HashMap;

/// A connection's slot number in the broker.
pub(crate) type ConnId = usize;

/// One subscriber under one URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) conn: ConnId,
    pub(crate) pub_only: bool,
}

/// A message URI that is not in collapsed form (see [`SubIndex::for_each_match`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotCollapsed;

/// Keys are as long as a URI may be (255 bytes); longer ones share the last
/// count (and are always looked up).
const LENS: usize = 256;

/// Normalized subscription URI -> subscribers.
///
/// The keys come from clients, so the map is hashed with a per-map random
/// seed (foldhash's `RandomState`: a few instructions per short key, where
/// SipHash took a quarter of the broker's routing work). Every message looks
/// up each of its URI's segment prefixes; `by_len` skips the prefixes no key
/// is as long as, which is most of them on a typical bus.
#[derive(Debug, Default)]
pub(crate) struct SubIndex {
    map: HashMap<Box<str>, Vec<Entry>, foldhash::fast::RandomState>,
    /// How many keys of each length the map holds.
    by_len: Vec<u32>,
}

fn len_slot(key: &str) -> usize {
    key.len().min(LENS - 1)
}

impl SubIndex {
    /// Adds `conn` under `key`, a collapsed URI ([`fims::uri::normalize`]).
    /// Adding the same key twice keeps one entry; it is pub-only only when
    /// every request was.
    pub(crate) fn insert(&mut self, conn: ConnId, key: &str, pub_only: bool) {
        let list = match self.map.get_mut(key) {
            Some(l) => l,
            None => {
                if self.by_len.is_empty() {
                    self.by_len = vec![0; LENS];
                }
                self.by_len[len_slot(key)] += 1;
                self.map.entry(key.into()).or_default()
            }
        };
        match list.iter_mut().find(|e| e.conn == conn) {
            Some(e) => e.pub_only &= pub_only,
            None => list.push(Entry { conn, pub_only }),
        }
    }

    /// Removes `conn` from the subscribers of `key`.
    pub(crate) fn remove(&mut self, conn: ConnId, key: &str) {
        if let Some(list) = self.map.get_mut(key) {
            list.retain(|e| e.conn != conn);
            if list.is_empty() {
                self.map.remove(key);
                self.by_len[len_slot(key)] -= 1;
            }
        }
    }

    /// Whether `conn` is subscribed under `key` (invariant checks).
    pub(crate) fn contains(&self, conn: ConnId, key: &str) -> bool {
        self.map
            .get(key)
            .is_some_and(|l| l.iter().any(|e| e.conn == conn))
    }

    /// Checks the key-length counts against the keys (invariant checks).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut want = vec![0u32; LENS];
        for key in self.map.keys() {
            want[len_slot(key)] += 1;
        }
        let have = if self.by_len.is_empty() {
            vec![0; LENS]
        } else {
            self.by_len.clone()
        };
        if have != want || self.map.values().any(Vec::is_empty) {
            return Err("subscription index: key-length counts or lists are off".into());
        }
        Ok(())
    }

    /// Number of (connection, key) entries (invariant checks).
    pub(crate) fn entries(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// Calls `f` for every entry whose subscription matches `uri`, a message
    /// URI. A connection with several matching subscriptions is seen several
    /// times: the caller de-duplicates (the broker uses a per-message
    /// generation stamp).
    ///
    /// `Err(NotCollapsed)` when `uri` is not in collapsed form
    /// ([`fims::uri::normalize`]: an empty segment, a trailing `/`, no leading
    /// `/`): the caller collapses it and asks again. `f` may have been called
    /// for some prefixes by then, each of which the collapsed URI matches too
    /// (so the caller's de-duplication makes that harmless). Checking the form
    /// here costs nothing beyond the scan for segment prefixes.
    pub(crate) fn for_each_match(
        &self,
        uri: &str,
        mut f: impl FnMut(Entry),
    ) -> Result<(), NotCollapsed> {
        let b = uri.as_bytes();
        match b {
            [b'/'] => {}
            [b'/', .., last] if *last != b'/' => {}
            _ => return Err(NotCollapsed),
        }
        if self.map.is_empty() {
            return Ok(());
        }
        let mut visit = |key: &str| {
            if self.by_len[len_slot(key)] == 0 {
                return;
            }
            if let Some(list) = self.map.get(key) {
                list.iter().copied().for_each(&mut f);
            }
        };
        visit("/");
        // A '/' after the first byte ends a segment prefix (`/a`, `/a/b`, ...);
        // one right after another is an empty segment.
        let mut prev = b'/';
        for (i, &c) in b.iter().enumerate().skip(1) {
            if c == b'/' {
                if prev == b'/' {
                    return Err(NotCollapsed);
                }
                visit(&uri[..i]);
            }
            prev = c;
        }
        if b.len() > 1 {
            visit(uri);
        }
        Ok(())
    }

    /// Number of distinct subscription URIs.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matched(idx: &SubIndex, uri: &str) -> Vec<(ConnId, bool)> {
        let mut v = Vec::new();
        let key = fims::uri::normalize(uri);
        assert_eq!(
            idx.for_each_match(uri, |_| {}).is_ok(),
            key == uri,
            "{uri:?} is collapsed or not"
        );
        idx.for_each_match(&key, |e| v.push((e.conn, e.pub_only)))
            .expect("collapsed");
        v.sort_unstable();
        v.dedup();
        v
    }

    fn add(idx: &mut SubIndex, conn: ConnId, uri: &str, pub_only: bool) {
        idx.insert(conn, &fims::uri::normalize(uri), pub_only);
    }

    #[test]
    fn prefix_rules() {
        let mut idx = SubIndex::default();
        add(&mut idx, 1, "/site", false);
        add(&mut idx, 2, "/sites/", false);
        add(&mut idx, 3, "/", true);
        add(&mut idx, 4, "/site//cops/", false);
        assert_eq!(matched(&idx, "/site"), [(1, false), (3, true)]);
        assert_eq!(
            matched(&idx, "/site/cops"),
            [(1, false), (3, true), (4, false)]
        );
        assert_eq!(matched(&idx, "/sites"), [(2, false), (3, true)]);
        assert_eq!(matched(&idx, "/sitex/a"), [(3, true)]);
    }

    #[test]
    fn duplicate_subscription_merges() {
        let mut idx = SubIndex::default();
        add(&mut idx, 1, "/a", true);
        add(&mut idx, 1, "/a/", false);
        assert_eq!(matched(&idx, "/a"), [(1, false)]);
        assert_eq!(idx.entries(), 1);
        idx.remove(1, "/a");
        assert_eq!(idx.len(), 0);
    }

    /// Stands for a subscription that was removed again.
    static NONE: String = String::new();

    fn uri_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "ab", "", "a/", "/"], 0..6)
            .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        #[test]
        fn index_agrees_with_matches(
            subs in proptest::collection::vec(uri_strategy(), 1..8),
            gone in proptest::collection::vec(any::<bool>(), 8),
            uri in uri_strategy(),
        ) {
            let mut idx = SubIndex::default();
            for (i, s) in subs.iter().enumerate() {
                add(&mut idx, i, s, false);
                // A second subscriber under the same key, then gone again.
                add(&mut idx, 100 + i, s, false);
            }
            for (i, s) in subs.iter().enumerate() {
                idx.remove(100 + i, &fims::uri::normalize(s));
            }
            let subs: Vec<(usize, &String)> = subs.iter().enumerate().collect();
            for &(i, s) in &subs {
                if gone[i] {
                    idx.remove(i, &fims::uri::normalize(s));
                }
            }
            prop_assert!(idx.check().is_ok());
            let subs: Vec<&String> = subs
                .iter()
                .map(|&(i, s)| if gone[i] { &NONE } else { s })
                .collect();
            let key = fims::uri::normalize(&uri);
            let got: Vec<_> = matched(&idx, &key).into_iter().map(|(c, _)| c).collect();
            let want: Vec<_> = subs
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty() && fims::uri::routes(s, &uri))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
