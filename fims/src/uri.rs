//! URI helpers: frags, the segment-prefix match, and the broker's routing rule.
//!
//! When routing, empty segments do not count, as in the existing broker (it
//! splits URIs on `/` and skips empty pieces): `/e//f` and `/e/f/` both mean
//! `/e/f`, and `//` means `/` ([`normalize`], [`routes`]). The broker routes by
//! the collapsed form and forwards the URI as the sender wrote it.

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
/// or a segment prefix (`/site` matches `/site/cops`, not `/sites`). A trailing
/// `/` on the subscription is ignored. This is the clients' check of URIs
/// they own, character for character on `uri` (callers slice `uri` after the
/// prefix); the broker's routing, which also ignores empty segments, is
/// [`routes`].
pub fn matches(sub: &str, uri: &str) -> bool {
    let sub = normalize_sub(sub);
    if sub == "/" {
        return true;
    }
    match uri.strip_prefix(sub) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The broker's routing rule: whether a subscription to `sub` receives a
/// message to `uri`. Like [`matches`], but empty segments on either side are
/// ignored, as the existing broker does (`/e//f` and `/e/f/` both mean `/e/f`);
/// a `uri` that does not start with `/` is malformed and matches nothing.
/// Allocation-free.
pub fn routes(sub: &str, uri: &str) -> bool {
    if !uri.starts_with('/') {
        return false;
    }
    let mut u = frags(uri);
    frags(sub).all(|s| u.next() == Some(s))
}

/// The part of `uri` below subscription `sub` when [`routes`] says `sub`
/// receives it: what follows `sub`'s segments in `uri`, as written (it may
/// start with `/` and hold empty segments; [`frags`] reads it as the broker
/// would). `Some("")` when `uri` is `sub` itself. So a responder or COPS
/// decides what is theirs by the broker's rule: `/site//cops/x` is below
/// `/site/cops` (rest `/x`). Allocation-free.
pub fn route_rest<'a>(sub: &str, uri: &'a str) -> Option<&'a str> {
    if !uri.starts_with('/') {
        return None;
    }
    let mut rest = uri;
    for s in frags(sub) {
        let r = rest.trim_start_matches('/').strip_prefix(s)?;
        if !(r.is_empty() || r.starts_with('/')) {
            return None;
        }
        rest = r;
    }
    Some(rest)
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
    fn route_rest_follows_the_routing_rule() {
        assert_eq!(route_rest("/site/cops", "/site/cops"), Some(""));
        assert_eq!(route_rest("/site/cops", "/site/cops/x"), Some("/x"));
        assert_eq!(route_rest("/site/cops", "/site//cops//x/"), Some("//x/"));
        assert_eq!(route_rest("/site/cops", "//site/cops/"), Some("/"));
        assert_eq!(route_rest("/site/", "/site/cops"), Some("/cops"));
        assert_eq!(route_rest("/", "/a/b"), Some("/a/b"));
        assert_eq!(route_rest("/site/cops", "/site/copsx"), None);
        assert_eq!(route_rest("/site/cops", "/site"), None);
        assert_eq!(route_rest("/site/cops", "/site//"), None);
        assert_eq!(route_rest("/site", "site/cops"), None);
        // Exactly where `routes` says yes.
        for uri in [
            "/site/cops",
            "/site//cops",
            "/sitex",
            "/site",
            "/s/c/",
            "//",
            "x",
        ] {
            for sub in ["/site/cops", "/site", "/", "/s//c"] {
                assert_eq!(
                    route_rest(sub, uri).is_some(),
                    routes(sub, uri),
                    "{sub} {uri}"
                );
            }
        }
    }

    #[test]
    fn routing_ignores_empty_segments_on_both_sides() {
        assert!(routes("/e//f", "/e/f"));
        assert!(routes("/e/f", "/e//f"));
        assert!(routes("/e/f", "/e/f/"));
        assert!(routes("/e/f/", "/e//f//g"));
        assert!(routes("//", "/x") && routes("/", "/"));
        assert!(!routes("/e//f", "/e/g"));
        assert!(!routes("/e/f", "/e"));
        assert!(!routes("/e/f", "/e//"));
        assert!(!routes("/site", "/sites"));
        assert!(!routes("/site", "site/cops"), "not a URI: no leading slash");
        // `matches` stays character for character on the uri.
        assert!(!matches("/e/f", "/e//f"));
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
