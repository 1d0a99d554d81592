#![no_main]
//! See `trustwatch::fuzz::certs` for the input format.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trustwatch::fuzz::certs(data);
});
