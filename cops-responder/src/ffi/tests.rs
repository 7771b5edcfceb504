//! Unit tests of the C ABI (the C programs in c-bindings/tests/ test it from C).
use super::cstr::is_ascii;
use super::*;

#[test]
fn a_panic_becomes_the_panic_status() {
    let s = boundary(COPS_ERR_PANIC, || -> cops_status { panic!("bug") });
    assert_eq!(s, COPS_ERR_PANIC);
    let p = boundary(std::ptr::null_mut(), || -> *mut cops_responder {
        panic!("bug")
    });
    assert!(p.is_null());
}

#[test]
fn every_status_round_trips_and_has_a_text() {
    for s in [
        COPS_OK,
        COPS_NOT_MINE,
        COPS_ERR_NULL,
        COPS_ERR_INVALID,
        COPS_ERR_BUFFER_TOO_SMALL,
        COPS_ERR_IO,
        COPS_ERR_PANIC,
    ] {
        assert_eq!(status_from_int(s as c_int), Some(s));
        // SAFETY: cops_status_str returns a static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(cops_status_str(s as c_int)) };
        assert_ne!(text.to_bytes(), b"unknown status");
    }
    assert_eq!(status_from_int(7), None);
}

#[test]
fn fast_string_checks_agree_with_the_full_ones() {
    let cases: &[&[u8]] = &[
        b"",
        b"g",
        b"ge",
        b"get",
        b"gets",
        b"set",
        b"sex",
        b"GET",
        b"post",
        b"s\xc3\xa9t",
        b"/site/cops",
        b"/cops/heartbeat/hybridos_controller",
        b"/x\xff\xfe",
        b"/abcdefg",
        b"/abcdefgh\x80",
        b"\x80bcdefghijklmnop",
        b"/\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
    ];
    for bytes in cases {
        let c = std::ffi::CString::new(*bytes).expect("no NUL inside");
        let full = std::str::from_utf8(bytes).map_err(|_| COPS_ERR_INVALID);
        // SAFETY: a valid NUL-terminated string.
        unsafe {
            assert_eq!(utf8(c.as_ptr()), full, "{bytes:?}");
            assert_eq!(method_str(c.as_ptr()), full, "{bytes:?}");
        }
        assert_eq!(is_ascii(bytes), bytes.is_ascii(), "{bytes:?}");
    }
}

/// The buffer-size bound that lets `cops_responder_handle` write straight
/// into the host's buffer holds for the longest answers.
#[test]
fn answers_stay_within_their_bound() {
    let mut r = Responder::new("p", "/s").expect("valid");
    r.set_version(&"\u{1}\"".repeat(300), "é", &"x".repeat(1000));
    r.loop_tick(Instant::now());
    r.loop_tick(Instant::now() + Duration::from_secs(3600));
    let long = "\u{1}".repeat(200);
    let uris = [
        "/s/cops".to_string(),
        format!("/s/cops/{long}"),
        "/s/cops/loop".into(),
        "/s/cops/version_tag".into(),
        "/s/cops/cops_heartbeat".into(),
        format!("/s/cops/{}", "é".repeat(120)),
    ];
    let methods = ["get", "set", "post", &"\"".repeat(100), ""];
    let mut reply = Vec::new();
    for uri in &uris {
        for m in methods {
            for body in [&b"18446744073709551615"[..], b"-1", b"\xff"] {
                let _ = r.handle(Instant::now(), m, uri, Some("/r"), body, &mut reply);
                let bound = r.answer_bound(m.len(), uri.len());
                assert!(reply.len() <= bound, "{m} {uri}: {} > {bound}", reply.len());
            }
        }
    }
}

#[test]
fn handle_answers_get_cops_with_the_pid() {
    // SAFETY: valid NUL-terminated strings and buffers; the responder is freed once.
    unsafe {
        let r = cops_responder_new(c"p".as_ptr(), c"/s".as_ptr());
        assert!(!r.is_null());
        let mut buf = [0 as c_char; 128];
        let mut len = 0usize;
        let s = cops_responder_handle(
            r,
            c"get".as_ptr(),
            c"/s/cops".as_ptr(),
            c"/r".as_ptr(),
            std::ptr::null(),
            0,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        );
        assert_eq!(s, COPS_OK);
        let reply = std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len);
        let pid = format!("\"pid\":{}", std::process::id());
        assert!(String::from_utf8_lossy(reply).contains(&pid));
        cops_responder_free(r);
    }
}
