//! The subscription index: which connections want a message URI.
//!
//! Subscriptions are stored under their normalized URI. A message URI `U` is
//! matched by looking up `/` and each of its segment prefixes (`/a`, `/a/b`, ...,
//! `U` itself), which is exactly [`fims::uri::matches`] (see the property test).
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
    /// Adds a subscription; returns the normalized key when it is new for `conn`
    /// (the caller keeps it to remove it on close). Subscribing twice to the same
    /// URI keeps one entry; it is pub-only only when every request was.
    pub(crate) fn add(&mut self, conn: ConnId, uri: &str, pub_only: bool) -> Option<Box<str>> {
        let key = fims::uri::normalize_sub(uri);
        let list = match self.map.get_mut(key) {
            Some(l) => l,
            None => self.map.entry(key.into()).or_default(),
        };
        if let Some(e) = list.iter_mut().find(|e| e.conn == conn) {
            e.pub_only &= pub_only;
            return None;
        }
        list.push(Entry { conn, pub_only });
        Some(key.into())
    }

    /// Removes `conn` from the subscribers of `key` (a key returned by [`add`](Self::add)).
    pub(crate) fn remove(&mut self, conn: ConnId, key: &str) {
        if let Some(list) = self.map.get_mut(key) {
            list.retain(|e| e.conn != conn);
            if list.is_empty() {
                self.map.remove(key);
            }
        }
    }

    /// Calls `f` for every entry whose subscription matches `uri`. A connection
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

    #[test]
    fn prefix_rules() {
        let mut idx = SubIndex::default();
        idx.add(1, "/site", false);
        idx.add(2, "/sites/", false);
        idx.add(3, "/", true);
        idx.add(4, "/site/cops/", false);
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
        assert!(idx.add(1, "/a", true).is_some());
        assert!(idx.add(1, "/a/", false).is_none());
        assert_eq!(matched(&idx, "/a"), [(1, false)]);
        idx.remove(1, "/a");
        assert_eq!(idx.len(), 0);
    }

    fn uri_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "ab", "", "a/"], 0..5)
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
                idx.add(i, s, false);
            }
            let got: Vec<_> = matched(&idx, &uri).into_iter().map(|(c, _)| c).collect();
            let want: Vec<_> = subs
                .iter()
                .enumerate()
                .filter(|(_, s)| fims::uri::matches(s, &uri))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
