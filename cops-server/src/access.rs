//! Who may send COPS control requests (`set ourUri/control/<name>`: inhibit,
//! resume): `controlUsers`, or by default root and the user COPS runs as,
//! resolved to what the broker stamps on a message (the sender's user name,
//! or its numeric uid when the uid has no name), so an entry given as a name
//! or as a uid matches either stamp.

use std::ffi::CStr;

use crate::kill::Users;

/// The stamps the engine accepts for `configured` users (`None`: root and
/// the user COPS runs as); `Err` names an entry that is no user of this host.
pub fn control_stamps(configured: Option<&[String]>) -> Result<Vec<String>, String> {
    let mut users = Users::default();
    let mut out = Vec::new();
    let mut add = |uid: u32, entry: Option<&str>| {
        let mut stamps = vec![uid.to_string()];
        stamps.extend(name_of(uid));
        stamps.extend(entry.map(str::to_owned));
        for s in stamps {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    };
    match configured {
        None => {
            add(0, Some("root"));
            // SAFETY: geteuid has no failure mode.
            add(unsafe { libc::geteuid() }, None);
        }
        Some(list) => {
            for entry in list {
                let uid = users
                    .uid(entry)
                    .ok_or_else(|| format!("{entry:?} is no user of this host"))?;
                add(uid, Some(entry));
            }
        }
    }
    Ok(out)
}

/// The user name of `uid` (`getpwuid_r(3)`), if it has one.
pub fn name_of(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: an all-zero passwd is valid; getpwuid_r fills it and points
        // its strings into `buf`, which outlives their use below.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid struct, buffer and out pointer.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
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
        if rc != 0 || out.is_null() || pw.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name points to a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pw.pw_name) };
        return name.to_str().ok().map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_root_and_ourselves() {
        let s = control_stamps(None).unwrap();
        assert!(
            s.contains(&"root".to_owned()) && s.contains(&"0".to_owned()),
            "{s:?}"
        );
        // SAFETY: no failure mode.
        let me = unsafe { libc::geteuid() };
        assert!(s.contains(&me.to_string()), "{s:?}");
    }

    #[test]
    fn names_and_uids_match_either_stamp() {
        let s = control_stamps(Some(&["0".into()])).unwrap();
        assert_eq!(s, ["0", "root"]);
        let s = control_stamps(Some(&["root".into()])).unwrap();
        assert_eq!(s, ["0", "root"]);
        // A uid without a name is stamped as the number.
        let s = control_stamps(Some(&["4000000".into()])).unwrap();
        assert_eq!(s, ["4000000"]);
        assert_eq!(control_stamps(Some(&[])).unwrap(), Vec::<String>::new());
        let e = control_stamps(Some(&["no-such-user-of-cops".into()])).unwrap_err();
        assert!(e.contains("no user of this host"), "{e}");
    }
}
