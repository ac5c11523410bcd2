//! Support for the macros (not public API). The `Via*` traits pick, at
//! compile time, the cheapest way to capture a macro argument ("autoref
//! specialization": an impl on the value itself wins over one on a
//! reference to it).

use std::fmt::Display;

pub use std::borrow::Cow;

use crate::signal::{Data, ErrorInfo};

#[derive(Debug)]
pub struct DataWrap<T>(pub T);

/// A `serde_json::Value` is moved in as is.
pub trait ViaValue {
    fn __into_data(self) -> Data;
}

impl ViaValue for DataWrap<serde_json::Value> {
    #[inline]
    fn __into_data(self) -> Data {
        Data::Value(self.0)
    }
}

/// Data wrapped in [`Lazy`](crate::Lazy) is moved in, serialized later.
pub trait ViaLazy {
    fn __into_data(self) -> Data;
}

impl<T: serde::Serialize + Send + Sync + 'static> ViaLazy for DataWrap<crate::Lazy<T>> {
    #[inline]
    fn __into_data(self) -> Data {
        Data::Lazy(crate::signal::LazyValue::new(self.0 .0))
    }
}

/// Anything else serializable is serialized to compact JSON text now.
pub trait ViaSerialize {
    fn __into_data(self) -> Data;
}

impl<T: serde::Serialize> ViaSerialize for &DataWrap<T> {
    #[inline]
    fn __into_data(self) -> Data {
        Data::from_serialize(&self.0)
    }
}

#[derive(Debug)]
pub struct ErrWrap<'a, T: ?Sized>(pub &'a T);

/// A `std::error::Error` keeps its source chain.
pub trait ViaError {
    fn __capture(self) -> ErrorInfo;
}

impl<T: std::error::Error + ?Sized> ViaError for ErrWrap<'_, T> {
    fn __capture(self) -> ErrorInfo {
        ErrorInfo::from_error(self.0)
    }
}

/// Anything `Display` is captured as its text.
pub trait ViaDisplay {
    fn __capture(self) -> ErrorInfo;
}

impl<T: Display + ?Sized> ViaDisplay for &ErrWrap<'_, T> {
    fn __capture(self) -> ErrorInfo {
        ErrorInfo::from_display(self.0)
    }
}

#[derive(Debug)]
pub struct MsgWrap<T>(pub T);

/// A `String` message is moved in.
pub trait ViaString {
    fn __into_msg(self) -> Cow<'static, str>;
}

impl ViaString for MsgWrap<String> {
    #[inline]
    fn __into_msg(self) -> Cow<'static, str> {
        Cow::Owned(self.0)
    }
}

/// Anything else `Display` is formatted.
pub trait ViaDisplayMsg {
    fn __into_msg(self) -> Cow<'static, str>;
}

impl<T: Display> ViaDisplayMsg for &MsgWrap<T> {
    #[inline]
    fn __into_msg(self) -> Cow<'static, str> {
        Cow::Owned(self.0.to_string())
    }
}
