//! `geofence`: enter, exit and dwell events for positions against the polygons of a GeoJSON
//! file.
//!
//! The zones are the file's `Polygon` and `MultiPolygon` features (a `FeatureCollection`), each
//! named by its `name` property (1 to 64 of `A-Z a-z 0-9 _ . -`); a polygon's later rings are
//! holes. Positions are `[lon, lat]` as GeoJSON has them, tested by ray casting on the plane,
//! which is exact enough for depots and plants far from the poles and the antimeridian.
//!
//! Per device, on event time: a position inside a zone the device was not in emits `enter`; one
//! outside a zone it was in emits `exit`; staying inside for `dwell_ms` emits `dwell` once. A
//! fix whose `hdop` is above `max_hdop` (or has none, when `max_hdop` is set) changes nothing,
//! so a noisy fix at the edge does not flap. The emitted event is the position that caused it,
//! with headers `geofence` (the zone), `geofence-event` and `geofence-since-ms` (when the device
//! entered).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tributary_protocol::{Body, Event};

use super::derived::Derived;

/// A named zone: polygons, each an outer ring and holes, of `(lon, lat)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub polygons: Vec<Vec<Vec<(f64, f64)>>>,
}

/// A geofence rule's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub zones: Arc<Vec<Zone>>,
    pub dwell_ms: Option<u64>,
    pub max_hdop: Option<f64>,
}

/// The zones a device is in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inside {
    /// `(zone, entered at, dwell emitted)`.
    pub zones: Vec<(String, u64, bool)>,
}

/// Reads the zones of a GeoJSON file; the error says what is wrong with it.
pub fn load(path: &Path) -> Result<Vec<Zone>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The zones of GeoJSON text.
pub fn parse(text: &str) -> Result<Vec<Zone>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let features = match doc.get("type").and_then(|t| t.as_str()) {
        Some("FeatureCollection") => doc
            .get("features")
            .and_then(|f| f.as_array())
            .cloned()
            .ok_or("a FeatureCollection without features")?,
        Some("Feature") => vec![doc.clone()],
        _ => return Err("not a GeoJSON FeatureCollection or Feature".into()),
    };
    let mut zones: Vec<Zone> = Vec::new();
    for (i, f) in features.iter().enumerate() {
        let name = f
            .pointer("/properties/name")
            .and_then(|n| n.as_str())
            .ok_or(format!("feature {i} has no \"name\" property"))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(format!(
                "feature {i}: zone name {name:?} is not 1 to 64 of A-Z a-z 0-9 _ . -"
            ));
        }
        if zones.iter().any(|z| z.name == name) {
            return Err(format!("feature {i}: zone {name:?} appears twice"));
        }
        let geometry = f
            .get("geometry")
            .ok_or(format!("zone {name:?} has no geometry"))?;
        let polar = f
            .pointer("/properties/polar")
            .and_then(|p| p.as_bool())
            .unwrap_or(false);
        let coordinates = geometry.get("coordinates");
        let polygons = match (geometry.get("type").and_then(|t| t.as_str()), coordinates) {
            (Some("Polygon"), Some(c)) => vec![polygon(c, name)?],
            (Some("MultiPolygon"), Some(serde_json::Value::Array(ps))) => ps
                .iter()
                .map(|p| polygon(p, name))
                .collect::<Result<_, _>>()?,
            (other, _) => {
                return Err(format!(
                    "zone {name:?}: a {} geometry; Polygon or MultiPolygon needed",
                    other.unwrap_or("missing")
                ))
            }
        };
        if !polar {
            check_not_swapped(&polygons).map_err(|problem| format!("zone {name:?}: {problem}"))?;
        }
        zones.push(Zone {
            name: name.to_owned(),
            polygons,
        });
    }
    if zones.is_empty() {
        return Err("no zones".into());
    }
    Ok(zones)
}

fn polygon(value: &serde_json::Value, name: &str) -> Result<Vec<Vec<(f64, f64)>>, String> {
    let bad = || format!("zone {name:?}: a polygon is a list of rings of [lon, lat] positions");
    let rings = value.as_array().ok_or_else(bad)?;
    if rings.is_empty() {
        return Err(bad());
    }
    rings
        .iter()
        .map(|ring| {
            let points: Vec<(f64, f64)> = ring
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|p| match p.as_array().map(|a| a.as_slice()) {
                    Some([lon, lat, ..]) => match (lon.as_f64(), lat.as_f64()) {
                        (Some(lon), Some(lat)) if lon.is_finite() && lat.is_finite() => {
                            Ok((lon, lat))
                        }
                        _ => Err(bad()),
                    },
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?;
            if points.len() < 4 {
                return Err(format!(
                    "zone {name:?}: a ring needs at least 4 positions (the last repeats the first)"
                ));
            }
            check_ring(&points).map_err(|problem| format!("zone {name:?}: {problem}"))?;
            Ok(points)
        })
        .collect()
}

/// Rings longer than this are not checked for self-intersection (the check is quadratic).
const MAX_CHECKED_RING: usize = 2000;

/// The mistakes that would make a zone silently wrong: positions off the globe (most often
/// longitude and latitude swapped), a ring not closed (RFC 7946 §3.1.6: the last position
/// repeats the first), and a ring that crosses itself (a "bow tie": inside and outside are
/// then not what was drawn).
fn check_ring(points: &[(f64, f64)]) -> Result<(), String> {
    for &(lon, lat) in points {
        if !(-90.0..=90.0).contains(&lat) {
            let hint = if (-90.0..=90.0).contains(&lon) && (-180.0..=180.0).contains(&lat) {
                ": longitude and latitude look swapped; GeoJSON positions are [longitude, latitude]"
            } else {
                ""
            };
            return Err(format!(
                "position [{lon}, {lat}] has a latitude outside -90..90{hint}"
            ));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(format!(
                "position [{lon}, {lat}] has a longitude outside -180..180"
            ));
        }
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    if first != last {
        return Err(format!(
            "a ring is not closed: its last position {last:?} must repeat its first {first:?} \
             (RFC 7946 §3.1.6)"
        ));
    }
    if points.len() <= MAX_CHECKED_RING {
        let n = points.len() - 1; // segments
        for i in 0..n {
            for j in i + 1..n {
                // Neighbours share an end; the last segment neighbours the first.
                if j == i + 1 || (i == 0 && j == n - 1) {
                    continue;
                }
                let (a, b) = (points[i], points[i + 1]);
                let (c, d) = (points[j], points[j + 1]);
                if segments_cross(a, b, c, d) {
                    return Err(format!(
                        "a ring crosses itself (segment {a:?}-{b:?} crosses {c:?}-{d:?}): \
                         draw it without a \"bow tie\""
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Beyond this latitude (the polar circles) a zone is unusual enough to check for the usual
/// mistake: `[lat, lon]` written for `[lon, lat]`.
const POLAR_CIRCLE: f64 = 66.56;

/// Refuses a zone all of whose positions lie beyond a polar circle when, read the other way
/// round, they would all lie outside them: almost always `[latitude, longitude]` written for
/// GeoJSON's `[longitude, latitude]` (New York as `[40.7, -74.0]` gives a latitude of -74, in
/// Antarctica, which the range check alone accepts). A zone that really is polar says so
/// with `"polar": true` in its properties.
fn check_not_swapped(polygons: &[Vec<Vec<(f64, f64)>>]) -> Result<(), String> {
    let points = || polygons.iter().flatten().flatten();
    let polar = points().all(|&(_, lat)| lat.abs() > POLAR_CIRCLE);
    let swapped_fits = points().all(|&(lon, _)| lon.abs() <= POLAR_CIRCLE);
    match (polar, points().next()) {
        (true, Some(&(lon, lat))) if swapped_fits => Err(format!(
            "every position lies beyond a polar circle (the first, [{lon}, {lat}], at latitude \
             {lat}): longitude and latitude look swapped; GeoJSON positions are [longitude, \
             latitude], so this one would be [{lat}, {lon}]. A zone that really is polar: add \
             \"polar\": true to its properties"
        )),
        _ => Ok(()),
    }
}

/// Whether segments `ab` and `cd` cross or touch.
fn segments_cross(a: (f64, f64), b: (f64, f64), c: (f64, f64), d: (f64, f64)) -> bool {
    let orient = |p: (f64, f64), q: (f64, f64), r: (f64, f64)| {
        let v = (q.0 - p.0) * (r.1 - p.1) - (q.1 - p.1) * (r.0 - p.0);
        if v > 0.0 {
            1
        } else if v < 0.0 {
            -1
        } else {
            0
        }
    };
    let on = |p: (f64, f64), q: (f64, f64), r: (f64, f64)| {
        r.0 >= p.0.min(q.0) && r.0 <= p.0.max(q.0) && r.1 >= p.1.min(q.1) && r.1 <= p.1.max(q.1)
    };
    let (o1, o2, o3, o4) = (
        orient(a, b, c),
        orient(a, b, d),
        orient(c, d, a),
        orient(c, d, b),
    );
    (o1 != o2 && o3 != o4)
        || (o1 == 0 && on(a, b, c))
        || (o2 == 0 && on(a, b, d))
        || (o3 == 0 && on(c, d, a))
        || (o4 == 0 && on(c, d, b))
}

/// Whether `(lon, lat)` is inside `ring` (ray casting; points on the edge may go either way).
fn in_ring(ring: &[(f64, f64)], (x, y): (f64, f64)) -> bool {
    let mut inside = false;
    let mut j = ring.len() - 1;
    for i in 0..ring.len() {
        let ((xi, yi), (xj, yj)) = (ring[i], ring[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

impl Zone {
    pub fn contains(&self, point: (f64, f64)) -> bool {
        self.polygons.iter().any(|rings| {
            rings.first().is_some_and(|outer| in_ring(outer, point))
                && !rings[1..].iter().any(|hole| in_ring(hole, point))
        })
    }
}

/// Runs one event; returns the enter, exit and dwell events it causes.
pub fn step(spec: &Spec, inside: &mut Inside, event: &Event) -> Vec<Derived> {
    let Body::Position(p) = &event.body else {
        return Vec::new();
    };
    if let Some(max) = spec.max_hdop {
        if p.hdop.is_none_or(|h| f64::from(h) > max) {
            return Vec::new();
        }
    }
    let point = (p.lon, p.lat);
    let t = event.time_ms;
    let mut out = Vec::new();
    let emit = |zone: &str, what: &str, since: u64| Derived {
        event: event.clone(),
        first_seq: event.seq,
        count: 1,
        headers: vec![
            ("geofence".to_owned(), zone.to_owned()),
            ("geofence-event".to_owned(), what.to_owned()),
            ("geofence-since-ms".to_owned(), since.to_string()),
        ],
        tag: Some(format!("{zone}.{what}")),
    };
    for zone in spec.zones.iter() {
        let now_in = zone.contains(point);
        let was = inside.zones.iter().position(|(z, _, _)| z == &zone.name);
        match (was, now_in) {
            (None, true) => {
                inside.zones.push((zone.name.clone(), t, false));
                out.push(emit(&zone.name, "enter", t));
            }
            (Some(i), false) => {
                let (_, since, _) = inside.zones.remove(i);
                out.push(emit(&zone.name, "exit", since));
            }
            (Some(i), true) => {
                let (_, since, dwelt) = &mut inside.zones[i];
                if !*dwelt && spec.dwell_ms.is_some_and(|d| t.saturating_sub(*since) >= d) {
                    *dwelt = true;
                    out.push(emit(&zone.name, "dwell", *since));
                }
            }
            (None, false) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_protocol::{FixQuality, Position};

    const DEPOT: &str = r#"{"type": "FeatureCollection", "features": [
      {"type": "Feature", "properties": {"name": "depot"},
       "geometry": {"type": "Polygon", "coordinates": [
         [[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1], [13.0, 52.0]],
         [[13.04, 52.04], [13.06, 52.04], [13.06, 52.06], [13.04, 52.06], [13.04, 52.04]]
       ]}}
    ]}"#;

    fn fix(seq: u64, t: u64, lon: f64, lat: f64, hdop: f32) -> Event {
        Event {
            device_id: "truck".into(),
            seq,
            time_ms: t,
            body: Body::Position(Position {
                lat,
                lon,
                alt_m: None,
                speed_mps: None,
                heading_deg: None,
                hdop: Some(hdop),
                satellites: None,
                fix: FixQuality::Gps,
            }),
        }
    }

    #[test]
    fn enter_dwell_and_exit_once_each_and_a_noisy_fix_changes_nothing() {
        let spec = Spec {
            zones: Arc::new(parse(DEPOT).unwrap()),
            dwell_ms: Some(60_000),
            max_hdop: Some(2.0),
        };
        let track = [
            fix(1, 0, 12.9, 52.05, 1.0),       // outside
            fix(2, 10_000, 13.02, 52.05, 1.0), // enter
            fix(3, 20_000, 12.9, 52.05, 9.0),  // a noisy fix outside: ignored
            fix(4, 70_000, 13.02, 52.02, 1.0), // 60 s inside: dwell
            fix(5, 80_000, 13.05, 52.05, 1.0), // in the hole: exit
            fix(6, 90_000, 13.09, 52.09, 1.0), // enter again
        ];
        let mut inside = Inside::default();
        let events: Vec<(u64, String)> = track
            .iter()
            .flat_map(|e| step(&spec, &mut inside, e))
            .map(|d| (d.event.seq, d.headers[1].1.clone()))
            .collect();
        assert_eq!(
            events,
            [
                (2, "enter".to_owned()),
                (4, "dwell".to_owned()),
                (5, "exit".to_owned()),
                (6, "enter".to_owned())
            ]
        );
    }

    #[test]
    fn bad_geojson_is_refused_saying_why() {
        for (text, says) in [
            ("{", "not JSON"),
            (r#"{"type": "Point"}"#, "not a GeoJSON FeatureCollection"),
            (
                r#"{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": []}}"#,
                "no \"name\"",
            ),
            (
                r#"{"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Point", "coordinates": [1, 2]}}"#,
                "a Point geometry",
            ),
            (
                r#"{"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Polygon", "coordinates": [[[1, 2], [3, 4], [1, 2]]]}}"#,
                "at least 4 positions",
            ),
            (
                r#"{"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}"#,
                "not closed",
            ),
            (
                // Tokyo as [lat, lon]: a latitude of 139.7.
                r#"{"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Polygon", "coordinates": [[[35.6, 139.7], [35.7, 139.7], [35.7, 139.8], [35.6, 139.7]]]}}"#,
                "look swapped",
            ),
            (
                r#"{"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}"#,
                "crosses itself",
            ),
            (
                // New York as [lat, lon]: a latitude of -74, in range but in Antarctica.
                r#"{"type": "Feature", "properties": {"name": "nyc"}, "geometry": {"type": "Polygon", "coordinates": [[[40.70, -74.02], [40.70, -73.97], [40.75, -73.97], [40.75, -74.02], [40.70, -74.02]]]}}"#,
                "look swapped; GeoJSON positions are [longitude, latitude], so this one would be [-74.02, 40.7]",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        // A depot that really is polar (Longyearbyen, Svalbard, at 78 N) is asked to say so, and
        // accepted when it does.
        let lyr = |polar: &str| {
            parse(&format!(
                r#"{{"type": "Feature", "properties": {{"name": "lyr"{polar}}}, "geometry": {{"type": "Polygon", "coordinates": [[[15.5, 78.2], [15.7, 78.2], [15.7, 78.3], [15.5, 78.2]]]}}}}"#
            ))
        };
        assert!(lyr("").unwrap_err().contains("add \"polar\": true"));
        lyr(r#", "polar": true"#).unwrap();
    }
}
