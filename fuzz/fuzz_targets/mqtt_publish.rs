#![no_main]
// See `tributary_gateway::fuzz::mqtt_publish`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary_gateway::fuzz::mqtt_publish(data));
