#![no_main]
// See `tributary_gateway::fuzz::rule_expr`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::rule_expr(data));
