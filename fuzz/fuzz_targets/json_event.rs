#![no_main]
// See `tributary_gateway::fuzz::json_event`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::json_event(data));
