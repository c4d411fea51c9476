#![no_main]
// See `tributary_gateway::fuzz::tcp_session`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::tcp_session(data));
