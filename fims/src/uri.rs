//! URI helpers: frags and the broker's segment-prefix match.

/// The non-empty segments of a URI: `/site/cops/x` gives `site`, `cops`, `x`.
pub fn frags(uri: &str) -> impl Iterator<Item = &str> {
    uri.split('/').filter(|s| !s.is_empty())
}

/// A subscription URI without its trailing `/` (but `/` stays `/`).
pub fn normalize_sub(sub: &str) -> &str {
    let t = sub.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// Whether subscription `sub` matches message URI `uri`: `sub` is `/`, or equal,
/// or a segment prefix (`/site` matches `/site/cops`, not `/sites`). A trailing
/// `/` on the subscription is ignored.
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
