#![no_main]
//! See `trustwatch::fuzz::pipeline` for the input format.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trustwatch::fuzz::pipeline(data);
});
