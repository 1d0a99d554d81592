#![no_main]
//! See `trustwatch::fuzz::tls_stream` for the input format.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trustwatch::fuzz::tls_stream(data);
});
