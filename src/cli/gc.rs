//! `relay gc`: delete acked messages older than N days, expired ones and expired
//! reservations; drop bindings of agent processes that are gone and the reservations of
//! holders that are gone (agents::presence).

use std::time::Duration;

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::agents::presence::{self, Presence};
use crate::agents::procfs;
use crate::store::{self, GcReport, Lookup, ProcessRef, ReservationSelect, Store};

/// Arguments of `relay gc`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reservations are released when their holder is gone (relay roster's \
PRESENCE): its process exited and its session cannot be resumed, or it registered from \
nowhere relay can watch and reads no mailbox. A dormant session keeps its reservations \
until they expire (it may be resumed), and so does a holder on another machine: only its \
own machine can tell whether it still runs."
)]
pub struct Args {
    /// Delete acked messages acked more than this many days ago.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
}

#[derive(Serialize)]
struct Doc {
    #[serde(flatten)]
    messages: GcReport,
    /// Bindings whose agent process (pid + start time) no longer runs.
    bindings_deleted: u64,
    /// Live reservations released because their holder is gone.
    reservations_released: u64,
    /// The holders whose reservations were released, with why each is gone.
    released_holders: Vec<Released>,
}

/// One gone holder whose reservations `gc` released.
#[derive(Serialize)]
struct Released {
    /// The holder's endpoint id.
    holder: String,
    /// Its name when it reserved, if any.
    holder_name: Option<String>,
    /// How many of its reservations were released.
    reservations: u64,
    /// Why it counts as gone ([`presence::Seen::why`]).
    why: String,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let messages = store.gc(Duration::from_secs(u64::from(a.days) * 86_400))?;
    let stale: Vec<ProcessRef> = store
        .bindings()?
        .into_iter()
        .map(|b| b.process)
        .filter(|p| !procfs::alive(*p))
        .collect();
    let bindings_deleted = store.unbind(&stale)?;
    let runtime = crate::transport::runtime_dir(&ctx.config.home);
    let released_holders = release_gone(&store, &runtime)?;
    let doc = Doc {
        messages,
        bindings_deleted,
        reservations_released: released_holders.iter().map(|r| r.reservations).sum(),
        released_holders,
    };
    output::emit(ctx.json, &doc, || {
        let mut s = format!(
            "deleted {} acked message(s) older than {} day(s), {} expired message(s), {} \
             expired reservation(s), {} event(s) older than {} day(s) and {} stale session \
             binding(s); released {} reservation(s) of {} gone holder(s)",
            doc.messages.acked_deleted,
            a.days,
            doc.messages.expired_deleted,
            doc.messages.reservations_deleted,
            doc.messages.events_deleted,
            a.days,
            doc.bindings_deleted,
            doc.reservations_released,
            doc.released_holders.len()
        );
        for r in &doc.released_holders {
            s.push_str(&format!(
                "\n  {} ({}): {}",
                output::escape_line(r.holder_name.as_deref().unwrap_or(&r.holder)),
                r.reservations,
                output::escape_line(&r.why)
            ));
        }
        s
    });
    Ok(EXIT_OK)
}

/// Releases every live reservation whose holder is a local endpoint that is
/// [`Presence::Gone`], or that no endpoint has the id of any more, one holder at a time
/// (each a transaction of the store). A holder on another machine is left alone: this
/// machine sees it only by its last-seen time.
fn release_gone(store: &dyn Store, runtime: &std::path::Path) -> store::Result<Vec<Released>> {
    let mut holders: Vec<(String, Option<String>)> = store
        .reservations(None)?
        .into_iter()
        .map(|r| (r.holder, r.holder_name))
        .collect();
    holders.sort();
    holders.dedup_by(|a, b| a.0 == b.0);
    // Who each holder is; then every local one's presence at once (their sockets probed
    // in parallel, within one probe timeout, however many there are).
    let mut gone: Vec<(String, Option<String>, String)> = Vec::new();
    let mut local = Vec::new();
    for (holder, holder_name) in holders {
        match store.lookup(&holder)? {
            Lookup::Found(e) if e.id == holder => {
                if e.is_local() {
                    local.push((holder, holder_name, e));
                }
            }
            // No endpoint has that id any more: nobody can renew or release them.
            Lookup::Found(_) | Lookup::Unknown => {
                gone.push((holder, holder_name, "no endpoint has this id".into()))
            }
            Lookup::Ambiguous(_) => {}
        }
    }
    let endpoints: Vec<_> = local.iter().map(|(_, _, e)| e.clone()).collect();
    let seen = presence::of_many(&endpoints, runtime);
    for ((holder, holder_name, _), seen) in local.into_iter().zip(seen) {
        if seen.presence == Presence::Gone {
            gone.push((holder, holder_name, seen.why));
        }
    }
    gone.sort();
    let mut out = Vec::new();
    for (holder, holder_name, why) in gone {
        let released = store.release_reservations(&ReservationSelect {
            holder: Some(holder.clone()),
            ..ReservationSelect::default()
        })?;
        if !released.is_empty() {
            out.push(Released {
                holder,
                holder_name,
                reservations: released.len() as u64,
                why,
            });
        }
    }
    Ok(out)
}
