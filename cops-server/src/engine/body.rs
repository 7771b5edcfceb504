//! The body of a [`super::Transmit`]: small bodies (the heartbeat counter of
//! step 1, an empty `get`) are kept inline, so a heartbeat round allocates
//! nothing; larger ones (stats, answers, events) are a `Vec`.

use std::fmt;
use std::ops::Deref;

/// Longest body kept inline (a u64 counter has at most 20 digits).
const INLINE: usize = 22;

/// A message body: bytes, inline when small.
#[derive(Clone)]
pub struct Body(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Body {
    /// The empty body.
    pub const fn empty() -> Body {
        Body(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }

    /// A decimal counter (step 1 of a round: `set U/cops/cops_heartbeat H`),
    /// without allocating.
    pub fn counter(mut n: u64) -> Body {
        let mut digits = [0u8; 20];
        let mut k = digits.len();
        loop {
            k -= 1;
            digits[k] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Body::from(&digits[k..])
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(v) => v,
        }
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body(Repr::Heap(v))
    }
}

impl From<&[u8]> for Body {
    fn from(b: &[u8]) -> Body {
        if b.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            // In range: at most INLINE (22) bytes.
            Body(Repr::Inline {
                len: b.len() as u8,
                bytes,
            })
        } else {
            Body(Repr::Heap(b.to_vec()))
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::from(s.into_bytes())
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Body {}

impl PartialEq<[u8]> for Body {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_bytes() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Body {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_bytes() == &other[..]
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_sizes() {
        for n in [0, 1, 9, 10, 4242, u64::MAX] {
            assert_eq!(Body::counter(n).as_bytes(), n.to_string().as_bytes());
        }
        assert!(matches!(Body::counter(u64::MAX).0, Repr::Inline { .. }));
        assert_eq!(Body::empty().len(), 0);
        let big = vec![b'x'; 100];
        assert_eq!(Body::from(&big[..]), Body::from(big.clone()));
        assert_eq!(Body::from(&b"abc"[..]), b"abc");
        assert_eq!(format!("{:?}", Body::from(&b"12"[..])), "\"12\"");
    }
}
