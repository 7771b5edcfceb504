//! User names to uids (the broker stamps a sender's user name, or its numeric
//! uid when it has no name; `expectedUser` is either), cached: the user
//! database is read once per name, not once per reply.

use std::collections::HashMap;
use std::ffi::CString;

/// Names remembered at most (the cache starts over past it).
const MAX_NAMES: usize = 1024;

/// A cache of user names to uids.
#[derive(Debug, Default)]
pub struct Users {
    known: HashMap<String, Option<u32>>,
}

impl Users {
    /// The uid `name` stands for: a number is a uid; a name is looked up in the
    /// user database (`getpwnam_r`); `None` when there is no such user.
    pub fn uid(&mut self, name: &str) -> Option<u32> {
        if let Ok(uid) = name.parse::<u32>() {
            return Some(uid);
        }
        if let Some(&known) = self.known.get(name) {
            return known;
        }
        if self.known.len() >= MAX_NAMES {
            self.known.clear();
        }
        let uid = lookup(name);
        self.known.insert(name.to_owned(), uid);
        uid
    }
}

/// `getpwnam_r(3)`.
fn lookup(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: an all-zero passwd is valid; getpwnam_r fills it and points
        // its strings into `buf`, which outlives the call.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid C string, struct, buffer and out pointer.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr() as *mut libc::c_char,
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !out.is_null()).then_some(pw.pw_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let mut u = Users::default();
        assert_eq!(u.uid("0"), Some(0));
        assert_eq!(u.uid("4242"), Some(4242));
        assert_eq!(u.uid("root"), Some(0), "root is in every user database");
        assert_eq!(u.uid("no-such-user-of-cops-tests"), None);
        assert_eq!(u.uid("no-such-user-of-cops-tests"), None, "cached");
    }
}
