//! `SharedStr`: a record's text that is a constant or shared, so copies of it cost no allocation.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text that records repeat: a host's name, a step's, an operation, `exit 0`. A rehearsal of
/// thousands of hosts keeps hundreds of thousands of records; each holds a reference, not a copy.
/// Compares, hashes, prints and serializes as the `str` it holds.
#[derive(Clone)]
pub struct SharedStr(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl SharedStr {
    /// A constant: no allocation at all.
    pub const fn from_static(s: &'static str) -> SharedStr {
        SharedStr(Repr::Static(s))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

/// Texts kept once however often they recur: a rehearsal's records repeat a few thousand
/// descriptions and results tens of thousands of times. Bounded: past `Interner::MAX` texts it
/// starts again (the texts already given out stay where they are), so a long run whose texts do
/// not recur keeps no more than that many extra references.
#[derive(Default)]
pub struct Interner(Mutex<crate::FastSet<SharedStr>>);

impl Interner {
    pub const MAX: usize = 1 << 16;

    /// How many texts it holds now.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `text` as a shared text: a constant stays one, anything else is the copy kept already
    /// or a new one.
    pub fn shared(&self, text: Cow<'static, str>) -> SharedStr {
        let text = match text {
            Cow::Borrowed(s) => return SharedStr::from_static(s),
            Cow::Owned(s) => s,
        };
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = set.get(text.as_str()) {
            return s.clone();
        }
        if set.len() >= Self::MAX {
            set.clear();
        }
        let s = SharedStr::from(text);
        set.insert(s.clone());
        s
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> SharedStr {
        SharedStr(Repr::Shared(Arc::from(s)))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> SharedStr {
        SharedStr(Repr::Shared(Arc::from(s)))
    }
}

/// A constant stays one; an owned text is moved into a new shared copy (no interning).
impl From<Cow<'static, str>> for SharedStr {
    fn from(s: Cow<'static, str>) -> SharedStr {
        match s {
            Cow::Borrowed(s) => SharedStr::from_static(s),
            Cow::Owned(s) => SharedStr::from(s),
        }
    }
}

impl From<Arc<str>> for SharedStr {
    fn from(s: Arc<str>) -> SharedStr {
        SharedStr(Repr::Shared(s))
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> String {
        s.as_str().to_string()
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedStr {
    /// As `str` prints: width, fill and precision apply (tables pad host names).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &SharedStr) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for SharedStr {}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, other: &SharedStr) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SharedStr {
    fn cmp(&self, other: &SharedStr) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl PartialEq<String> for SharedStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<SharedStr> for str {
    fn eq(&self, other: &SharedStr) -> bool {
        self == other.as_str()
    }
}
impl PartialEq<SharedStr> for &str {
    fn eq(&self, other: &SharedStr) -> bool {
        *self == other.as_str()
    }
}
impl PartialEq<SharedStr> for String {
    fn eq(&self, other: &SharedStr) -> bool {
        self == other.as_str()
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SharedStr, D::Error> {
        String::deserialize(d).map(SharedStr::from)
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_prints_and_serializes_as_its_text() {
        let a = SharedStr::from_static("exit 0");
        let b = SharedStr::from(String::from("exit 0"));
        assert_eq!(a, b);
        let owned = String::from("exit 0");
        assert_eq!(a, "exit 0");
        assert_eq!("exit 0", a);
        assert_eq!(a, owned);
        assert_eq!(format!("{a} {b:?}"), "exit 0 \"exit 0\"");
        assert_eq!(format!("[{a:<8}][{a:>7.4}]"), "[exit 0  ][   exit]");
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"exit 0\"");
        assert_eq!(serde_json::from_str::<SharedStr>("\"exit 0\"").unwrap(), a);
        let c = b.clone();
        assert_eq!(c.as_ptr(), b.as_ptr(), "a copy shares the text");
    }

    #[test]
    fn an_interner_gives_one_copy_of_a_text_and_stays_bounded() {
        let i = Interner::default();
        let a = i.shared(Cow::Owned("run: x".into()));
        let b = i.shared(Cow::Owned("run: x".into()));
        assert_eq!(a.as_ptr(), b.as_ptr());
        let k = i.shared(Cow::Borrowed("exit 0"));
        assert_eq!(k.as_ptr(), "exit 0".as_ptr(), "a constant is not copied");
        for n in 0..Interner::MAX + 10 {
            i.shared(Cow::Owned(n.to_string()));
        }
        assert!(i.0.lock().unwrap().len() <= Interner::MAX);
        let c = i.shared(Cow::Owned("run: x".into()));
        assert_eq!(
            c, a,
            "the same text, a new copy after the set started again"
        );
    }
}
