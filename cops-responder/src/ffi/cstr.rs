//! C strings in, `&str` out: NULL and non-UTF-8 refused, the common ASCII
//! case checked without full UTF-8 validation.

use std::ffi::{c_char, CStr};

use super::cops_status::{self, COPS_ERR_INVALID, COPS_ERR_NULL};

/// Reads a NUL-terminated C string as UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
pub(super) unsafe fn utf8<'a>(p: *const c_char) -> Result<&'a str, cops_status> {
    if p.is_null() {
        return Err(COPS_ERR_NULL);
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    // URIs and methods are ASCII: a word-at-a-time ASCII check is several
    // times cheaper than full UTF-8 validation of such short strings, and
    // ASCII is UTF-8. Anything else gets the full check.
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, so the bytes are valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|_| COPS_ERR_INVALID)
}

/// Whether every byte is below 0x80: 8 bytes per step, the tail read as the
/// (overlapping) last 8 bytes, so strings of 8 bytes or more have no byte loop.
#[inline]
pub(super) fn is_ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_ne_bytes(w)
    };
    if b.len() < 8 {
        return b.iter().fold(0, |acc, &x| acc | x) < 0x80;
    }
    let chunks = b.chunks_exact(8);
    let last = word(&b[b.len() - 8..]);
    chunks.fold(last, |acc, c| acc | word(c)) & HIGH == 0
}

/// The method as UTF-8, with a fast path for the two a responder answers:
/// `get` and `set` are recognised from their bytes without `strlen`.
///
/// # Safety
/// As [`utf8`].
#[inline]
pub(super) unsafe fn method_str<'a>(p: *const c_char) -> Result<&'a str, cops_status> {
    if p.is_null() {
        return Err(COPS_ERR_NULL);
    }
    // SAFETY: NUL-terminated, and each byte is read only after the previous
    // one was found to be a letter, not the terminator (`&&` short-circuits).
    let known = unsafe {
        let first = *p as u8;
        ((first == b'g' || first == b's')
            && *p.add(1) as u8 == b'e'
            && *p.add(2) as u8 == b't'
            && *p.add(3) == 0)
            .then_some(if first == b'g' { "get" } else { "set" })
    };
    match known {
        Some(m) => Ok(m),
        // SAFETY: the caller's contract.
        None => unsafe { utf8(p) },
    }
}
