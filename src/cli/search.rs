//! `relay search QUERY…`: full-text search over stored mail, newest first. Only the
//! caller's own mail (sent or received), unless `--all` (a human operator's view).

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::coord::search::{self, DEFAULT_LIMIT, Hit, Search};
use crate::store::query::TextQuery;
use crate::store::{MAX_HISTORY, Store, names};

/// Arguments of `relay search`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Query: words (all must appear), \"quoted phrases\", prefix* \
terms, -word or NOT word to exclude, OR between alternatives; matching ignores case and \
accents. A query starting with '-' goes after `--`: relay search -- -draft report. \
Results: id, time, from → to, thread, state and a snippet with the matches marked \
**like this**."
)]
pub struct Args {
    /// The query (several words are joined with spaces).
    #[arg(required = true, value_name = "QUERY")]
    pub query: Vec<String>,
    /// Only mail from this endpoint (name, id or unique id prefix).
    #[arg(long)]
    pub from: Option<String>,
    /// Only mail to this endpoint (name, id or unique id prefix).
    #[arg(long)]
    pub to: Option<String>,
    /// Only mail in this thread (exact).
    #[arg(long)]
    pub thread: Option<String>,
    /// Only mail since: a duration ago (2d, 3h, 30m) or an RFC 3339 time
    /// (2026-01-31T12:00:00Z, 2026-01-31T12:00:00+05:00).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many results, newest first [range: 1-1000]
    #[arg(long, default_value_t = DEFAULT_LIMIT as u32,
          value_parser = clap::value_parser!(u32).range(1..=MAX_HISTORY as i64))]
    pub limit: u32,
    /// Search every endpoint's mail, not only yours (for a human operator; needs no
    /// identity).
    #[arg(long)]
    pub all: bool,
}

#[derive(Serialize)]
struct Doc {
    query: String,
    /// `mine` or `all`.
    scope: &'static str,
    /// The caller's endpoint id (null with --all and no identity).
    me: Option<String>,
    results: Vec<Hit>,
}

/// Resolves an optional endpoint argument to its id.
pub(crate) fn endpoint_id(
    store: &dyn Store,
    arg: Option<String>,
) -> anyhow::Result<Option<String>> {
    Ok(match names::optional(arg) {
        Some(q) => Some(store.resolve(&q)?.id),
        None => None,
    })
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let query = a.query.join(" ");
    let text = TextQuery::parse(&query)?;
    let since_ms = match a.since.as_deref() {
        Some(s) => Some(search::since(s, crate::clock::now_ms()).map_err(super::UsageError)?),
        None => None,
    };
    let thread = names::optional_thread(a.thread)?;
    let store = ctx.store()?;
    let me = if a.all {
        ctx.me(&store).ok().map(|e| e.id)
    } else {
        Some(ctx.me(&store)?.id)
    };
    let s = Search {
        text,
        participant: if a.all { None } else { me.clone() },
        from: endpoint_id(&store, a.from)?,
        to: endpoint_id(&store, a.to)?,
        thread,
        since_ms,
        limit: a.limit as usize,
    };
    let doc = Doc {
        query,
        scope: if a.all { "all" } else { "mine" },
        me,
        results: search::search(&store, &s)?,
    };
    output::emit(ctx.json, &doc, || {
        if doc.results.is_empty() {
            return "no messages match".into();
        }
        let mut out = String::new();
        for h in &doc.results {
            out.push_str(&hit_line(h));
            out.push('\n');
        }
        out
    });
    Ok(EXIT_OK)
}

/// `name` or the id, escaped for one terminal line.
pub(crate) fn who(name: Option<&str>, id: &str) -> String {
    output::escape_line(name.unwrap_or(id))
}

/// One hit: a header line, then the snippet indented (both escaped: other endpoints'
/// text).
fn hit_line(h: &Hit) -> String {
    let mut s = format!(
        "── {} · {} · {} → {}",
        output::escape_line(&h.id),
        output::time(h.created_at),
        who(h.from_name.as_deref(), &h.from),
        who(h.to_name.as_deref(), &h.to),
    );
    if let Some(t) = &h.thread {
        s.push_str(&format!(
            " · thread {}",
            crate::agents::fence::quoted(&output::escape_line(t))
        ));
    }
    s.push_str(&format!(" · {}", h.state));
    s.push_str("\n  ");
    s.push_str(&output::escape_line(&h.snippet));
    s
}
