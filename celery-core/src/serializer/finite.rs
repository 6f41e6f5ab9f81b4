//! serde_json's `to_value` for what a task sends, refusing the floats JSON has no form for.
//!
//! serde_json writes NaN and ±infinity as `null`: a task argument or result would reach the other
//! side changed, with no error. Python's json writes them as `NaN`/`Infinity`, which no strict
//! JSON reader (this crate's included) accepts. So they are refused where the value is made, with
//! the error naming the value.

use serde::ser::{self, Serialize, Serializer};
use serde_json::Value;

/// `serde_json::to_value`, with an error for a non-finite float anywhere in the value.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, serde_json::Error> {
    value.serialize(Finite(serde_json::value::Serializer))
}

/// A serializer (or one of its compound parts) that checks floats and passes everything on.
struct Finite<S>(S);

/// A value to serialize through [`Finite`].
struct Checked<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Checked<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Finite(serializer))
    }
}

fn finite<E: ser::Error>(value: f64) -> Result<(), E> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(E::custom(format!(
            "{value} has no JSON form (serde_json would send null); send it as a string"
        )))
    }
}

macro_rules! pass {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<Self::Ok, Self::Error> {
            self.0.$method($($arg),*)
        }
    )*};
}

/// Starts a compound value whose parts go through [`Finite`] in turn.
macro_rules! open {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $part:ident;)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<Self::$part, Self::Error> {
            self.0.$method($($arg),*).map(Finite)
        }
    )*};
}

impl<S: Serializer> Serializer for Finite<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Finite<S::SerializeSeq>;
    type SerializeTuple = Finite<S::SerializeTuple>;
    type SerializeTupleStruct = Finite<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Finite<S::SerializeTupleVariant>;
    type SerializeMap = Finite<S::SerializeMap>;
    type SerializeStruct = Finite<S::SerializeStruct>;
    type SerializeStructVariant = Finite<S::SerializeStructVariant>;

    pass! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        finite(f64::from(v))?;
        self.0.serialize_f32(v)
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        finite(v)?;
        self.0.serialize_f64(v)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Checked(value))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Checked(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Checked(value))
    }

    open! {
        serialize_seq(len: Option<usize>) -> SerializeSeq;
        serialize_tuple(len: usize) -> SerializeTuple;
        serialize_tuple_struct(name: &'static str, len: usize) -> SerializeTupleStruct;
        serialize_tuple_variant(
            name: &'static str, index: u32, variant: &'static str, len: usize
        ) -> SerializeTupleVariant;
        serialize_map(len: Option<usize>) -> SerializeMap;
        serialize_struct(name: &'static str, len: usize) -> SerializeStruct;
        serialize_struct_variant(
            name: &'static str, index: u32, variant: &'static str, len: usize
        ) -> SerializeStructVariant;
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! compound {
    ($($trait:ident :: $method:ident $(($key:ident))?;)*) => {$(
        impl<S: ser::$trait> ser::$trait for Finite<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn $method<T: Serialize + ?Sized>(
                &mut self,
                $($key: &'static str,)?
                value: &T,
            ) -> Result<(), S::Error> {
                self.0.$method($($key,)? &Checked(value))
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element;
    SerializeTuple::serialize_element;
    SerializeTupleStruct::serialize_field;
    SerializeTupleVariant::serialize_field;
    SerializeStruct::serialize_field(key);
    SerializeStructVariant::serialize_field(key);
}

impl<S: ser::SerializeMap> ser::SerializeMap for Finite<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Checked(key))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Checked(value))
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn finite_values_are_serde_jsons_and_non_finite_floats_are_errors() {
        #[derive(serde::Serialize)]
        struct Point {
            x: f64,
            tags: Vec<(String, Option<f32>)>,
        }
        let point = Point {
            x: 1.5,
            tags: vec![("a".into(), Some(2.5)), ("b".into(), None)],
        };
        assert_eq!(
            to_value(&point).unwrap(),
            serde_json::to_value(&point).unwrap()
        );
        assert_eq!(
            to_value(&json!({"k": [1, "x", null]})).unwrap(),
            json!({"k": [1, "x", null]})
        );

        let bad = Point {
            x: 1.0,
            tags: vec![("nan".into(), Some(f32::NAN))],
        };
        let error = to_value(&bad).unwrap_err().to_string();
        assert!(error.contains("NaN has no JSON form"), "{error}");
        assert!(to_value(&f64::INFINITY).is_err());
        assert!(to_value(&vec![1.0, f64::NEG_INFINITY]).is_err());
        let map: BTreeMap<String, f64> = [("k".to_owned(), f64::NAN)].into();
        assert!(to_value(&map).is_err());
    }
}
