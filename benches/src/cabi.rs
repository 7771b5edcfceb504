//! The responder through its C ABI, called from Rust exactly as a C host would.

use std::ffi::{c_char, CStr};

use cops_responder::ffi;

use crate::{err, msgs, Result};

/// A `cops_responder*` from `cops_responder_new`, freed on drop.
#[derive(Debug)]
pub struct CResponder {
    ptr: *mut ffi::cops_responder,
    reply: Vec<u8>,
}

/// NUL-terminated copies of the heartbeat request's strings.
pub const METHOD_GET: &CStr = c"get";
/// `set`.
pub const METHOD_SET: &CStr = c"set";
/// `/bench/cops`.
pub const COPS_URI: &CStr = c"/bench/cops";
/// `/bench/cops/cops_heartbeat`.
pub const HEARTBEAT_URI: &CStr = c"/bench/cops/cops_heartbeat";
/// `/cops/heartbeat/bench`.
pub const REPLY_URI: &CStr = c"/cops/heartbeat/bench";

impl CResponder {
    /// `cops_responder_new("bench", "/bench")` plus the version strings.
    pub fn new() -> Result<CResponder> {
        // SAFETY: NUL-terminated static strings.
        let ptr = unsafe { ffi::cops_responder_new(c"bench".as_ptr(), c"/bench".as_ptr()) };
        if ptr.is_null() {
            return Err(err!("cops_responder_new returned NULL"));
        }
        // SAFETY: ptr is live; static strings.
        unsafe {
            let _ = ffi::cops_responder_set_version(
                ptr,
                c"1.4.0".as_ptr(),
                c"a1b2c3d".as_ptr(),
                c"372".as_ptr(),
            );
        }
        debug_assert_eq!(msgs::COPS_URI.as_bytes(), COPS_URI.to_bytes());
        Ok(CResponder {
            ptr,
            reply: vec![0u8; 512],
        })
    }

    /// One `cops_responder_handle` call; returns the reply length, or the
    /// status when it is not `COPS_OK`.
    pub fn handle(
        &mut self,
        method: &CStr,
        uri: &CStr,
        replyto: Option<&CStr>,
        body: &[u8],
    ) -> std::result::Result<usize, ffi::cops_status> {
        let mut len = 0usize;
        // SAFETY: live responder; NUL-terminated strings; body and reply valid
        // for their lengths.
        let st = unsafe {
            ffi::cops_responder_handle(
                self.ptr,
                method.as_ptr(),
                uri.as_ptr(),
                replyto.map_or(std::ptr::null(), CStr::as_ptr),
                body.as_ptr(),
                body.len(),
                self.reply.as_mut_ptr().cast::<c_char>(),
                self.reply.len(),
                &mut len,
            )
        };
        match st {
            ffi::cops_status::COPS_OK => Ok(len),
            other => Err(other),
        }
    }
}

impl CResponder {
    /// One `cops_responder_tick` call.
    pub fn tick(&mut self) -> Result<()> {
        // SAFETY: live responder.
        match unsafe { ffi::cops_responder_tick(self.ptr) } {
            ffi::cops_status::COPS_OK => Ok(()),
            other => Err(err!("cops_responder_tick: {other:?}")),
        }
    }
}

impl Drop for CResponder {
    fn drop(&mut self) {
        // SAFETY: ptr came from cops_responder_new and is freed once.
        unsafe { ffi::cops_responder_free(self.ptr) };
    }
}
