//! Mappings against payloads taken from each project's own documentation (see the preset
//! files), and the refusals a user would see.

use super::*;
use serde::Deserialize;

const NOW: i64 = 1_764_000_000_000;

fn mappings(toml_text: &str) -> Mappings {
    #[derive(Deserialize)]
    struct F {
        mappings: Vec<RawMapping>,
    }
    let raw: F = toml::from_str(toml_text).unwrap();
    Mappings::new(validate(&raw.mappings).unwrap())
}

fn preset(name: &str) -> Mappings {
    mappings(&format!("[[mappings]]\npreset = \"{name}\"\n"))
}

fn values(event: &Event) -> Vec<(String, f64, String)> {
    match &event.body {
        Body::Reading(r) => r
            .values
            .iter()
            .map(|v| (v.name.clone(), v.value, v.unit.clone()))
            .collect(),
        Body::Position(_) => panic!("a position"),
    }
}

fn v(name: &str, value: f64, unit: &str) -> (String, f64, String) {
    (name.into(), value, unit.into())
}

#[test]
fn tasmota_bme280_and_energy_telemetry() {
    let m = preset("tasmota");
    let bme = br#"{"Time":"2019-11-03T19:34:28","BME280":{"Temperature":21.3,"Humidity":44.0,"DewPoint":8.5,"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"C"}"#;
    let events = m
        .decode("tele/tasmota_1A2B3C/SENSOR", bme, None, NOW)
        .unwrap();
    assert_eq!(events.len(), 1);
    let (e, session) = &events[0];
    assert_eq!(e.device_id, "tasmota_1A2B3C");
    assert_eq!(
        e.time_ms, NOW as u64,
        "Tasmota's Time has no zone: receive time"
    );
    assert_ne!(*session, 0, "no seq from the device: the gateway's session");
    assert_eq!(
        values(e),
        [
            v("BME280.DewPoint", 8.5, "Cel"),
            v("BME280.Humidity", 44.0, "%"),
            v("BME280.Pressure", 1013.2, "hPa"),
            v("BME280.Temperature", 21.3, "Cel"),
        ]
    );
    let energy = br#"{"Time":"2021-01-09T14:06:05","ENERGY":{"TotalStartTime":"2020-12-21T11:49:18","Total":2.373,"Yesterday":0.148,"Today":0.072,"Period":0,"Power":12,"ApparentPower":21,"ReactivePower":17,"Factor":0.57,"Voltage":230,"Current":0.091}}"#;
    let events = m.decode("tele/plug-7/SENSOR", energy, None, NOW).unwrap();
    let got = values(&events[0].0);
    assert!(got.contains(&v("ENERGY.Power", 12.0, "W")), "{got:?}");
    assert!(got.contains(&v("ENERGY.Total", 2.373, "kWh")), "{got:?}");
    assert!(got.contains(&v("ENERGY.Factor", 0.57, "")), "{got:?}");
    assert_eq!(got.len(), 10, "every number, no strings: {got:?}");
}

#[test]
fn zigbee2mqtt_device_state() {
    let m = preset("zigbee2mqtt");
    let payload = br#"{"battery":100,"humidity":58.28,"linkquality":65,"power_outage_count":0,"pressure":1008,"temperature":21.35,"voltage":3005,"occupancy":true,"state":"ON"}"#;
    let events = m
        .decode(
            "zigbee2mqtt/0x00158d0001a2b3c4",
            payload,
            Some("z2m-hub"),
            NOW,
        )
        .unwrap();
    let e = &events[0].0;
    assert_eq!(
        e.device_id, "0x00158d0001a2b3c4",
        "a hub writes for its devices"
    );
    assert_eq!(
        values(e),
        [
            v("battery", 100.0, "%"),
            v("humidity", 58.28, "%"),
            v("linkquality", 65.0, ""),
            v("occupancy", 1.0, ""),
            v("power_outage_count", 0.0, ""),
            v("pressure", 1008.0, "hPa"),
            v("temperature", 21.35, "Cel"),
            v("voltage", 3005.0, "mV"),
        ]
    );
    let Undecodable { reason, .. } = m
        .decode("zigbee2mqtt/living room", payload, None, NOW)
        .unwrap_err();
    assert!(reason.contains("device id \"living room\""), "{reason}");
    assert!(
        !m.covers("zigbee2mqtt/bridge/state"),
        "the bridge's own topics are not devices"
    );
}

#[test]
fn shelly_status_and_notifications() {
    let m = preset("shelly");
    let status = br#"{"id":0,"source":"init","output":false,"apower":0.0,"voltage":236.9,"current":0.000,"aenergy":{"total":0.000,"by_minute":[0.000,0.000,0.000],"minute_ts":1654511662},"temperature":{"tC":43.6,"tF":110.5}}"#;
    let events = m
        .decode(
            "shellyplus1pm-441793a4b0a8/status/switch:0",
            status,
            None,
            NOW,
        )
        .unwrap();
    let e = &events[0].0;
    assert_eq!(e.device_id, "shellyplus1pm-441793a4b0a8");
    assert_eq!(
        values(e),
        [
            v("switch_0.aenergy.total", 0.0, "Wh"),
            v("switch_0.apower", 0.0, "W"),
            v("switch_0.current", 0.0, "A"),
            v("switch_0.output", 0.0, ""),
            v("switch_0.temperature.tC", 43.6, "Cel"),
            v("switch_0.temperature.tF", 110.5, "[degF]"),
            v("switch_0.voltage", 236.9, "V"),
        ]
    );
    let notify = br#"{"src":"shellyplus1pm-441793a4b0a8","dst":"shellyplus1pm-441793a4b0a8/events","method":"NotifyStatus","params":{"ts":1654511668.42,"switch:0":{"id":0,"apower":12.3}}}"#;
    let events = m
        .decode("shellyplus1pm-441793a4b0a8/events/rpc", notify, None, NOW)
        .unwrap();
    let e = &events[0].0;
    assert_eq!(e.time_ms, 1_654_511_668_420, "the notification's ts");
    assert_eq!(values(e), [v("switch_0.apower", 12.3, "W")]);
    let other = br#"{"src":"x","method":"NotifyEvent","params":{"ts":1.0}}"#;
    let Undecodable { reason, .. } = m
        .decode("shelly-1/events/rpc", other, None, NOW)
        .unwrap_err();
    assert_eq!(
        reason,
        "mapping shelly-notify: `method` is the string \"NotifyEvent\", not \"NotifyStatus\""
    );
}

/// A whole km/h is a whole number of m/s where it is one: 36 km/h is 10 m/s, not 10.000008
/// (the preset's factor once had six digits).
#[test]
fn owntracks_speed_in_km_h_becomes_exact_metres_per_second() {
    let m = preset("owntracks");
    for (kmh, mps) in [(36, 10.0f32), (72, 20.0), (90, 25.0), (0, 0.0)] {
        let payload = format!(
            r#"{{"_type":"location","batt":80,"acc":5,"lat":52.5,"lon":13.4,"tst":1700000000,"vel":{kmh}}}"#
        );
        let events = m
            .decode("owntracks/jane/phone", payload.as_bytes(), None, NOW)
            .unwrap();
        let Body::Position(p) = &events[0].0.body else {
            panic!("not a position")
        };
        assert_eq!(p.speed_mps, Some(mps), "{kmh} km/h");
    }
}

#[test]
fn owntracks_location_is_a_position_and_a_battery_reading() {
    let m = preset("owntracks");
    let payload = br#"{"_type":"location","tid":"JJ","acc":10,"alt":100,"batt":85,"conn":"w","lat":52.5163,"lon":13.3777,"tst":1700000000,"vel":36,"cog":270,"vac":5}"#;
    let events = m
        .decode("owntracks/jane/phone", payload, None, NOW)
        .unwrap();
    assert_eq!(events.len(), 2);
    let (pos, rd) = (&events[0].0, &events[1].0);
    assert_eq!(pos.device_id, "jane-phone");
    assert_eq!(pos.time_ms, 1_700_000_000_000);
    let Body::Position(p) = &pos.body else {
        panic!("not a position")
    };
    assert_eq!(
        (p.lat, p.lon, p.alt_m, p.heading_deg),
        (52.5163, 13.3777, Some(100.0), Some(270.0))
    );
    assert!(
        (p.speed_mps.unwrap() - 10.0).abs() < 0.001,
        "36 km/h is 10 m/s"
    );
    assert_eq!(
        values(rd),
        [v("battery", 85.0, "%"), v("accuracy", 10.0, "m")]
    );
    assert!(rd.seq > pos.seq, "each event its own seq");
    let lwt = br#"{"_type":"lwt","tst":1700000000}"#;
    let Undecodable { reason, .. } = m
        .decode("owntracks/jane/phone", lwt, None, NOW)
        .unwrap_err();
    assert!(
        reason.contains("`_type` is the string \"lwt\", not \"location\""),
        "{reason}"
    );
}

#[test]
fn a_payload_that_does_not_fit_names_the_path() {
    let m = mappings(
        r#"
        [[mappings]]
        name = "boiler"
        topic = "plant/+/boiler"
        device_id = "boiler-{topic.1}"
        kind = "reading"
        time_path = "at"
        time_format = "rfc3339"
        seq_path = "n"
        values = [{ path = "water.temp", name = "water_temp", unit = "Cel" }]
        "#,
    );
    let ok = br#"{"at":"2026-11-26T12:00:00.250+01:00","n":7,"water":{"temp":61.5}}"#;
    let events = m.decode("plant/3/boiler", ok, None, NOW).unwrap();
    let (e, session) = &events[0];
    assert_eq!((e.device_id.as_str(), e.seq, *session), ("boiler-3", 7, 0));
    assert_eq!(e.time_ms, 1_795_690_800_250);
    let cases: [(&[u8], &str); 6] = [
        (
            br#"{"at":"2026-11-26T12:00:00Z","n":7}"#,
            "mapping boiler: path `water.temp` is missing",
        ),
        (
            br#"{"at":"2026-11-26T12:00:00Z","n":7,"water":{"temp":"hot"}}"#,
            "path `water.temp` is the string \"hot\", not a number",
        ),
        (
            br#"{"at":"yesterday","n":7,"water":{"temp":1}}"#,
            "path `at`: \"yesterday\" is not an RFC 3339 time",
        ),
        (
            br#"{"at":"2026-11-26T12:00:00Z","n":-1,"water":{"temp":1}}"#,
            "path `n` is the number -1, not a seq",
        ),
        (
            br#"{"at":"2026-11-26T12:00:00Z","n":1,"water":{"temp":1e999}}"#,
            "payload is not JSON",
        ),
        (b"\xff", "payload is not JSON"),
    ];
    for (payload, want) in cases {
        let Undecodable { reason, .. } =
            m.decode("plant/3/boiler", payload, None, NOW).unwrap_err();
        assert!(reason.contains(want), "{want:?} in {reason:?}");
    }
}

#[test]
fn a_device_writes_only_as_itself_unless_the_mapping_is_a_hubs() {
    let m = preset("tasmota");
    let payload = br#"{"SI7021":{"Temperature":20.1}}"#;
    assert!(m
        .decode("tele/plug-1/SENSOR", payload, Some("plug-1"), NOW)
        .is_ok());
    let Undecodable {
        device_id: device,
        reason,
    } = m
        .decode("tele/plug-2/SENSOR", payload, Some("plug-1"), NOW)
        .unwrap_err();
    assert_eq!(device.as_deref(), Some("plug-2"));
    assert!(
        reason.contains("is not the connection's \"plug-1\""),
        "{reason}"
    );
}

#[test]
fn assigned_seqs_increase_strictly_across_threads() {
    let seqs = std::sync::Arc::new(AssignedSeqs::new());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = seqs.clone();
            std::thread::spawn(move || (0..1000).map(|_| s.next().0).collect::<Vec<_>>())
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        let mine = h.join().unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "each caller sees them increase"
        );
        all.extend(mine);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 4000, "no seq issued twice");
}

#[test]
fn bad_mappings_name_the_key() {
    let cases = [
        ("preset = \"sonoff\"", "mappings[0].preset", "the presets are tasmota"),
        ("kind = \"reading\"\nnumeric = true\ndevice_id = \"x\"", "mappings[0].topic", "needs an MQTT topic"),
        ("topic = \"a/#/b\"\nkind = \"reading\"", "mappings[0].topic", "not an MQTT filter"),
        ("topic = \"devices/+/x\"", "mappings[0].topic", "Tributary's own format"),
        ("topic = \"a\"\ndevice_id = \"{topic}\"", "mappings[0].device_id", "{topic.N}"),
        ("topic = \"a\"\ndevice_id = \"x\"\nkind = \"event\"", "mappings[0].kind", "not \"reading\""),
        ("topic = \"a\"\ndevice_id = \"x\"\nkind = \"reading\"", "mappings[0].values", "needs `values`"),
        ("topic = \"a\"\ndevice_id = \"x\"\nkind = \"position\"\nlat = \"la\"", "mappings[0].lon", "lat and lon"),
        ("topic = \"a\"\ndevice_id = \"x\"\nkind = \"reading\"\nvalues = [{path=\"t\", name=\"bad name\"}]", "mappings[0].values", "bad name"),
        ("preset = \"tasmota\"\ntime_path = \"Time\"", "mappings[0].time_format", "epoch_s"),
        ("preset = \"tasmota\"\nidentity = \"anyone\"", "mappings[0].identity", "\"mapped\""),
    ];
    #[derive(Deserialize)]
    struct F {
        mappings: Vec<RawMapping>,
    }
    for (body, key, problem) in cases {
        let raw: F = toml::from_str(&format!("[[mappings]]\n{body}\n")).unwrap();
        let err = validate(&raw.mappings).unwrap_err();
        assert_eq!(err.key, key, "{body}");
        assert!(err.problem.contains(problem), "{body}: {}", err.problem);
    }
}

#[test]
fn every_preset_parses_and_keys_override_it() {
    for (name, _) in presets::PRESETS {
        assert!(!presets::load(name).unwrap().is_empty(), "{name}");
    }
    let m = mappings("[[mappings]]\npreset = \"tasmota\"\ntopic = \"site4/tele/+/SENSOR\"\ndevice_id = \"{topic.2}\"\n");
    assert!(m.covers("site4/tele/x/SENSOR"));
    assert!(!m.covers("tele/x/SENSOR"));
}

#[test]
fn the_examples_in_config_gateway_toml_are_valid_mappings() {
    let block = crate::config::shipped_examples("# [[mappings]]", Some("# Sparkplug B"));
    #[derive(Deserialize)]
    struct F {
        mappings: Vec<RawMapping>,
    }
    let raw: F = toml::from_str(&block).unwrap();
    let names: Vec<String> = validate(&raw.mappings)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["tasmota", "boiler", "tracker"]);
}
