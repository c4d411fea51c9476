#![no_main]
// See `tributary_gateway::fuzz::credentials`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::credentials(data));
