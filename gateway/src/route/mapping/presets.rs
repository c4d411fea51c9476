//! The shipped mappings (`preset = "..."`): TOML files in `config/presets/`, compiled in, in the
//! same form as a `[[mappings]]` entry, so each file documents its preset.

use serde::Deserialize;

use super::RawMapping;

/// Every preset: name and file.
pub const PRESETS: [(&str, &str); 4] = [
    (
        "tasmota",
        include_str!("../../../../config/presets/tasmota.toml"),
    ),
    (
        "zigbee2mqtt",
        include_str!("../../../../config/presets/zigbee2mqtt.toml"),
    ),
    (
        "shelly",
        include_str!("../../../../config/presets/shelly.toml"),
    ),
    (
        "owntracks",
        include_str!("../../../../config/presets/owntracks.toml"),
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    mappings: Vec<RawMapping>,
}

/// The mappings of preset `name`, or what the presets are.
pub fn load(name: &str) -> Result<Vec<RawMapping>, String> {
    let (_, text) = PRESETS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        format!("no preset {name:?}; the presets are {}", names.join(", "))
    })?;
    toml::from_str::<File>(text)
        .map(|f| f.mappings)
        .map_err(|e| format!("preset {name:?} does not parse: {e}"))
}
