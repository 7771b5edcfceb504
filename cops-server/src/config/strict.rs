//! JSON into a [`Value`], refusing duplicate keys. `serde_json` keeps the last
//! of two equal keys without a word; a configuration saying `"killOnHang": true`
//! and later `"killOnHang": false` does not say what its reader thinks.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why the text is not a configuration's JSON.
#[derive(Debug)]
pub(super) struct JsonError {
    /// The duplicated key, if that is the problem.
    pub(super) key: Option<String>,
    /// What is wrong, with the line and column.
    pub(super) message: String,
}

/// Marks the message of a duplicate-key error so the key can be taken back out.
const DUP: &str = "duplicate key ";

/// Parses `text`; a duplicate key anywhere (top level or inside a process) is an error.
pub(super) fn from_str(text: &str) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let strict = Strict::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            let shown = e.to_string();
            match shown.strip_prefix(DUP) {
                Some(rest) => {
                    let key = rest.split('\u{0}').next().unwrap_or_default().to_owned();
                    JsonError {
                        message: format!(
                            "duplicate key (line {}, column {}): JSON readers keep only one of the values, so the file does not say what it seems to; keep one",
                            e.line(),
                            e.column()
                        ),
                        key: Some(key),
                    }
                }
                None => JsonError {
                    key: None,
                    message: format!("not valid JSON: {shown}"),
                },
            }
        })?;
    Ok(strict.0)
}

/// A [`Value`] built by a visitor that refuses duplicate object keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // The NUL ends the key inside the message (keys cannot hold one
                // unescaped, and an escaped one only shortens this hint).
                return Err(de::Error::custom(format!("{DUP}{key}\u{0}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_json() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9"}"#;
        let v = from_str(text).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn duplicate_keys_are_named_with_their_place() {
        let e = from_str("{\"a\":1,\n \"a\":2}").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("a"));
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = from_str(r#"{"processList":[{"name":"x","killOnHang":true,"killOnHang":false}]}"#)
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("killOnHang"));
        let e = from_str(r#"{"a":1} trailing"#).unwrap_err();
        assert_eq!(e.key, None);
        assert!(e.message.starts_with("not valid JSON"), "{}", e.message);
    }
}
