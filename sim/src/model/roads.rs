//! The road network vehicles drive on.
//!
//! Either generated inside a bounding box around a centre, or read from a waypoints file.
//!
//! **Generated** (`[area]` with `centre` and `half_size_km`): a jittered grid with 400 m blocks,
//! like a planned city. Every fourth street is an arterial (50 km/h), the rest residential
//! (30 km/h), and the boundary is a ring road (80 km/h). One arterial block in twenty is a
//! tunnel (no GNSS fix), and blocks within a quarter of the box around the centre are urban
//! canyon (high HDOP). The grid is drawn from the scenario seed, so every vehicle of a run
//! drives the same town.
//!
//! **Waypoints** (`[area] waypoints = "file.toml"`): `[[road]]` tables, each a polyline of
//! `[lat, lon]` points with a `speed_limit_kmh`, optional `tunnel = [[from, to], ...]` point
//! index ranges and `canyon = true`. Roads join where they share a point exactly.
//! `config/roads-berlin.toml` is an example.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;

use super::geo::Origin;

/// One directed-agnostic road segment between two nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub a: usize,
    pub b: usize,
    pub length_m: f64,
    pub limit_mps: f64,
    pub tunnel: bool,
    pub canyon: bool,
}

/// Nodes in local metres and the edges between them.
#[derive(Debug, Clone)]
pub struct RoadNetwork {
    pub origin: Origin,
    pub nodes: Vec<(f64, f64)>,
    pub edges: Vec<Edge>,
    /// Per node, the edges that touch it.
    pub adjacent: Vec<Vec<usize>>,
}

/// Why a waypoints file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoadsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: road {index}: {what}")]
    Road {
        path: String,
        index: usize,
        what: String,
    },
    #[error("{path}: no roads (a road needs two distinct points)")]
    Empty { path: String },
}

const BLOCK_M: f64 = 400.0;

pub const KMH: f64 = 1.0 / 3.6;

impl RoadNetwork {
    /// A grid town within `half_size_m` of `origin`.
    pub fn grid(origin: Origin, half_size_m: f64, rng: &mut StdRng) -> Self {
        let n = ((2.0 * half_size_m / BLOCK_M).floor() as usize).max(1) + 1;
        let step = 2.0 * half_size_m / (n - 1) as f64;
        let jitter = step * 0.12;
        let mut nodes = Vec::with_capacity(n * n);
        for row in 0..n {
            for col in 0..n {
                let border = row == 0 || col == 0 || row == n - 1 || col == n - 1;
                let (jx, jy) = if border {
                    (0.0, 0.0)
                } else {
                    (
                        rng.random_range(-jitter..jitter),
                        rng.random_range(-jitter..jitter),
                    )
                };
                nodes.push((
                    -half_size_m + col as f64 * step + jx,
                    -half_size_m + row as f64 * step + jy,
                ));
            }
        }
        let mut net = Self {
            origin,
            nodes,
            edges: Vec::new(),
            adjacent: vec![Vec::new(); n * n],
        };
        let canyon_r = half_size_m / 4.0;
        for row in 0..n {
            for col in 0..n {
                let here = row * n + col;
                // East along the row, north along the column.
                let links = [
                    (col + 1 < n).then(|| (here + 1, row)),
                    (row + 1 < n).then(|| (here + n, col)),
                ];
                for (there, line) in links.into_iter().flatten() {
                    let ring = line == 0 || line == n - 1;
                    let arterial = line % 4 == 0;
                    let limit_kmh = if ring {
                        80.0
                    } else if arterial {
                        50.0
                    } else {
                        30.0
                    };
                    let tunnel = arterial && !ring && rng.random_bool(0.05);
                    let (ax, ay) = net.nodes[here];
                    let (bx, by) = net.nodes[there];
                    let mid = ((ax + bx) / 2.0, (ay + by) / 2.0);
                    let canyon = mid.0.abs() < canyon_r && mid.1.abs() < canyon_r;
                    net.add_edge(here, there, limit_kmh * KMH, tunnel, canyon);
                }
            }
        }
        net
    }

    /// The network in a waypoints file; its first point is the projection origin.
    pub fn from_file(path: &Path) -> Result<Self, RoadsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RoadsError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    /// The network in a waypoints document; `path` names it in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, RoadsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            road: Vec<Road>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Road {
            #[serde(default)]
            #[allow(dead_code)]
            name: String,
            speed_limit_kmh: f64,
            points: Vec<[f64; 2]>,
            #[serde(default)]
            tunnel: Vec<[usize; 2]>,
            #[serde(default)]
            canyon: bool,
        }
        let file: File = toml::from_str(text).map_err(|e| RoadsError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let bad = |index: usize, what: String| RoadsError::Road {
            path: path.to_owned(),
            index,
            what,
        };
        let first = file
            .road
            .first()
            .and_then(|r| r.points.first())
            .ok_or_else(|| RoadsError::Empty {
                path: path.to_owned(),
            })?;
        let origin = Origin {
            lat: first[0],
            lon: first[1],
        };
        let mut net = Self {
            origin,
            nodes: Vec::new(),
            edges: Vec::new(),
            adjacent: Vec::new(),
        };
        let mut index_of: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, road) in file.road.iter().enumerate() {
            if !(road.speed_limit_kmh > 0.0 && road.speed_limit_kmh <= 200.0) {
                return Err(bad(
                    i,
                    format!(
                        "speed_limit_kmh is {}, expected more than 0 and at most 200",
                        road.speed_limit_kmh
                    ),
                ));
            }
            if road.points.len() < 2 {
                return Err(bad(i, "needs at least two points".into()));
            }
            let mut ids = Vec::with_capacity(road.points.len());
            for (j, [lat, lon]) in road.points.iter().copied().enumerate() {
                if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
                    return Err(bad(
                        i,
                        format!("point {j} [{lat}, {lon}] is not a position"),
                    ));
                }
                let key = (lat.to_bits(), lon.to_bits());
                let id = *index_of.entry(key).or_insert_with(|| {
                    net.nodes.push(origin.to_local(lat, lon));
                    net.adjacent.push(Vec::new());
                    net.nodes.len() - 1
                });
                ids.push(id);
            }
            for [from, to] in &road.tunnel {
                if from >= to || *to >= road.points.len() {
                    return Err(bad(
                        i,
                        format!("tunnel [{from}, {to}] is not a range of its point indices"),
                    ));
                }
            }
            for (j, pair) in ids.windows(2).enumerate() {
                let tunnel = road.tunnel.iter().any(|[f, t]| j >= *f && j < *t);
                if pair[0] != pair[1] {
                    net.add_edge(
                        pair[0],
                        pair[1],
                        road.speed_limit_kmh * KMH,
                        tunnel,
                        road.canyon,
                    );
                }
            }
        }
        if net.edges.is_empty() {
            return Err(RoadsError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(net)
    }

    fn add_edge(&mut self, a: usize, b: usize, limit_mps: f64, tunnel: bool, canyon: bool) {
        let (ax, ay) = self.nodes[a];
        let (bx, by) = self.nodes[b];
        let id = self.edges.len();
        self.edges.push(Edge {
            a,
            b,
            length_m: (ax - bx).hypot(ay - by).max(1.0),
            limit_mps,
            tunnel,
            canyon,
        });
        self.adjacent[a].push(id);
        self.adjacent[b].push(id);
    }

    /// The fastest route from node `from` to node `to` (by length over speed limit), as
    /// `(edge, forward)` steps, where `forward` means from the edge's `a` to its `b`. `None` when
    /// `to` cannot be reached; empty when `from == to`. Dijkstra over the network.
    pub fn route(&self, from: usize, to: usize) -> Option<Vec<(usize, bool)>> {
        let n = self.nodes.len();
        if from >= n || to >= n {
            return None;
        }
        // Costs in milliseconds, so they order as integers.
        let mut best = vec![u64::MAX; n];
        let mut via: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut queue = BinaryHeap::new();
        best[from] = 0;
        queue.push(Reverse((0u64, from)));
        while let Some(Reverse((cost, node))) = queue.pop() {
            if node == to {
                break;
            }
            if cost > best[node] {
                continue;
            }
            for &id in &self.adjacent[node] {
                let e = &self.edges[id];
                let other = if e.a == node { e.b } else { e.a };
                let next = cost + (e.length_m / e.limit_mps * 1000.0) as u64;
                if next < best[other] {
                    best[other] = next;
                    via[other] = Some((id, node));
                    queue.push(Reverse((next, other)));
                }
            }
        }
        if best[to] == u64::MAX {
            return None;
        }
        let mut steps = Vec::new();
        let mut at = to;
        while let Some((edge, prev)) = via[at] {
            steps.push((edge, self.edges[edge].a == prev));
            at = prev;
        }
        steps.reverse();
        Some(steps)
    }

    /// The highest speed limit anywhere.
    pub fn max_limit_mps(&self) -> f64 {
        self.edges.iter().map(|e| e.limit_mps).fold(0.0, f64::max)
    }

    /// The bounding box of the nodes: `(min_x, min_y, max_x, max_y)` in metres.
    pub fn bounds(&self) -> (f64, f64, f64, f64) {
        self.nodes.iter().fold(
            (f64::MAX, f64::MAX, f64::MIN, f64::MIN),
            |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        )
    }
}
