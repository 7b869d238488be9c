#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bistream_fuzz::proxy(data));
