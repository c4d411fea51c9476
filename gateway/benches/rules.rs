//! What rules cost: the spool's durable ingest with five typical rules beside the same load
//! with none, in one run on one disk, and the rule state each device adds.
//!
//! `cargo bench -p tributary-gateway --bench rules`
//!
//! The load is the gateway's: 64 connections, each appending batches of 10 routed readings (the
//! router's records, with their events attached) and waiting for the commit. The rules are a
//! filter, a deadband, a downsample (mean), a hopping window (with a 95th percentile) and a
//! threshold, all selecting every reading. Two sets of readings: typical ones (a temperature
//! drifting slowly, as a station reports it) and a worst case (every reading a change the
//! deadband passes). Each load runs several times, interleaved, and its median run counts. State
//! per device is measured as the bytes of its `device_rule_state` row in the database, and as
//! the heap its states take in memory once the spool loads them (a counting allocator).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use tributary_gateway::config::Config;
use tributary_gateway::observe::stats::Stats;
use tributary_gateway::route::rules::store::RuleStates;
use tributary_gateway::route::rules::RuleSet;
use tributary_gateway::route::Router;
use tributary_protocol::{Body, Event, Reading, SensorValue};
use tributary_spool::SpoolConfig;
use tributary_spool::{Limits, Spool, SpoolDb};

const CONNECTIONS: usize = 64;
const PER_CALL: usize = 10;
const EVENTS: usize = 64_000;
/// Runs of each load; the median counts.
const ROUNDS: usize = 5;

const RULES: &str = r#"
[[rules]]
name = "hot"
type = "filter"
where = "values.temperature > 24 and values.humidity < 60"
topic = "bench.hot"

[[rules]]
name = "by-exception"
type = "deadband"
field = "values.temperature"
absolute = 0.5
heartbeat_ms = 600000
topic = "bench.exception"

[[rules]]
name = "per-minute"
type = "downsample"
interval_ms = 60000
mode = "mean"
topic = "bench.1m"

[[rules]]
name = "stats-5m"
type = "window"
size_ms = 300000
hop_ms = 60000
fields = ["values.temperature", "values.humidity"]
aggregates = ["count", "min", "max", "mean", "p95"]
topic = "bench.5m"

[[rules]]
name = "overheat"
type = "threshold"
when = "values.temperature > 25"
for_ms = 30000
clear = "values.temperature < 23"
topic = "bench.alerts"
"#;

/// Which data the devices send.
#[derive(Clone, Copy)]
enum Data {
    /// As an environmental station reports: temperature drifting by hundredths of a degree a
    /// second around a daily swing, humidity with it. The deadband fires now and then, the
    /// filter and the threshold on warm spells only.
    Typical,
    /// Every reading 0.7 °C from the last (a sawtooth): every rule has work at every event,
    /// the deadband emits each one.
    Worst,
}

fn event(data: Data, device: usize, seq: u64) -> Event {
    // A station every second.
    let temperature = match data {
        Data::Worst => 22.0 + ((seq * 7 + device as u64) % 50) as f64 / 10.0,
        Data::Typical => {
            // A slow swing of ±3 °C (a period of two hours), phase-shifted per device, plus a
            // few hundredths of jitter.
            let t = seq as f64 + device as f64 * 97.0;
            22.0 + 3.0 * (t / 7200.0 * std::f64::consts::TAU).sin()
                + ((seq * 13 + device as u64) % 7) as f64 / 100.0
        }
    };
    Event {
        device_id: format!("station-{device}"),
        seq,
        time_ms: 1_700_000_000_000 + seq * 1_000,
        body: Body::Reading(Reading {
            values: vec![
                SensorValue {
                    name: "temperature".into(),
                    value: temperature,
                    unit: "Cel".into(),
                },
                SensorValue {
                    name: "humidity".into(),
                    value: match data {
                        Data::Worst => 45.0 + (seq % 20) as f64,
                        Data::Typical => 70.0 - 2.0 * (temperature - 22.0),
                    },
                    unit: "%".into(),
                },
            ],
        }),
    }
}

/// Counts the heap bytes the bench's Rust code holds (SQLite allocates through libc's malloc
/// directly, so its caches are not counted), to measure rule state in memory.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to `System` unchanged; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap bytes the rule states of the spool at `dir` take once loaded, per device: what
/// the writer holds in memory for them.
fn state_in_memory(dir: &Path, rules: &RuleSet) -> f64 {
    let mut db = SpoolDb::open(&dir.join("spool.db")).expect("open spool");
    let before = LIVE.load(Ordering::Relaxed);
    db.set_hook(Box::new(RuleStates::new(rules.clone())))
        .expect("load rule states");
    let after = LIVE.load(Ordering::Relaxed);
    // The set's clone is counted too: measure it alone and take it off.
    let set = rules.clone();
    let with_set = LIVE.load(Ordering::Relaxed);
    drop(set);
    let set_alone = with_set - LIVE.load(Ordering::Relaxed);
    (after - before - set_alone) as f64 / CONNECTIONS as f64
}

struct Run {
    rate: f64,
    state_bytes_per_device: f64,
    /// Heap bytes of rule state per device once loaded.
    state_in_memory: f64,
    /// Derived rows stored per device event.
    derived_per_event: f64,
}

fn run(dir: &Path, rules: RuleSet, data: Data) -> Run {
    let config = SpoolConfig {
        path: dir.join("spool.db"),
        group_commit_max_events: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
        group_commit_wait: Duration::ZERO,
        limits: Limits::unlimited(),
        forget_devices_after: Duration::from_secs(30 * 24 * 3600),
    };
    let routes = Config::parse("", Path::new("bench.toml"))
        .expect("default config")
        .routes;
    let router = std::sync::Arc::new(
        Router::new(routes)
            .expect("router")
            .keeping_events(!rules.is_empty()),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let rate = runtime.block_on(async {
        let hook = Box::new(RuleStates::new(rules.clone()));
        let (spool, _) = Spool::open_with(&config, Stats::default(), hook).expect("open spool");
        let per_conn = EVENTS / CONNECTIONS;
        let elapsed = common::drive(&spool, CONNECTIONS, PER_CALL, per_conn, move |c, seq| {
            router.event(event(data, c, seq), 0, None).ok()
        })
        .await;
        let rate = (per_conn * CONNECTIONS) as f64 / elapsed.as_secs_f64();
        spool.close().await;
        rate
    });
    let conn = rusqlite::Connection::open(dir.join("spool.db")).expect("open");
    let state: i64 = conn
        .query_row(
            "SELECT coalesce(sum(length(states) + length(device_id)), 0) FROM device_rule_state",
            [],
            |r| r.get(0),
        )
        .expect("device_rule_state");
    let derived: i64 = conn
        .query_row(
            "SELECT count(*) FROM records WHERE topic LIKE 'bench.%'",
            [],
            |r| r.get(0),
        )
        .expect("derived rows");
    drop(conn);
    Run {
        rate,
        state_bytes_per_device: state as f64 / CONNECTIONS as f64,
        state_in_memory: if rules.is_empty() {
            0.0
        } else {
            state_in_memory(dir, &rules)
        },
        derived_per_event: derived as f64 / EVENTS as f64,
    }
}

fn main() {
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    let config = Config::parse(RULES, Path::new("bench.toml")).expect("the bench's rules");
    let five = config.rules;
    println!(
        "disk: {base}; {EVENTS} readings from {CONNECTIONS} connections, batches of {PER_CALL}; \
         the median of {ROUNDS} runs each"
    );
    let fresh = || tempfile::tempdir_in(&base).expect("dir");
    // Runs of a third of a second are at the mercy of the machine's noise: each load runs
    // ROUNDS times, interleaved, and the median run stands for it.
    let mut rounds: [Vec<Run>; 3] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(run(fresh().path(), RuleSet::default(), Data::Typical));
        rounds[1].push(run(fresh().path(), five.clone(), Data::Typical));
        rounds[2].push(run(fresh().path(), five.clone(), Data::Worst));
    }
    let [none, typical, worst] = rounds.map(|runs| common::median_by(runs, |r| r.rate));
    println!(
        "{:>34} {:>12} {:>8} {:>22}",
        "", "events/s", "ratio", "derived rows per event"
    );
    println!("{:>34} {:>12.0}", "no rules", none.rate);
    for (name, r) in [
        ("five rules, typical readings", &typical),
        ("five rules, every reading changes", &worst),
    ] {
        println!(
            "{name:>34} {:>12.0} {:>8.2} {:>22.2}",
            r.rate,
            r.rate / none.rate,
            r.derived_per_event
        );
    }
    println!(
        "rule state per device (five rules): {:.0} bytes stored, {:.0} bytes of heap in memory",
        typical.state_bytes_per_device, typical.state_in_memory
    );
    println!(
        "{{\"bench\":\"rules\",\"none_eps\":{:.0},\"typical_eps\":{:.0},\"worst_eps\":{:.0},\"state_bytes_per_device\":{:.0},\"state_heap_bytes_per_device\":{:.0}}}",
        none.rate, typical.rate, worst.rate, typical.state_bytes_per_device, typical.state_in_memory
    );
}
