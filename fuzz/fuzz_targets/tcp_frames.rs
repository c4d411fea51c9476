#![no_main]
// See `tributary_gateway::fuzz::tcp_frames`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::tcp_frames(data));
