//! The ingest path in this process, for what drives sessions without a gateway around them:
//! the in-process session tests and the `tcp_session` fuzz target. Compiled for tests and with
//! the `fuzz` feature only.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::Ingest;
use crate::identity::{Authority, RawAuth, Sources};
use crate::observe::stats::Stats;
use crate::route::{RawRoutes, Router};
use tributary_spool::{RawSpool, Spool};

/// A gateway's ingest path in this process, on a fresh spool in `dir`, for devices on loopback
/// (anonymous): what the session harness and the in-process session tests run against.
pub(crate) fn local_ingest(dir: &Path) -> (Ingest, Spool) {
    // The parts' defaults, as an empty config file gives them, with the spool in `dir`.
    let spool = tributary_spool::config::validate(
        RawSpool {
            group_commit_wait_ms: Some(0),
            ..RawSpool::default()
        },
        dir,
    )
    .expect("the default spool section");
    let stats = Stats::default();
    let (spool, _) = Spool::open(&spool, stats.clone()).expect("a fresh spool");
    // One for the process: it starts password-checking threads.
    static AUTHORITY: OnceLock<Arc<Authority>> = OnceLock::new();
    let authority = AUTHORITY
        .get_or_init(|| {
            let auth = crate::identity::config::auth(RawAuth::default()).expect("default [auth]");
            let sources = Sources {
                auth: &auth,
                tls: None,
                trackers: None,
            };
            Arc::new(Authority::load(sources).expect("anonymous loopback"))
        })
        .clone();
    let routes = crate::route::config::routes(RawRoutes::default()).expect("default routes");
    let router = Router::new(routes).expect("default routes");
    (Ingest::new(spool.clone(), router, stats, authority), spool)
}
