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

/// Normalized subscription URI -> subscribers.
#[derive(Debug, Default)]
pub(crate) struct SubIndex {
    map: HashMap<Box<str>, Vec<Entry>>,
}

impl SubIndex {
    /// Adds `conn` under `key`, a collapsed URI ([`fims::uri::normalize`]).
    /// Adding the same key twice keeps one entry; it is pub-only only when
    /// every request was.
    pub(crate) fn insert(&mut self, conn: ConnId, key: &str, pub_only: bool) {
        let list = match self.map.get_mut(key) {
            Some(l) => l,
            None => self.map.entry(key.into()).or_default(),
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
            }
        }
    }

    /// Whether `conn` is subscribed under `key` (invariant checks).
    pub(crate) fn contains(&self, conn: ConnId, key: &str) -> bool {
        self.map
            .get(key)
            .is_some_and(|l| l.iter().any(|e| e.conn == conn))
    }

    /// Number of (connection, key) entries (invariant checks).
    pub(crate) fn entries(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// Calls `f` for every entry whose subscription matches `uri`, a collapsed
    /// URI (the broker collapses message URIs with empty segments first). A connection
    /// with several matching subscriptions is seen several times: the caller
    /// de-duplicates (the broker uses a per-message generation stamp).
    pub(crate) fn for_each_match(&self, uri: &str, mut f: impl FnMut(Entry)) {
        if self.map.is_empty() {
            return;
        }
        let mut visit = |key: &str| {
            if let Some(list) = self.map.get(key) {
                list.iter().copied().for_each(&mut f);
            }
        };
        visit("/");
        for (i, b) in uri.bytes().enumerate().skip(1) {
            if b == b'/' && i > 1 {
                visit(&uri[..i]);
            }
        }
        if uri != "/" {
            visit(uri);
        }
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
        idx.for_each_match(uri, |e| v.push((e.conn, e.pub_only)));
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

    fn uri_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "ab", "", "a/", "/"], 0..6)
            .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        #[test]
        fn index_agrees_with_matches(
            subs in proptest::collection::vec(uri_strategy(), 1..8),
            uri in uri_strategy(),
        ) {
            let mut idx = SubIndex::default();
            for (i, s) in subs.iter().enumerate() {
                add(&mut idx, i, s, false);
            }
            let key = fims::uri::normalize(&uri);
            let got: Vec<_> = matched(&idx, &key).into_iter().map(|(c, _)| c).collect();
            let want: Vec<_> = subs
                .iter()
                .enumerate()
                .filter(|(_, s)| fims::uri::routes(s, &uri))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
