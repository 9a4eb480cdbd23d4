//! A serializer wrapper that writes the entries of protobuf maps sorted by key (numerically
//! for integer keys), as Go's protojson does; prost-reflect keeps maps in a `HashMap`, whose
//! order changes from one message to the next.
//!
//! prost-reflect serializes a message with `serialize_map(None)` and everything map-like
//! with a length: protobuf maps, `Struct` (already sorted) and `Any`'s `{"@type", "value"}`
//! (already in key order). Maps with a length are buffered as `serde_json::Value`s, sorted and
//! written; messages pass through in field order.

use std::cmp::Ordering;
use std::fmt::Display;

use serde::ser::{
    Error as _, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant,
    SerializeTuple, SerializeTupleStruct, SerializeTupleVariant, Serializer,
};
use serde_json::Value;

/// Wraps a serializer.
pub(crate) struct Sorted<S>(pub(crate) S);

/// Wraps a value so that it is serialized through [`Sorted`].
struct Wrap<'a, T: ?Sized>(&'a T);

impl<T: ?Sized + Serialize> Serialize for Wrap<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Sorted(serializer))
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
                self.0.$method(v)
            }
        )*
    };
}

impl<S: Serializer> Serializer for Sorted<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Sorted<S::SerializeSeq>;
    type SerializeTuple = Sorted<S::SerializeTuple>;
    type SerializeTupleStruct = Sorted<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Sorted<S::SerializeTupleVariant>;
    type SerializeMap = SortedMap<S::SerializeMap>;
    type SerializeStruct = Sorted<S::SerializeStruct>;
    type SerializeStructVariant = Sorted<S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        // A buffered `Value` holds an f64: go through the shortest decimal of the f32 so
        // that 0.1f32 is still written as 0.1.
        match v.to_string().parse::<f64>() {
            Ok(d) if v.is_finite() => self.0.serialize_f64(d),
            _ => self.0.serialize_f32(v),
        }
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Wrap(v))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Wrap(v))
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wrap(v))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Sorted)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Sorted)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Sorted)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Sorted)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Ok(SortedMap {
            buffer: len.map(Vec::with_capacity),
            key: None,
            inner: self.0.serialize_map(len)?,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Sorted)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Sorted)
    }

    fn collect_str<T: ?Sized + Display>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(v)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compounds whose parts are values only: each part is wrapped, the end passed on.
macro_rules! wrap_parts {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl<S: $trait> $trait for Sorted<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn $method<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), S::Error> {
                self.0.$method(&Wrap(v))
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    )*};
}

wrap_parts!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl<S: SerializeStruct> SerializeStruct for Sorted<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), S::Error> {
        self.0.serialize_field(key, &Wrap(v))
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

impl<S: SerializeStructVariant> SerializeStructVariant for Sorted<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), S::Error> {
        self.0.serialize_field(key, &Wrap(v))
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

/// A map: entries pass through (`buffer` is `None`) or are buffered to be sorted.
pub(crate) struct SortedMap<M> {
    inner: M,
    buffer: Option<Vec<(Value, Value)>>,
    key: Option<Value>,
}

impl<M: SerializeMap> SerializeMap for SortedMap<M> {
    type Ok = M::Ok;
    type Error = M::Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), M::Error> {
        if self.buffer.is_none() {
            return self.inner.serialize_key(&Wrap(key));
        }
        let key = key
            .serialize(Sorted(serde_json::value::Serializer))
            .map_err(M::Error::custom)?;
        self.key = Some(key);
        Ok(())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), M::Error> {
        let Some(buffer) = &mut self.buffer else {
            return self.inner.serialize_value(&Wrap(v));
        };
        let v = v
            .serialize(Sorted(serde_json::value::Serializer))
            .map_err(M::Error::custom)?;
        let key = self
            .key
            .take()
            .ok_or_else(|| M::Error::custom("map value without a key"))?;
        buffer.push((key, v));
        Ok(())
    }

    fn end(mut self) -> Result<M::Ok, M::Error> {
        if let Some(mut entries) = self.buffer.take() {
            entries.sort_by(|a, b| compare_keys(&a.0, &b.0));
            for (key, value) in &entries {
                self.inner.serialize_entry(key, value)?;
            }
        }
        self.inner.end()
    }
}

/// Integer keys numerically, everything else by its text.
fn compare_keys(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(a), Value::String(b)) => match (a.parse::<i128>(), b.parse::<i128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        _ => a.to_string().cmp(&b.to_string()),
    }
}
