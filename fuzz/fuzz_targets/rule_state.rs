#![no_main]
// See `tributary_gateway::fuzz::rule_state`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::rule_state(data));
