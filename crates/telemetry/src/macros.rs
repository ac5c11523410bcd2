//! The signal macros. Every macro first makes one relaxed atomic load (the
//! instance's level gate); only if some handler could want the signal does
//! it look at filters, and only if one does are the message, data and error
//! expressions evaluated.

/// Emits an event: an id (a `&'static str`) with optional data, at `Info`
/// unless a `level:` is given.
///
/// ```
/// use telemere_lite::{event, Level, Telemetry};
/// let tel = Telemetry::new();
/// event!("my-app/started");
/// event!("my-app/user-created", serde_json::json!({"user": 7}));
/// event!(tel: &tel, "my-app/started");
/// event!(tel: &tel, "my-app/order", ("book", 2));
/// event!(tel: &tel, level: Level::Warn, "my-app/slow", 1500);
/// ```
#[macro_export]
macro_rules! event {
    (tel: $tel:expr, level: $lvl:expr, $id:expr $(,)?) => {
        $crate::__emit!($tel, $crate::Kind::Event, $lvl, ::core::option::Option::Some($id),
            $crate::Payload::default())
    };
    (tel: $tel:expr, level: $lvl:expr, $id:expr, $data:expr $(,)?) => {
        $crate::__emit!($tel, $crate::Kind::Event, $lvl, ::core::option::Option::Some($id),
            $crate::Payload { data: ::core::option::Option::Some($crate::__data!($data)),
                ..::core::default::Default::default() })
    };
    (tel: $tel:expr, $id:expr $(,)?) => {
        $crate::event!(tel: $tel, level: $crate::Level::Info, $id)
    };
    (tel: $tel:expr, $id:expr, $data:expr $(,)?) => {
        $crate::event!(tel: $tel, level: $crate::Level::Info, $id, $data)
    };
    (level: $lvl:expr, $id:expr $(,)?) => {
        $crate::event!(tel: $crate::global(), level: $lvl, $id)
    };
    (level: $lvl:expr, $id:expr, $data:expr $(,)?) => {
        $crate::event!(tel: $crate::global(), level: $lvl, $id, $data)
    };
    ($id:expr $(,)?) => {
        $crate::event!(tel: $crate::global(), level: $crate::Level::Info, $id)
    };
    ($id:expr, $data:expr $(,)?) => {
        $crate::event!(tel: $crate::global(), level: $crate::Level::Info, $id, $data)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __emit {
    ($tel:expr, $kind:expr, $lvl:expr, $id:expr, $payload:expr) => {{
        let __tel: &$crate::Telemetry = $tel;
        let __lvl: $crate::Level = $lvl;
        if __tel.level_enabled(__lvl) {
            static __CALLSITE: $crate::Callsite = $crate::Callsite {
                module: ::core::module_path!(),
                file: ::core::file!(),
                line: ::core::line!(),
            };
            __tel.__emit($kind, __lvl, $id, &__CALLSITE, || $payload);
        }
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __data {
    ($data:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ViaLazy as _, ViaSerialize as _, ViaValue as _};
        $crate::__private::DataWrap($data).__into_data()
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __error {
    ($err:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ViaDisplay as _, ViaError as _};
        $crate::__private::ErrWrap(&$err).__capture()
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($lvl:expr; tel: $tel:expr, $($rest:tt)+) => { $crate::__log_msg!($tel, $lvl; $($rest)+) };
    ($lvl:expr; $($rest:tt)+) => { $crate::__log_msg!($crate::global(), $lvl; $($rest)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_msg {
    // A literal message is borrowed, never copied.
    ($tel:expr, $lvl:expr; $msg:literal $($rest:tt)*) => {
        $crate::__log_tail!($tel, $lvl, $crate::__private::Cow::Borrowed($msg); $($rest)*)
    };
    ($tel:expr, $lvl:expr; $msg:expr) => {
        $crate::__log_tail!($tel, $lvl, $crate::__message!($msg);)
    };
    ($tel:expr, $lvl:expr; $msg:expr, $($rest:tt)*) => {
        $crate::__log_tail!($tel, $lvl, $crate::__message!($msg); , $($rest)*)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __message {
    ($msg:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ViaDisplayMsg as _, ViaString as _};
        $crate::__private::MsgWrap($msg).__into_msg()
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_tail {
    ($tel:expr, $lvl:expr, $msg:expr; $(,)?) => {
        $crate::__emit!(
            $tel,
            $crate::Kind::Log,
            $lvl,
            ::core::option::Option::None,
            $crate::Payload {
                message: ::core::option::Option::Some($msg),
                ..::core::default::Default::default()
            }
        )
    };
    ($tel:expr, $lvl:expr, $msg:expr; , err: $err:expr $(,)?) => {
        $crate::__emit!(
            $tel,
            $crate::Kind::Log,
            $lvl,
            ::core::option::Option::None,
            $crate::Payload {
                message: ::core::option::Option::Some($msg),
                data: ::core::option::Option::None,
                error: ::core::option::Option::Some($crate::__error!($err))
            }
        )
    };
    ($tel:expr, $lvl:expr, $msg:expr; , $data:expr, err: $err:expr $(,)?) => {
        $crate::__emit!(
            $tel,
            $crate::Kind::Log,
            $lvl,
            ::core::option::Option::None,
            $crate::Payload {
                message: ::core::option::Option::Some($msg),
                data: ::core::option::Option::Some($crate::__data!($data)),
                error: ::core::option::Option::Some($crate::__error!($err))
            }
        )
    };
    ($tel:expr, $lvl:expr, $msg:expr; , $data:expr $(,)?) => {
        $crate::__emit!(
            $tel,
            $crate::Kind::Log,
            $lvl,
            ::core::option::Option::None,
            $crate::Payload {
                message: ::core::option::Option::Some($msg),
                data: ::core::option::Option::Some($crate::__data!($data)),
                error: ::core::option::Option::None
            }
        )
    };
}

/// Emits a `Trace` log signal: `trace!(msg)`, `trace!(msg, data)`,
/// `trace!(msg, data, err: &e)`, `trace!(msg, err: &e)`, each optionally
/// starting with `tel: &instance,`. See [`info!`](crate::info).
#[macro_export]
macro_rules! trace { ($($t:tt)+) => { $crate::__log!($crate::Level::Trace; $($t)+) }; }

/// Emits a `Debug` log signal. See [`info!`](crate::info).
#[macro_export]
macro_rules! debug { ($($t:tt)+) => { $crate::__log!($crate::Level::Debug; $($t)+) }; }

/// Emits an `Info` log signal.
///
/// The message is a string literal (borrowed, never copied), a `String`
/// (moved) or anything `Display`. The data is any `serde::Serialize` value
/// (a `serde_json::Value` is kept as is). The error is anything
/// `std::error::Error` (its `source()` chain is kept) or `Display`.
///
/// ```
/// use telemere_lite::{error, info, Telemetry};
/// let tel = Telemetry::new();
/// let e = std::io::Error::other("disk full");
/// info!("started");
/// info!("listening", serde_json::json!({"port": 3000}));
/// info!(tel: &tel, "started");
/// info!(tel: &tel, format!("{} workers", 4), [1, 2, 3]);
/// error!(tel: &tel, "write failed", serde_json::json!({"file": "a.log"}), err: &e);
/// error!("write failed", err: &e);
/// ```
#[macro_export]
macro_rules! info { ($($t:tt)+) => { $crate::__log!($crate::Level::Info; $($t)+) }; }

/// Emits a `Warn` log signal. See [`info!`](crate::info).
#[macro_export]
macro_rules! warn { ($($t:tt)+) => { $crate::__log!($crate::Level::Warn; $($t)+) }; }

/// Emits an `Error` log signal. See [`info!`](crate::info).
#[macro_export]
macro_rules! error { ($($t:tt)+) => { $crate::__log!($crate::Level::Error; $($t)+) }; }

/// Emits a `Fatal` log signal. See [`info!`](crate::info).
#[macro_export]
macro_rules! fatal { ($($t:tt)+) => { $crate::__log!($crate::Level::Fatal; $($t)+) }; }

/// Emits a `Report` log signal. See [`info!`](crate::info).
#[macro_export]
macro_rules! report { ($($t:tt)+) => { $crate::__log!($crate::Level::Report; $($t)+) }; }
