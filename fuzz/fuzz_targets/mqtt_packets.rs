#![no_main]
// See `tributary_gateway::fuzz::mqtt_packets`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::mqtt_packets(data));
