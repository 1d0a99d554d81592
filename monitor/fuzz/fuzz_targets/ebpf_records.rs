#![no_main]
//! See `trustwatch::fuzz::ebpf_records` for the input format.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trustwatch::fuzz::ebpf_records(data);
});
