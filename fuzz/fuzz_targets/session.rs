//! Sessions over an in-process engine fed any sequence of frames: see
//! `sente_lite_session::fuzzing::session` for the input format and what is
//! checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sente_lite_session::fuzzing::session(data);
});
