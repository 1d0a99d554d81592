#![no_main]
//! See `trustwatch::fuzz::file_reader` for the input format.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trustwatch::fuzz::file_reader(data);
});
