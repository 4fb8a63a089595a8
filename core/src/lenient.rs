//! Reading JSON whose field types are not to be trusted, borrowed from the
//! text and without building it: what the webhooks read of a review.
//!
//! `Obj` and `List` say whether a field held an object, a list, `null`
//! or another type, so a caller can name the field that is wrong instead of
//! failing on the first surprise; `Text` and `Flag` read a string or a
//! bool when that is what is there, and absent otherwise (as
//! `Value::as_str` would); `Entries` keeps a map's values as raw text, to
//! read further only what is needed. Wrong-type values are consumed with
//! `IgnoredAny`: they cost a scan, not a tree.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A field that should hold a JSON object read as `T`.
#[derive(Default)]
pub(crate) enum Obj<T> {
    #[default]
    Absent,
    Null,
    /// Another JSON type.
    Wrong,
    Is(T),
}

impl<T> Obj<T> {
    /// The object, if it is one.
    pub fn get(self) -> Option<T> {
        match self {
            Obj::Is(t) => Some(t),
            _ => None,
        }
    }
}

/// A field that should hold a JSON list of `T`.
#[derive(Default)]
pub(crate) enum List<T> {
    #[default]
    Absent,
    Null,
    Wrong,
    Is(Vec<T>),
}

impl<T> List<T> {
    /// The elements, or none when it is not a list.
    pub fn items(self) -> Vec<T> {
        match self {
            List::Is(v) => v,
            _ => Vec::new(),
        }
    }
}

/// A field read as a string when it is one, else absent.
#[derive(Default)]
pub(crate) struct Text<'a>(pub Option<Cow<'a, str>>);

/// A field read as a bool when it is one, else false.
#[derive(Default)]
pub(crate) struct Flag(pub bool);

/// A field read as a whole number when it is one (an integral JSON number
/// that fits an `i64`), else absent: a securityContext's `runAsUser`.
#[derive(Default, Clone, Copy)]
pub(crate) struct Int(pub Option<i64>);

/// A field read as a bool when it is one, else absent (unlike [`Flag`],
/// `false` and absent differ: a container's `runAsNonRoot: false`
/// overrides its pod's `true`).
#[derive(Default, Clone, Copy)]
pub(crate) struct Bool(pub Option<bool>);

/// A map's entries, keys read, values kept as their raw text: annotations,
/// of which stash reads one or two among any number of the user's; the
/// fields of a container or volume, read further only as far as needed.
pub(crate) struct Entries<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

/// Consumes whatever value is left, for the wrong-type arms.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The scalar arms every visitor here shares: `$wrong` for any of them.
macro_rules! scalars {
    ($value:ty, $wrong:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok($wrong)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok($wrong)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok($wrong)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok($wrong)
        }
    };
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars!(Obj<T>, Obj::Wrong);
            fn visit_str<E>(self, _: &str) -> Result<Obj<T>, E> {
                Ok(Obj::Wrong)
            }
            fn visit_unit<E>(self) -> Result<Obj<T>, E> {
                Ok(Obj::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Obj<T>, A::Error> {
                drain_seq(seq).map(|()| Obj::Wrong)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj::Is)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars!(List<T>, List::Wrong);
            fn visit_str<E>(self, _: &str) -> Result<List<T>, E> {
                Ok(List::Wrong)
            }
            fn visit_unit<E>(self) -> Result<List<T>, E> {
                Ok(List::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(List::Is(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List<T>, A::Error> {
                drain_map(map).map(|()| List::Wrong)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars!(Text<'de>, Text(None));
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text<'de>, A::Error> {
                drain_seq(seq).map(|()| Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'de>, A::Error> {
                drain_map(map).map(|()| Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_unit<E>(self) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Flag, A::Error> {
                drain_seq(seq).map(|()| Flag(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Flag, A::Error> {
                drain_map(map).map(|()| Flag(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// A visitor for a scalar read as `Some` from one JSON type and `None` from
/// any other (wrong-type containers drained, never built).
macro_rules! one_scalar {
    ($ty:ident, $what:literal, { $($arms:tt)* }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    $($arms)*
                    fn visit_str<E>(self, _: &str) -> Result<$ty, E> {
                        Ok($ty(None))
                    }
                    fn visit_unit<E>(self) -> Result<$ty, E> {
                        Ok($ty(None))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$ty, A::Error> {
                        drain_seq(seq).map(|()| $ty(None))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        drain_map(map).map(|()| $ty(None))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

one_scalar!(Int, "any JSON value", {
    fn visit_bool<E>(self, _: bool) -> Result<Int, E> {
        Ok(Int(None))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Int, E> {
        Ok(Int(Some(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Int, E> {
        Ok(Int(i64::try_from(v).ok()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Int, E> {
        Ok(Int(None))
    }
});

one_scalar!(Bool, "any JSON value", {
    fn visit_bool<E>(self, v: bool) -> Result<Bool, E> {
        Ok(Bool(Some(v)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Bool, E> {
        Ok(Bool(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Bool, E> {
        Ok(Bool(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Bool, E> {
        Ok(Bool(None))
    }
});

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push((key.unwrap_or_default(), value));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Entries<'a> {
    /// The value of `key` when it is a string (the last, if the key repeats,
    /// as a JSON tree of the same text would hold).
    pub fn string(&self, key: &str) -> Option<Cow<'a, str>> {
        serde_json::from_str::<Text<'a>>(self.raw(key)?.get())
            .ok()?
            .0
    }

    /// The raw text of `key`'s value (the last, if the key repeats).
    pub fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, raw)| *raw)
    }

    /// The entries as a JSON object (a repeated key: its last value).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut map = serde_json::Map::new();
        for (k, raw) in &self.0 {
            map.insert(k.to_string(), serde_json::from_str(raw.get())?);
        }
        Ok(serde_json::Value::Object(map))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        let keys = &self.0;
        (0..keys.len())
            .filter(|&i| !keys[..i].iter().any(|(k, _)| *k == keys[i].0))
            .count()
    }
}
