#![no_main]
// See `tributary_gateway::fuzz::teltonika`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::teltonika(data));
