//! Local flat-earth coordinates around a centre: metres east and north.
//!
//! An equirectangular projection is within a fraction of a metre over the tens of kilometres a
//! fleet scenario covers, which is far below GPS noise.

/// Metres per degree of latitude (WGS84 mean).
const M_PER_DEG_LAT: f64 = 111_132.0;

/// The projection centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Origin {
    pub lat: f64,
    pub lon: f64,
}

impl Origin {
    fn m_per_deg_lon(&self) -> f64 {
        M_PER_DEG_LAT * self.lat.to_radians().cos()
    }

    /// `(lat, lon)` to metres `(east, north)`.
    pub fn to_local(&self, lat: f64, lon: f64) -> (f64, f64) {
        (
            (lon - self.lon) * self.m_per_deg_lon(),
            (lat - self.lat) * M_PER_DEG_LAT,
        )
    }

    /// Metres `(east, north)` to `(lat, lon)`.
    pub fn to_geo(&self, x: f64, y: f64) -> (f64, f64) {
        (
            self.lat + y / M_PER_DEG_LAT,
            self.lon + x / self.m_per_deg_lon(),
        )
    }

    /// Distance in metres between two points near the origin.
    pub fn distance(&self, a: (f64, f64), b: (f64, f64)) -> f64 {
        let (ax, ay) = self.to_local(a.0, a.1);
        let (bx, by) = self.to_local(b.0, b.1);
        (ax - bx).hypot(ay - by)
    }
}
