//! `orgplane dev seed`: development data at scale for load tests
//! (`bench/scale.sh`). The rows and their guarantees are the store's
//! (`orgplane_store::Store::seed_orgs`); this batches and reports.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use orgplane_store::Store;

/// Seeds `orgs` orgs numbered from `start`, `batch` per transaction; writes
/// their ids one per line to `ids` when given.
pub async fn seed(store: &Store, orgs: u64, start: u64, batch: u64, ids: Option<&Path>) -> Result<(), String> {
    if batch == 0 {
        return Err("--batch: must be at least 1".into());
    }
    let mut out = match ids {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("--ids {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let started = Instant::now();
    let (mut made, mut subscriptions, mut resources) = (0u64, 0u64, 0u64);
    while made < orgs {
        let count = batch.min(orgs - made);
        let now = time::OffsetDateTime::now_utc();
        let seeded = store.seed_orgs(start + made, count, now).await.map_err(|e| {
            format!(
                "seeding orgs {}..{}: {e} (seeded numbers must not repeat: pass --start past the last run's)",
                start + made,
                start + made + count
            )
        })?;
        if let Some(out) = out.as_mut() {
            for org in &seeded.orgs {
                writeln!(out, "{org}").map_err(|e| format!("--ids: {e}"))?;
            }
        }
        made += count;
        subscriptions += seeded.subscriptions;
        resources += seeded.resources;
        if made % (batch * 50) == 0 && made < orgs {
            eprintln!("… {made} orgs ({:.0}/s)", made as f64 / started.elapsed().as_secs_f64());
        }
    }
    if let Some(mut out) = out {
        out.flush().map_err(|e| format!("--ids: {e}"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {made} orgs (numbers {start}..{}), each with an owner, a membership and 2 resources ({resources} in all); \
         {subscriptions} with an active sandbox subscription to {}; {secs:.1} s, {:.0} orgs/s",
        start + made,
        orgplane_store::SEED_PRICE,
        made as f64 / secs.max(1e-9)
    );
    Ok(())
}
