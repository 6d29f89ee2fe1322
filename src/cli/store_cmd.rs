//! `relay store`: which store this relay uses (`info`), and copying every endpoint and all
//! pending mail from one store to another (`copy`), e.g. from SQLite to a NATS cluster and
//! back. Only the [`Store`] trait is used (DESIGN.md §3): the copy reads the source with
//! `roster` and `fetch` in peek mode, and writes the destination with `register` (id and
//! every field given) and `import` (idempotent by message id).

use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{Ctx, EXIT_OK, UsageError, output};
use crate::store::{self, Fetch, FetchMode, Filter, Location, Lookup, Registration, Store};

/// Arguments of `relay store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Sub,
}

/// The `relay store` subcommands.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Copy every endpoint and all pending mail from SRC to DST (SRC is only read).
    #[command(long_about = COPY_ABOUT, after_help = COPY_AFTER)]
    Copy(CopyArgs),
    /// Show which store is in use (backend and location, credentials redacted).
    #[command(after_help = INFO_AFTER)]
    Info(InfoArgs),
}

const COPY_ABOUT: &str = "\
Copy every endpoint and all pending (unacked) mail from SRC to DST. SRC is only read. \
Endpoints keep their ids, names, kinds, working directories, pids, hosts, mailbox flags \
and metadata; messages keep their ids, senders, threads, bodies and times and arrive in \
DST as queued, so their recipients read them there with `relay inbox` as usual. Acked \
mail is not copied.

Endpoints are copied first, then messages. The copy is idempotent: running it again \
copies only what is new (a message already in DST, in whatever state, is left alone), \
so a copy that failed half-way is finished by running it again.";

const COPY_AFTER: &str = "\
Locations: sqlite:DIR (the SQLite store of the relay home DIR), a bare path (the same), \
or nats://host:4222[,nats://host2:4222,...] (a NATS JetStream cluster; credentials in \
the URL or RELAY_NATS_*, see docs/nats.md). --store and RELAY_STORE do not apply here.

Examples:
  # move this machine's relay onto a NATS cluster
  relay store copy ~/.local/state/relay nats://10.0.0.5:4222,nats://10.0.0.6:4222
  RELAY_STORE=nats://10.0.0.5:4222,nats://10.0.0.6:4222 relay roster
  # and back into a fresh SQLite home
  relay store copy nats://10.0.0.5:4222 sqlite:/tmp/relay-back
  # see what would be copied, without writing
  relay store copy --dry-run sqlite:/srv/relay nats://10.0.0.5:4222

A name that a different endpoint holds in DST moves to the copied endpoint (as `relay \
register` moves it); the output lists every such move. Messages a reader holds under a \
lease right now are not visible to the copy: it counts them (messages_leased) and \
running it again after they are acked or their lease lapses picks up the rest. Stop \
senders to SRC first, or copy again afterwards, for mail that arrives meanwhile.

JSON: ok, dry_run, src, dst, endpoints_copied, endpoints_existing, messages_copied, \
messages_existing, messages_leased, names_moved [{name, to, from}]. Exit status: 0 \
copied (or nothing to copy), 1 a store failed (the message names it; run again to \
resume), 2 a bad location or SRC = DST.";

const INFO_AFTER: &str = "\
The store is chosen by --store URL, else RELAY_STORE, else SQLite in RELAY_HOME. The \
store is opened (so an unreachable NATS cluster is an error, exit 1) and its endpoints \
and pending mail are counted.

JSON: ok, backend (sqlite or nats), location, source (--store/RELAY_STORE or RELAY_HOME), \
database (sqlite: the file), urls (nats), endpoints, pending.";

/// Arguments of `relay store copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Where to copy from: sqlite:DIR, a relay home directory, or nats://host:4222[,...].
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to copy to (same syntax); created when it is a SQLite home that does not exist.
    #[arg(value_name = "DST")]
    pub dst: String,
    /// Count what would be copied and write nothing (a NATS DST is still connected to).
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `relay store info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    match a.command {
        Sub::Copy(c) => copy(ctx, c),
        Sub::Info(i) => info(ctx, i),
    }
}

/// Most messages read from one endpoint's mailbox in one peek (all of them, in practice;
/// they are held in memory while copied).
const PEEK_ALL: usize = u32::MAX as usize;

/// One location given on the command line, parsed.
struct Place {
    /// Which argument it is, `SRC` or `DST`, for messages.
    role: &'static str,
    /// The location in the syntax of [`store::open_at`]: a bare path made `sqlite:PATH`.
    explicit: String,
    /// The location for output: an absolute `sqlite:` path, or the URLs with credentials
    /// redacted.
    shown: String,
    /// The parsed location.
    loc: Location,
}

impl Place {
    /// Parses `given`; a bare path (starting with `/`, `.` or `~`, or with no `:`) means
    /// `sqlite:PATH`.
    ///
    /// # Errors
    /// A [`UsageError`] for an empty location; [`store::Error::BadLocation`] (exit 2) for
    /// one that does not parse.
    fn parse(role: &'static str, given: &str, ctx: &Ctx) -> anyhow::Result<Place> {
        let t = given.trim();
        if t.is_empty() {
            return Err(UsageError(format!(
                "{role} is empty; give sqlite:DIR, a relay home directory, or \
                 nats://host:4222[,nats://host2:4222,...]"
            ))
            .into());
        }
        let bare = t.starts_with(['/', '.', '~']) || !t.contains(':');
        let explicit = if bare {
            format!("sqlite:{t}")
        } else {
            t.to_string()
        };
        let loc = Location::parse(&explicit, &ctx.config.home).map_err(|e| match e {
            store::Error::BadLocation { why, .. } => UsageError(format!(
                "{role} '{}' is not a store location: {why}; give sqlite:DIR, a relay home \
                 directory, or nats://host:4222[,nats://host2:4222,...]",
                redact_list(t)
            )),
            other => UsageError(format!("{role}: {other}")),
        })?;
        let shown = match &loc {
            Location::Sqlite(dir) => format!("sqlite:{}", absolute(dir).display()),
            Location::Nats(urls) => redact_list(&urls.join(",")),
        };
        Ok(Place {
            role,
            explicit,
            shown,
            loc,
        })
    }

    /// True when `self` and `other` name the same store: the same SQLite directory after
    /// resolving symlinks, or NATS URL lists sharing a server (`host:port`, port 4222 when
    /// left out, case-insensitive, credentials ignored).
    fn same_as(&self, other: &Place) -> bool {
        match (&self.loc, &other.loc) {
            (Location::Sqlite(a), Location::Sqlite(b)) => absolute(a) == absolute(b),
            (Location::Nats(a), Location::Nats(b)) => {
                let b: Vec<String> = b.iter().map(|u| server_key(u)).collect();
                a.iter().any(|u| b.contains(&server_key(u)))
            }
            _ => false,
        }
    }

    /// Opens the store. A SQLite SRC must already be a relay home (opening a directory
    /// with no `relay.db` would create an empty store and copy nothing).
    ///
    /// # Errors
    /// A [`UsageError`] for a SQLite SRC with no `relay.db`; the backend's open errors,
    /// with the role and location as context.
    fn open(&self, ctx: &Ctx) -> anyhow::Result<Box<dyn Store>> {
        if let (Location::Sqlite(dir), "SRC") = (&self.loc, self.role)
            && !dir.join("relay.db").exists()
        {
            return Err(UsageError(format!(
                "SRC {}: no relay store there (no relay.db); give the directory of a relay \
                 home (RELAY_HOME, default ~/.local/state/relay), e.g. \
                 `relay store copy ~/.local/state/relay nats://host:4222`",
                self.shown
            ))
            .into());
        }
        store::open_at(&self.explicit, &ctx.config).with_context(|| match &self.loc {
            // The NATS error names the URLs already.
            Location::Nats(_) => format!(
                "cannot open {} (check that a server runs there and the URL and credentials \
                 are right)",
                self.role
            ),
            Location::Sqlite(_) => format!("cannot open {} {}", self.role, self.shown),
        })
    }

    /// Whether the store exists yet: false only for a SQLite home with no `relay.db`.
    fn exists(&self) -> bool {
        match &self.loc {
            Location::Sqlite(dir) => dir.join("relay.db").exists(),
            Location::Nats(_) => true,
        }
    }
}

/// A comma-separated URL list with the credentials of each URL redacted
/// ([`store::redact`] works on one URL).
fn redact_list(list: &str) -> String {
    list.split(',')
        .map(|u| store::redact(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `nats://user:pw@Host` → `host:4222`: what tells two NATS URLs apart as servers.
fn server_key(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.trim_end_matches('/').to_ascii_lowercase();
    let has_port = hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if has_port {
        hostport
    } else {
        format!("{hostport}:4222")
    }
}

/// `dir` made absolute (against the current directory) with symlinks resolved when it
/// exists, else with `.` and `..` resolved lexically.
fn absolute(dir: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(dir) {
        return p;
    }
    let joined = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(dir)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A name that moved in DST to the copied endpoint from a different one.
#[derive(Debug, Serialize)]
struct NameMove {
    /// The name.
    name: String,
    /// The copied endpoint's id, which holds the name now.
    to: String,
    /// The DST endpoint that held it before (it keeps its id and mail, without a name).
    from: String,
}

/// The result of `relay store copy`.
#[derive(Debug, Serialize)]
struct CopyDoc {
    dry_run: bool,
    src: String,
    dst: String,
    /// Endpoints created in DST (with `--dry-run`: that would be).
    endpoints_copied: u64,
    /// Endpoints DST had already (updated to SRC's fields).
    endpoints_existing: u64,
    /// Messages stored in DST.
    messages_copied: u64,
    /// Messages DST had already (left as they are).
    messages_existing: u64,
    /// Pending messages SRC's roster counts that the copy could not see: handed to a
    /// reader under a lease that has not lapsed, or held for a live hand-over.
    messages_leased: u64,
    names_moved: Vec<NameMove>,
}

/// A progress bar on stderr when it is a terminal and the output is not `--json`.
fn progress(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template("{msg:>9} {pos}/{len} {bar:30} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Whether `store` has an endpoint with exactly this id.
fn has_id(store: &dyn Store, id: &str) -> store::Result<bool> {
    Ok(match store.lookup(id)? {
        Lookup::Found(e) => e.id == id,
        Lookup::Ambiguous(c) => c.iter().any(|e| e.id == id),
        Lookup::Unknown => false,
    })
}

/// The id of the endpoint of `store` holding `name`, if any.
fn holder(store: &dyn Store, name: &str) -> store::Result<Option<String>> {
    Ok(match store.lookup(name)? {
        Lookup::Found(e) if e.name.as_deref() == Some(name) => Some(e.id),
        _ => None,
    })
}

/// Whether `store` has a message with exactly this id (in any state).
fn has_message(store: &dyn Store, id: &str) -> store::Result<bool> {
    match store.receipt(id) {
        Ok(r) => Ok(r.id == id),
        Err(store::Error::UnknownMessage { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn copy(ctx: &Ctx, a: CopyArgs) -> anyhow::Result<u8> {
    let src_place = Place::parse("SRC", &a.src, ctx)?;
    let dst_place = Place::parse("DST", &a.dst, ctx)?;
    if src_place.same_as(&dst_place) {
        return Err(UsageError(format!(
            "SRC and DST are the same store ({}); give two different stores, e.g. \
             `relay store copy ~/.local/state/relay nats://host:4222`",
            src_place.shown
        ))
        .into());
    }
    let src = src_place.open(ctx)?;
    // A dry run into a SQLite home that does not exist yet creates nothing: all is new.
    let dst = if a.dry_run && !dst_place.exists() {
        None
    } else {
        Some(dst_place.open(ctx)?)
    };
    let mut doc = CopyDoc {
        dry_run: a.dry_run,
        src: src_place.shown.clone(),
        dst: dst_place.shown.clone(),
        endpoints_copied: 0,
        endpoints_existing: 0,
        messages_copied: 0,
        messages_existing: 0,
        messages_leased: 0,
        names_moved: Vec::new(),
    };
    let roster = src
        .roster()
        .with_context(|| format!("cannot list the endpoints of SRC {}", src_place.shown))?;
    let pending: u64 = roster.iter().map(|r| r.pending).sum();
    let bar = progress(roster.len() as u64 + pending, ctx.json);
    let dst_shown = &dst_place.shown;
    let resume = "nothing in SRC changed; run the same copy again to finish it (it is idempotent)";
    let result = (|| -> anyhow::Result<()> {
        bar.set_message("endpoints");
        for r in &roster {
            let e = &r.endpoint;
            let ctx_ep = || {
                format!(
                    "copying endpoint {} to DST {dst_shown}; {resume}",
                    e.label()
                )
            };
            match &dst {
                Some(dst) if !a.dry_run => {
                    let reg = dst
                        .register(&Registration {
                            id: Some(e.id.clone()),
                            name: e.name.clone(),
                            kind: Some(e.kind),
                            cwd: e.cwd.clone(),
                            default_cwd: None,
                            pid: e.pid,
                            pid_start: e.pid_start,
                            host: e.host.clone(),
                            mailbox: Some(e.mailbox),
                            meta: e.meta.clone(),
                        })
                        .with_context(ctx_ep)?;
                    if reg.created {
                        doc.endpoints_copied += 1;
                    } else {
                        doc.endpoints_existing += 1;
                    }
                    if let (Some(from), Some(name)) = (reg.name_taken_from, &e.name) {
                        doc.names_moved.push(NameMove {
                            name: name.clone(),
                            to: e.id.clone(),
                            from,
                        });
                    }
                }
                Some(dst) => {
                    if has_id(dst.as_ref(), &e.id).with_context(ctx_ep)? {
                        doc.endpoints_existing += 1;
                    } else {
                        doc.endpoints_copied += 1;
                    }
                    if let Some(name) = &e.name
                        && let Some(from) = holder(dst.as_ref(), name).with_context(ctx_ep)?
                        && from != e.id
                    {
                        doc.names_moved.push(NameMove {
                            name: name.clone(),
                            to: e.id.clone(),
                            from,
                        });
                    }
                }
                None => doc.endpoints_copied += 1,
            }
            bar.inc(1);
        }
        bar.set_message("messages");
        let peek = Fetch {
            limit: PEEK_ALL,
            mode: FetchMode::Peek,
            filter: Filter::default(),
        };
        for r in &roster {
            let e = &r.endpoint;
            let msgs = src.fetch(&e.id, &peek).with_context(|| {
                format!(
                    "cannot read the mail of {} in SRC {}",
                    e.label(),
                    src_place.shown
                )
            })?;
            // Mail that arrived after the roster was read makes the count larger.
            doc.messages_leased += r.pending.saturating_sub(msgs.len() as u64);
            if msgs.len() as u64 > r.pending {
                bar.inc_length(msgs.len() as u64 - r.pending);
            }
            for m in &msgs {
                let ctx_msg = || {
                    format!(
                        "copying message {} for {} to DST {dst_shown} ({} copied before it); \
                         {resume}",
                        m.id,
                        e.label(),
                        doc.messages_copied
                    )
                };
                let stored = match &dst {
                    Some(dst) if !a.dry_run => dst.import(m).with_context(ctx_msg)?,
                    Some(dst) => !has_message(dst.as_ref(), &m.id).with_context(ctx_msg)?,
                    None => true,
                };
                if stored {
                    doc.messages_copied += 1;
                } else {
                    doc.messages_existing += 1;
                }
                bar.inc(1);
            }
            // Leased ones were counted in the bar's length but never come.
            bar.inc(r.pending.saturating_sub(msgs.len() as u64));
        }
        Ok(())
    })();
    bar.finish_and_clear();
    result?;
    output::emit(ctx.json, &doc, || human(&doc));
    Ok(EXIT_OK)
}

/// The human report of a copy.
fn human(d: &CopyDoc) -> String {
    let (verb, done) = if d.dry_run {
        ("would copy", "would be copied")
    } else {
        ("copied", "copied")
    };
    let mut s = format!(
        "{verb} {} → {}\nendpoints: {} {done}, {} already there\nmessages:  {} {done}, {} \
         already there\n",
        d.src,
        d.dst,
        d.endpoints_copied,
        d.endpoints_existing,
        d.messages_copied,
        d.messages_existing
    );
    for m in &d.names_moved {
        s.push_str(&format!(
            "note: in DST the name '{}' {} to endpoint {} from endpoint {}, which keeps its \
             id and mail without a name\n",
            m.name,
            if d.dry_run { "would move" } else { "moved" },
            m.to,
            m.from
        ));
    }
    if d.messages_leased > 0 {
        s.push_str(&format!(
            "note: {} pending message(s) in SRC are held by a reader under a lease right now \
             and were not copied; run the copy again once they are acked or the lease lapses \
             (60 s by default)\n",
            d.messages_leased
        ));
    }
    if !d.dry_run && d.endpoints_copied + d.messages_copied == 0 {
        s.push_str("nothing new to copy: DST already has everything\n");
    }
    s
}

/// The result of `relay store info`.
#[derive(Debug, Serialize)]
struct InfoDoc {
    /// `sqlite` or `nats`.
    backend: &'static str,
    /// The location, credentials redacted (`sqlite:DIR` or the URL list).
    location: String,
    /// Where the choice came from: `--store/RELAY_STORE`, or `RELAY_HOME` (the default).
    source: &'static str,
    /// SQLite: the database file.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    /// NATS: the server URLs, credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<Vec<String>>,
    /// How many endpoints it holds.
    endpoints: u64,
    /// Pending messages across all endpoints.
    pending: u64,
}

fn info(ctx: &Ctx, _a: InfoArgs) -> anyhow::Result<u8> {
    let given = ctx.config.store.clone().unwrap_or_default();
    let loc = Location::parse(&given, &ctx.config.home)?;
    let source = if given.trim().is_empty() {
        "RELAY_HOME"
    } else {
        "--store/RELAY_STORE"
    };
    let (backend, location, database, urls) = match &loc {
        Location::Sqlite(dir) => {
            let dir = absolute(dir);
            (
                "sqlite",
                format!("sqlite:{}", dir.display()),
                Some(dir.join("relay.db").display().to_string()),
                None,
            )
        }
        Location::Nats(u) => {
            let u: Vec<String> = u.iter().map(|u| store::redact(u)).collect();
            ("nats", u.join(","), None, Some(u))
        }
    };
    // Its errors name the location (the NATS URLs, the SQLite path).
    let store = ctx.store()?;
    let roster = store.roster()?;
    let doc = InfoDoc {
        backend,
        location,
        source,
        database,
        urls,
        endpoints: roster.len() as u64,
        pending: roster.iter().map(|r| r.pending).sum(),
    };
    output::emit(ctx.json, &doc, || {
        format!(
            "backend:   {}\nlocation:  {}\nchosen by: {}\nendpoints: {}\npending:   {}",
            doc.backend,
            output::escape_line(&doc.location),
            doc.source,
            doc.endpoints,
            doc.pending
        )
    });
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_servers_compare_by_host_and_port() {
        assert_eq!(server_key("nats://u:p@Host"), "host:4222");
        assert_eq!(server_key("nats://h:4223/"), "h:4223");
        assert_eq!(server_key("tls://h:4222"), server_key("nats://h"));
    }

    #[test]
    fn lists_are_redacted_per_url() {
        assert_eq!(
            redact_list("nats://u:p@a:1,nats://t@b:2"),
            "nats://***@a:1,nats://***@b:2"
        );
    }

    #[test]
    fn absolute_resolves_dots() {
        let p = absolute(Path::new("/nonexistent-relay/a/../b/./c"));
        assert_eq!(p, PathBuf::from("/nonexistent-relay/b/c"));
    }
}
