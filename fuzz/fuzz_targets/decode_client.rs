//! The frame decoder, `sente_lite_protocol::decode_client`, on any bytes:
//! see `sente_lite_session::fuzzing::decode_client` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sente_lite_session::fuzzing::decode_client(data);
});
