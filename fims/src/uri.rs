//! URI helpers: frags and the broker's segment-prefix match.
//!
//! Empty segments do not count, as in the existing broker (it splits URIs on
//! `/` and skips empty pieces): `/e//f` and `/e/f/` both mean `/e/f`, and `//`
//! means `/`. The broker routes by the collapsed form; it forwards the URI as
//! the sender wrote it.

use std::borrow::Cow;

/// The non-empty segments of a URI: `/site/cops/x` gives `site`, `cops`, `x`.
pub fn frags(uri: &str) -> impl Iterator<Item = &str> {
    uri.split('/').filter(|s| !s.is_empty())
}

/// A subscription URI without its trailing `/` (but `/` stays `/`). Inner
/// empty segments are kept: [`normalize`] collapses those too.
pub fn normalize_sub(sub: &str) -> &str {
    let t = sub.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// Whether `uri` differs from its collapsed form: it has an empty segment
/// (`//`), a trailing `/` (other than the root itself), or does not start
/// with `/`. Allocation-free; the broker calls it on every message URI.
pub fn needs_normalizing(uri: &str) -> bool {
    let b = uri.as_bytes();
    match b {
        [] => true,
        [b'/'] => false,
        [first, .., last] => *first != b'/' || *last == b'/' || b.windows(2).any(|w| w == b"//"),
        [_] => true,
    }
}

/// The collapsed form of `uri`: `/` followed by its non-empty segments joined
/// by `/` (`/e//f/` gives `/e/f`, `//` and the empty string give `/`).
/// Borrows when `uri` is already in that form.
pub fn normalize(uri: &str) -> Cow<'_, str> {
    if !needs_normalizing(uri) {
        return Cow::Borrowed(uri);
    }
    let mut out = String::with_capacity(uri.len() + 1);
    normalize_into(uri, &mut out);
    Cow::Owned(out)
}

/// Writes the collapsed form of `uri` into `out` (cleared first), so a caller
/// with a reused buffer allocates nothing once it has grown.
pub fn normalize_into(uri: &str, out: &mut String) {
    out.clear();
    for f in frags(uri) {
        out.push('/');
        out.push_str(f);
    }
    if out.is_empty() {
        out.push('/');
    }
}

/// Whether subscription `sub` matches message URI `uri`: `sub` is `/`, or equal,
/// or a segment prefix (`/site` matches `/site/cops`, not `/sites`). Empty
/// segments on either side are ignored (`/site/` and `/site//` match like
/// `/site`; `/site//cops` is `/site/cops`). A `uri` that does not start with
/// `/` is malformed and matches nothing. Allocation-free.
pub fn matches(sub: &str, uri: &str) -> bool {
    if !uri.starts_with('/') {
        return false;
    }
    let mut u = frags(uri);
    frags(sub).all(|s| u.next() == Some(s))
}

/// Checks a base URI as processes configure it: starts with `/`, no empty
/// segments, no trailing `/` (except the root itself), at most 255 bytes.
pub fn validate(uri: &str) -> Result<(), &'static str> {
    if !uri.starts_with('/') {
        return Err("must start with '/'");
    }
    if uri.len() > crate::codec::MAX_STRING_LEN {
        return Err("is over 255 bytes");
    }
    if uri != "/" && uri[1..].split('/').any(str::is_empty) {
        return Err("has an empty segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_prefix() {
        assert!(matches("/site", "/site"));
        assert!(matches("/site", "/site/cops"));
        assert!(matches("/site/", "/site/cops"));
        assert!(!matches("/site", "/sites"));
        assert!(!matches("/site", "/sitex/cops"));
        assert!(!matches("/site/cops", "/site"));
        assert!(matches("/", "/anything/at/all"));
        assert!(matches("//", "/x"));
    }

    #[test]
    fn empty_segments_are_ignored_on_both_sides() {
        assert!(matches("/e//f", "/e/f"));
        assert!(matches("/e/f", "/e//f"));
        assert!(matches("/e/f", "/e/f/"));
        assert!(matches("/e/f/", "/e//f//g"));
        assert!(!matches("/e//f", "/e/g"));
        assert!(!matches("/e/f", "/e"));
        assert!(!matches("/e/f", "/e//"));
        assert!(
            !matches("/site", "site/cops"),
            "not a URI: no leading slash"
        );
        assert!(!matches("/", ""));
    }

    #[test]
    fn normalize_collapses() {
        for (raw, want) in [
            ("/", "/"),
            ("//", "/"),
            ("", "/"),
            ("/e//f", "/e/f"),
            ("/e/f/", "/e/f"),
            ("//e///f//", "/e/f"),
            ("/site", "/site"),
            ("e/f", "/e/f"),
        ] {
            assert_eq!(normalize(raw), want, "{raw:?}");
            assert_eq!(needs_normalizing(raw), raw != want, "{raw:?}");
        }
        assert!(matches!(normalize("/a/b"), Cow::Borrowed(_)));
        let mut buf = String::new();
        normalize_into("/a//b/", &mut buf);
        assert_eq!(buf, "/a/b");
    }

    #[test]
    fn frags_split() {
        let f: Vec<_> = frags("/site/cops/cops_heartbeat").collect();
        assert_eq!(f, ["site", "cops", "cops_heartbeat"]);
    }

    #[test]
    fn validate_uris() {
        assert!(validate("/site").is_ok());
        assert!(validate("/components/modbus_test_client").is_ok());
        assert!(validate("site").is_err());
        assert!(validate("/site//x").is_err());
        assert!(validate("/site/").is_err());
        assert!(validate("").is_err());
    }
}
