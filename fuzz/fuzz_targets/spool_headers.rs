#![no_main]
// See `tributary_gateway::fuzz::spool_headers`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::spool_headers(data));
