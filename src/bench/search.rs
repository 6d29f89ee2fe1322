//! `relay bench search`: what `relay search` costs at 10k and 100k stored messages.
//!
//! A SQLite store is filled with synthetic mail (bodies of about 30 words drawn from a
//! 5000-word vocabulary with a skewed, Zipf-like frequency, 20 endpoints, some threads),
//! then each query kind is timed as `relay search` runs it: `Store::history` with the
//! parsed query, limited to 20 results, and a snippet per result. Two readers: one
//! endpoint's own mail (what agents and `relay search` do) and every message (`--all`).
//! Baseline, same run, same bodies: a raw FTS5 table queried with
//! `MATCH … ORDER BY rowid DESC LIMIT 20` — the floor any SQLite search sits on.
//!
//! Goal (issue 12): p95 ≤ 2 ms at 100k messages. Anchors from other systems:
//! mcp_agent_mail_rust's Tantivy index ~0.8 ms p95 at 15k messages; the Python
//! mcp_agent_mail's FTS5 search 12.3 ms mean.

use std::time::Instant;

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{Machine, Recorder};
use crate::config::Config;
use crate::store::query::TextQuery;
use crate::store::{History, Intent, NewMessage, Registration, SqliteStore, Store, TEXT_PLAIN};

/// Results per search, as `relay search` defaults to.
pub const LIMIT: usize = 20;
/// Words in the vocabulary.
const VOCABULARY: usize = 5000;
/// Endpoints the mail is spread over.
const ENDPOINTS: usize = 20;

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ms {
    /// Samples taken.
    pub samples: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Ms {
    fn of(r: &Recorder) -> Ms {
        let h = &r.0;
        let ms = |ns: u64| ns as f64 / 1e6;
        Ms {
            samples: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// One row: a query kind at one store size.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Messages stored.
    pub messages: usize,
    /// The query kind (`rare word`, `common word`, …).
    pub kind: String,
    /// The queries used (one per sample, cycled).
    pub example: String,
    /// Mean results per search (own mail).
    pub hits: f64,
    /// One endpoint's own mail, as `relay search` runs it.
    pub own: Ms,
    /// Every message (`relay search --all`).
    pub all: Ms,
    /// Baseline: raw FTS5 over the same bodies.
    pub raw_fts5: Ms,
}

/// Everything `relay bench search` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Searches per row.
    pub n: usize,
    /// Rows at each size.
    pub rows: Vec<Row>,
    /// The worst p95 of own-mail searches at the largest size, ms.
    pub worst_p95_ms: f64,
    /// Whether it met the goal (p95 ≤ 2 ms at 100k).
    pub goal_met: bool,
}

/// A small deterministic generator (xorshift64*): the bench needs the same mail every run,
/// not good randomness.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A word index skewed towards the front (index 0 the most frequent).
    fn word(&mut self) -> usize {
        ((VOCABULARY as f64) * self.unit().powi(3)) as usize
    }
}

/// Word `i` of the vocabulary: syllables, so words look like words and differ early.
fn word(i: usize) -> String {
    const SYL: [&str; 20] = [
        "ka", "lo", "mi", "ren", "sa", "tor", "vu", "ne", "pa", "qui", "do", "fen", "gar", "hu",
        "jo", "bel", "cy", "xa", "zo", "wi",
    ];
    let mut s = String::new();
    let mut n = i + 20;
    while n > 0 {
        s.push_str(SYL[n % 20]);
        n /= 20;
    }
    s
}

fn body(g: &mut Gen) -> String {
    let words = 20 + (g.next() % 20) as usize;
    (0..words)
        .map(|_| word(g.word()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The query kinds, each a few concrete queries.
fn queries() -> Vec<(&'static str, Vec<String>)> {
    let w = |i: usize| word(i);
    vec![
        ("rare word", (3000..3010).map(w).collect()),
        ("common word", (0..10).map(w).collect()),
        (
            "two words",
            (10..20)
                .map(|i| format!("{} {}", w(i), w(i + 40)))
                .collect(),
        ),
        (
            "phrase",
            (0..10)
                .map(|i| format!("\"{} {}\"", w(i), w(i + 1)))
                .collect(),
        ),
        (
            "prefix",
            (50..60)
                .map(|i| format!("{}*", &w(i)[..3.min(w(i).len())]))
                .collect(),
        ),
        (
            "word -word",
            (20..30).map(|i| format!("{} -{}", w(i), w(0))).collect(),
        ),
    ]
}

/// Phases the progress bar counts: filling, then every row at each size.
pub fn steps(sizes: &[usize]) -> u64 {
    sizes.iter().map(|s| (s / 1000) as u64).sum::<u64>() + (sizes.len() * queries().len()) as u64
}

/// Fills a store and a raw FTS5 table with `size` messages, then times every query kind
/// `n` times for one reader's mail, for all mail, and on the raw table.
///
/// # Errors
/// Store or SQLite failures.
fn at_size(size: usize, n: usize, tick: &dyn Fn()) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::Builder::new().prefix("relay-bench-").tempdir()?;
    let store = SqliteStore::open(&Config::at(tmp.path().join("home")))?;
    let ids: Vec<String> = (0..ENDPOINTS)
        .map(|i| {
            store
                .register(&Registration {
                    name: Some(format!("agent-{i}")),
                    ..Default::default()
                })
                .map(|r| r.endpoint.id)
        })
        .collect::<Result<_, _>>()?;
    let raw = Connection::open(tmp.path().join("raw.db"))?;
    raw.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
         CREATE VIRTUAL TABLE t USING fts5(body, tokenize='unicode61 remove_diacritics 2');",
    )?;
    let mut g = Gen(0x9E37_79B9_7F4A_7C15);
    for chunk in 0..size.div_ceil(1000) {
        let batch: Vec<NewMessage> = (0..1000.min(size - chunk * 1000))
            .map(|_| {
                let from = (g.next() % ENDPOINTS as u64) as usize;
                let to = (from + 1 + (g.next() % (ENDPOINTS as u64 - 1)) as usize) % ENDPOINTS;
                let thread = g
                    .next()
                    .is_multiple_of(4)
                    .then(|| format!("t{}", g.next() % 500));
                NewMessage {
                    from: ids[from].clone(),
                    to: ids[to].clone(),
                    thread,
                    reply_to: None,
                    intent: Intent::Notify,
                    content_type: TEXT_PLAIN.into(),
                    body: body(&mut g).into_bytes(),
                    expires_at: None,
                    hold: None,
                }
            })
            .collect();
        store.enqueue_batch(&batch)?;
        let tx = raw.unchecked_transaction()?;
        for m in &batch {
            tx.prepare_cached("INSERT INTO t (body) VALUES (?1)")?
                .execute(params![String::from_utf8_lossy(&m.body)])?;
        }
        tx.commit()?;
        tick();
    }
    let me = ids[0].clone();
    let mut rows = Vec::new();
    for (kind, qs) in queries() {
        let parsed: Vec<TextQuery> = qs
            .iter()
            .map(|q| TextQuery::parse(q))
            .collect::<Result<_, _>>()?;
        let search = |q: &TextQuery, participant: Option<&str>| -> anyhow::Result<usize> {
            let hits = store.history(&History {
                text: Some(q.clone()),
                participant: participant.map(str::to_string),
                limit: LIMIT,
                ..Default::default()
            })?;
            // What the CLI shows: a snippet per result.
            let snippets: usize = hits.iter().map(|m| q.snippet(&m.text(), 120).len()).sum();
            std::hint::black_box(snippets);
            Ok(hits.len())
        };
        let (mut own, mut all, mut base) = (
            Recorder::default(),
            Recorder::default(),
            Recorder::default(),
        );
        let mut hits = 0usize;
        let mut stmt = raw.prepare(
            "SELECT rowid, snippet(t, 0, '**', '**', '…', 16) FROM t WHERE t MATCH ?1 \
             ORDER BY rowid DESC LIMIT 20",
        )?;
        for i in 0..n {
            let q = &parsed[i % parsed.len()];
            let t = Instant::now();
            hits += search(q, Some(&me))?;
            own.record(t.elapsed());
            let t = Instant::now();
            search(q, None)?;
            all.record(t.elapsed());
            let fts = q.to_fts5();
            let t = Instant::now();
            let found = stmt
                .query_map([&fts], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            base.record(t.elapsed());
            std::hint::black_box(found);
        }
        rows.push(Row {
            messages: size,
            kind: kind.to_string(),
            example: qs[0].clone(),
            hits: hits as f64 / n as f64,
            own: Ms::of(&own),
            all: Ms::of(&all),
            raw_fts5: Ms::of(&base),
        });
        tick();
    }
    Ok(rows)
}

/// Runs every size (10k and 100k unless `sizes` says otherwise), `n` searches per row.
///
/// # Errors
/// Store or SQLite failures.
pub fn run(sizes: &[usize], n: usize, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let mut rows = Vec::new();
    for &s in sizes {
        rows.extend(at_size(s, n, tick)?);
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let worst_p95_ms = rows
        .iter()
        .filter(|r| r.messages == largest)
        .map(|r| r.own.p95)
        .fold(0.0, f64::max);
    Ok(Report {
        machine: Machine::detect(),
        n,
        goal_met: largest >= 100_000 && worst_p95_ms <= 2.0,
        worst_p95_ms,
        rows,
    })
}

/// The Markdown report.
pub fn markdown(r: &Report, when: &str) -> String {
    let sizes: Vec<String> = {
        let mut s: Vec<usize> = r.rows.iter().map(|r| r.messages).collect();
        s.dedup();
        s.iter().map(usize::to_string).collect()
    };
    let mut md = super::report_header(
        "relay bench search",
        &format!("relay bench search --n {} --sizes {}", r.n, sizes.join(",")),
        &r.machine,
        when,
    );
    md.push_str(
        "Each search is `Store::history` with a parsed query, 20 results, plus a snippet per \
         result (what `relay search` does). *own*: one endpoint's mail (sent or received; \
         ~1/10 of all mail); *all*: `--all`; *raw FTS5*: the baseline, a bare FTS5 table \
         with the same bodies, `MATCH … ORDER BY rowid DESC LIMIT 20`. Times in ms.\n\n\
         | messages | query | example | hits | own p50 | own p95 | own p99 | own max | all p50 | all p95 | raw FTS5 p50 | raw FTS5 p95 |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &r.rows {
        md.push_str(&format!(
            "| {} | {} | `{}` | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            row.messages,
            row.kind,
            row.example,
            row.hits,
            row.own.p50,
            row.own.p95,
            row.own.p99,
            row.own.max,
            row.all.p50,
            row.all.p95,
            row.raw_fts5.p50,
            row.raw_fts5.p95,
        ));
    }
    md.push_str(&format!(
        "\nGoal: p95 ≤ 2 ms at 100k messages (own mail): worst p95 {:.3} ms — {}.\n\
         Anchors: mcp_agent_mail_rust (Tantivy) ~0.8 ms p95 at 15k messages; mcp_agent_mail \
         (Python, FTS5) 12.3 ms mean.\n",
        r.worst_p95_ms,
        if r.goal_met { "met" } else { "not met" }
    ));
    md
}
