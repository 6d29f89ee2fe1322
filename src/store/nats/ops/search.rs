//! [`Store::history`](crate::store::Store::history) on NATS: there is no index, so it is a
//! bounded scan of `RELAY_MAIL`, newest first (docs/nats.md, "Search and threads").
//!
//! - **What is read**: the messages whose subject matches the narrowest filter the query
//!   allows — `relay.mail.<to>.<from>.<thread>.*` with `*` for what is not given; a
//!   `participant` alone becomes two filters (`<p>` as recipient, `<p>` as sender). A query
//!   naming at most [`DIRECT_IDS`] ids reads those messages by id instead, one request each.
//!   `since` starts the read at the first message the server stored at or after that time
//!   (less [`SINCE_SLACK_MS`], since `created_at` is the writer's clock).
//! - **In which order**: windows of stream sequences from the newest down. A window starts
//!   with one probe per filter (a batch get of 1), whose `Nats-Num-Pending` says how many
//!   matches lie between it and the end, so the window's count is known before it is read
//!   and each page asks for exactly that many (plus one, to see where the window ends).
//!   The first window is sized from the stream's density to hold about twice `limit`
//!   matches; each further one four times as many. The scan stops once `limit` results are
//!   found or the start is reached. A window of [`CONSUMER_MIN`] messages or more is read
//!   through an ephemeral ordered consumer instead (far cheaper per message for the
//!   server), falling back to batch gets when that fails.
//! - **The bound**: at most `RELAY_NATS_SEARCH_SCAN` (default [`DEFAULT_SCAN`]) messages
//!   read per call. A window that would cross it is shrunk in proportion until it fits;
//!   windows go on while a hundredth of the bound is left, and a search that ends before
//!   the start warns how many older matches of the filter were not searched. What the
//!   caller gets is then the newest results among the newest messages.
//! - Every condition is checked on the envelope and body (the subject only narrows): a
//!   cheap word test on the body first ([`may_match`]), the full text match last; messages of a batch not yet committed are left out, as in mailbox
//!   listings; each result's receipt is read from the leader.

use super::super::scan::{PAGE, Page, Start, page};
use super::*;
use crate::store::query::TextQuery;
use crate::store::{History, MAX_HISTORY};

/// Default bound of one history call: 100 000 messages read.
pub const DEFAULT_SCAN: u64 = 100_000;
/// The environment variable that sets the bound.
const SCAN_ENV: &str = "RELAY_NATS_SEARCH_SCAN";
/// A query naming at most this many ids reads them one by one instead of scanning.
const DIRECT_IDS: usize = 256;
/// `since` narrows the read by the server's storage time, which may lag or lead the
/// writer's `created_at` by the clock skew between them; this much is tolerated.
const SINCE_SLACK_MS: i64 = 60_000;
/// A window expected to hold at least this many messages is read through a consumer.
const CONSUMER_MIN: u64 = 2000;
/// Receipt (and id) reads in flight at once.
const CONCURRENT_READS: usize = 64;

/// The bound from `RELAY_NATS_SEARCH_SCAN`: a whole number of messages, 1 to 10⁹.
///
/// # Errors
/// A sentence naming the variable and its value when it is not such a number.
pub fn scan_bound_from_env() -> std::result::Result<u64, String> {
    match std::env::var(SCAN_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        None => Ok(DEFAULT_SCAN),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n @ 1..=1_000_000_000) => Ok(n),
            _ => Err(format!(
                "{SCAN_ENV} '{v}' is not a number of messages from 1 to 1000000000 \
                 (default {DEFAULT_SCAN})"
            )),
        },
    }
}

/// A subject filter over mail: the given tokens, `*` elsewhere; `relay.mail.>` when
/// nothing narrows it.
fn mail_filter(to: Option<&str>, from: Option<&str>, thread: Option<&str>) -> String {
    if to.is_none() && from.is_none() && thread.is_none() {
        return format!("{MAIL_PREFIX}.>");
    }
    format!(
        "{MAIL_PREFIX}.{}.{}.{}.*",
        to.map_or_else(|| "*".to_string(), tok),
        from.map_or_else(|| "*".to_string(), tok),
        thread.map_or_else(|| "*".to_string(), |t| thread_tok(Some(t)))
    )
}

/// The (to, from) pairs whose filters together cover every message `q` can match, with
/// `participant` folded in; empty when no message can match (`participant` contradicts
/// both `to` and `from`).
fn sides(q: &History) -> Vec<(Option<&str>, Option<&str>)> {
    let (to, from) = (q.to.as_deref(), q.from.as_deref());
    match q.participant.as_deref() {
        None => vec![(to, from)],
        Some(p) if to == Some(p) || from == Some(p) => vec![(to, from)],
        Some(_) if to.is_some() && from.is_some() => Vec::new(),
        Some(p) if to.is_some() => vec![(to, Some(p))],
        Some(p) if from.is_some() => vec![(Some(p), from)],
        Some(p) => vec![(Some(p), None), (None, Some(p))],
    }
}

/// Whether a message satisfies every condition of `q`: the envelope's first, the text last.
fn wanted(q: &History, env: &Env, body: &[u8]) -> bool {
    q.participant
        .as_ref()
        .is_none_or(|p| env.from == *p || env.to == *p)
        && q.from.as_ref().is_none_or(|f| env.from == *f)
        && q.to.as_ref().is_none_or(|t| env.to == *t)
        && q.thread
            .as_ref()
            .is_none_or(|t| env.thread.as_ref() == Some(t))
        && q.ids.as_ref().is_none_or(|ids| ids.contains(&env.id))
        && q.reply_to
            .as_ref()
            .is_none_or(|r| env.reply_to.as_ref().is_some_and(|x| r.contains(x)))
        && q.since_ms.is_none_or(|s| env.created_at >= s)
        && q.text
            .as_ref()
            .is_none_or(|t| t.matches(&String::from_utf8_lossy(body)))
}

/// A cheap test that `text` may match `q`, run before the full match on every message
/// scanned: for an ASCII body (the usual case) the body's tokens are its runs of ASCII
/// letters and digits, lower-cased, so a term can only be there if each of its tokens is a
/// substring of the lower-cased body — and some group needs all its terms. False means it
/// cannot match; true means ask [`TextQuery::matches`]. Other bodies always pass.
fn may_match(q: &TextQuery, text: &[u8]) -> bool {
    if !text.is_ascii() {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    let Ok(lower) = std::str::from_utf8(&lower) else {
        return true;
    };
    q.groups.iter().any(|g| {
        g.must
            .iter()
            .all(|t| t.tokens.iter().all(|k| lower.contains(k.as_str())))
    })
}

/// One filter's part of a window.
struct Probe {
    /// The first match at or after the window's start, if any.
    first: Option<Raw>,
    /// Matches from the window's start to the end of the stream.
    from_here: u64,
}

/// What reads found: the messages that satisfy the query (with their envelopes), and how
/// many were read. Filtering as pages arrive keeps memory to the
/// results, not to the window.
#[derive(Default)]
struct Found {
    kept: Vec<(Raw, Env)>,
    read: u64,
}

impl Found {
    fn take(&mut self, q: &History, raw: Raw) {
        self.read += 1;
        // The cheapest test first: most scanned messages fail it.
        if q.text.as_ref().is_some_and(|t| !may_match(t, &raw.payload)) {
            return;
        }
        let Some(env) = envelope(&raw) else {
            return;
        };
        if wanted(q, &env, &raw.payload) {
            self.kept.push((raw, env));
        }
    }
}

impl Inner {
    pub async fn history(&self, q: &History) -> Result<Vec<Message>> {
        self.history_within(q, self.search_scan, CONSUMER_MIN).await
    }

    /// [`Inner::history`] reading at most `bound` mail messages, windows of at least
    /// `consumer_min` through a consumer.
    async fn history_within(
        &self,
        q: &History,
        bound: u64,
        consumer_min: u64,
    ) -> Result<Vec<Message>> {
        let limit = q.limit.clamp(1, MAX_HISTORY);
        if q.ids.as_ref().is_some_and(Vec::is_empty)
            || q.reply_to.as_ref().is_some_and(Vec::is_empty)
        {
            return Ok(Vec::new());
        }
        let filters: Vec<String> = sides(q)
            .into_iter()
            .map(|(to, from)| mail_filter(to, from, q.thread.as_deref()))
            .collect();
        if filters.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = match q.ids.as_ref().filter(|ids| ids.len() <= DIRECT_IDS) {
            Some(ids) => self.history_by_id(q, ids).await?,
            None => {
                self.history_scan(q, &filters, limit, bound, consumer_min)
                    .await?
            }
        };
        found.sort_by_key(|it| std::cmp::Reverse(it.seq));
        found.truncate(limit);
        let mut rcpts = Vec::with_capacity(found.len());
        for chunk in found.chunks(CONCURRENT_READS) {
            rcpts.extend(
                futures_util::future::join_all(
                    chunk.iter().map(|it| self.rcpt_now(&it.env.to, &it.env.id)),
                )
                .await,
            );
        }
        let mut out = Vec::with_capacity(found.len());
        for (mut it, r) in found.into_iter().zip(rcpts) {
            it.rcpt = r?;
            out.push(it.message(&it.current()));
        }
        Ok(out)
    }

    /// The messages of `ids` that satisfy `q`, each read from the leader by its id.
    async fn history_by_id(&self, q: &History, ids: &[String]) -> Result<Vec<Item>> {
        let mut distinct: Vec<&String> = ids.iter().collect();
        distinct.sort();
        distinct.dedup();
        // Both sides narrow the lookup only when the query fixes them.
        let (to, from) = match sides(q).as_slice() {
            [(to, from)] => (to.map(tok), from.map(tok)),
            _ => (None, None),
        };
        let thread = q.thread.as_deref().map(|t| thread_tok(Some(t)));
        let star = || "*".to_string();
        let subjects: Vec<String> = distinct
            .iter()
            .map(|id| {
                format!(
                    "{MAIL_PREFIX}.{}.{}.{}.{}",
                    to.clone().unwrap_or_else(star),
                    from.clone().unwrap_or_else(star),
                    thread.clone().unwrap_or_else(star),
                    tok(id)
                )
            })
            .collect();
        let mut got = Vec::with_capacity(subjects.len());
        for chunk in subjects.chunks(CONCURRENT_READS) {
            got.extend(
                futures_util::future::join_all(
                    chunk.iter().map(|s| self.read_last(&self.mail, s, "mail")),
                )
                .await,
            );
        }
        let mut found = Found::default();
        for m in got {
            if let Some(m) = m? {
                found.take(
                    q,
                    Raw {
                        seq: m.sequence,
                        subject: m.subject.to_string(),
                        headers: m.headers,
                        payload: m.payload,
                        pending: None,
                    },
                );
            }
        }
        self.visible(found.kept).await
    }

    /// Items of `kept` that are visible (not in a batch that has not committed).
    async fn visible(&self, kept: Vec<(Raw, Env)>) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(kept.len());
        for (raw, env) in kept {
            if let Some(b) = &env.batch
                && !self.is_committed(b).await?
            {
                continue;
            }
            out.push(Item {
                seq: raw.seq,
                env,
                body: raw.payload,
                rcpt: None,
            });
        }
        Ok(out)
    }

    /// One probe: the first match of `filter` at or after `at`, and how many matches lie
    /// from there to the end (0 when none).
    async fn probe(&self, filter: &str, at: Start<'_>) -> Result<Probe> {
        let p = self.page_retrying(filter, at, 1).await?;
        Ok(match p.msgs.into_iter().next() {
            Some(m) => Probe {
                from_here: m.pending.unwrap_or(0).saturating_add(1),
                first: Some(m),
            },
            None => Probe {
                first: None,
                from_here: 0,
            },
        })
    }

    /// A [`page`] of the mail stream, retried like every read.
    async fn page_retrying(&self, filter: &str, at: Start<'_>, batch: usize) -> Result<Page> {
        self.retrying(&format!("searching {MAIL_STREAM}"), || async {
            match page(
                &self.client,
                MAIL_STREAM,
                filter,
                at,
                batch,
                REQUEST_TIMEOUT,
            )
            .await
            {
                Ok(p) => Attempt::Done(p),
                Err(e) => Attempt::Again(e.0),
            }
        })
        .await
    }

    /// Reads the matches of `filter` in `[probe's start, hi]` into `found` by batch gets:
    /// the probe's message, then pages of the expected count plus one, until a message
    /// past `hi` or the stream's end. Returns the last sequence read (0: none).
    async fn read_window(
        &self,
        q: &History,
        found: &mut Found,
        filter: &str,
        probe: Probe,
        expected: u64,
        hi: u64,
    ) -> Result<u64> {
        let Some(first) = probe.first.filter(|m| m.seq <= hi) else {
            return Ok(0);
        };
        let mut next = first.seq + 1;
        found.take(q, first);
        let mut read = 1u64;
        loop {
            let left = expected.saturating_sub(read);
            let batch = usize::try_from(left.saturating_add(1)).unwrap_or(PAGE);
            let p = self.page_retrying(filter, Start::Seq(next), batch).await?;
            let got = p.msgs.len();
            for m in p.msgs {
                if m.seq > hi {
                    return Ok(next - 1);
                }
                next = m.seq + 1;
                read += 1;
                found.take(q, m);
            }
            if got == 0 || p.pending_after == Some(0) {
                return Ok(next - 1);
            }
        }
    }

    /// Reads the matches of `filters` in `[lo, hi]` into `found` through an ordered
    /// consumer — several times cheaper per message for the server than batch gets (with
    /// 100 000 messages: about 4 µs against 27 µs of server CPU each), at the cost of
    /// creating it. `Ok(false)`, with `found` untouched, when a consumer could not be
    /// made or stalled (a user without the right, a server that lost it): the caller
    /// reads the window by batch gets instead.
    async fn consume_window(
        &self,
        q: &History,
        found: &mut Found,
        filters: &[String],
        lo: u64,
        hi: u64,
    ) -> Result<bool> {
        use jetstream::consumer::DeliverPolicy;
        use jetstream::consumer::push::OrderedConfig;
        let cfg = OrderedConfig {
            deliver_subject: self.client.new_inbox(),
            filter_subjects: filters.to_vec(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: lo },
            description: Some("relay search (docs/nats.md)".into()),
            ..Default::default()
        };
        let consumer =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.mail.create_consumer(cfg)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!("search: no consumer ({e}); batch gets instead");
                    return Ok(false);
                }
                Err(_) => {
                    tracing::debug!("search: creating a consumer timed out; batch gets instead");
                    return Ok(false);
                }
            };
        let name = consumer.cached_info().name.clone();
        let mut part = Found::default();
        let done = async {
            let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
            loop {
                let m = match tokio::time::timeout(REQUEST_TIMEOUT, msgs.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => return Err(e.to_string()),
                    Ok(None) => return Err("the consumer ended".to_string()),
                    Err(_) => return Err("the consumer stalled".to_string()),
                };
                let (seq, pending) = match m.info() {
                    Ok(i) => (i.stream_sequence, i.pending),
                    Err(e) => return Err(e.to_string()),
                };
                if seq > hi {
                    return Ok(());
                }
                let raw = Raw {
                    seq,
                    subject: m.message.subject.to_string(),
                    headers: m.message.headers.clone().unwrap_or_default(),
                    payload: m.message.payload.clone(),
                    pending: Some(pending),
                };
                part.take(q, raw);
                if pending == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        // Ephemeral: the server also drops it once idle; deleting now frees it at once.
        let _ = self.mail.delete_consumer(&name).await;
        match done {
            Ok(()) => {
                found.kept.append(&mut part.kept);
                found.read += part.read;
                Ok(true)
            }
            Err(e) => {
                tracing::debug!("search: consumer failed ({e}); batch gets instead");
                Ok(false)
            }
        }
    }

    /// Newest-first windows over the stream (see the module docs); the items of at least
    /// `limit` results when there are that many within the bound.
    async fn history_scan(
        &self,
        q: &History,
        filters: &[String],
        limit: usize,
        bound: u64,
        consumer_min: u64,
    ) -> Result<Vec<Item>> {
        let (first_seq, last) = self.mail_bounds().await?;
        if last == 0 {
            return Ok(Vec::new());
        }
        let mut start = first_seq.max(1);
        if let Some(since) = q.since_ms {
            let t = rfc3339(since.saturating_sub(SINCE_SLACK_MS));
            match self
                .probe(&format!("{MAIL_PREFIX}.>"), Start::Time(&t))
                .await?
                .first
            {
                Some(m) => start = start.max(m.seq),
                None => return Ok(Vec::new()),
            }
        }
        if start > last {
            return Ok(Vec::new());
        }
        // How many matches each filter has from the start: the density that sizes windows.
        let mut at_start = Vec::with_capacity(filters.len());
        for f in filters {
            at_start.push(self.probe(f, Start::Seq(start)).await?);
        }
        let total: u64 = at_start.iter().map(|p| p.from_here).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        let range = last - start + 1;
        let span_for = |want: u64| -> u64 {
            let s = (u128::from(range) * u128::from(want)).div_ceil(u128::from(total));
            u64::try_from(s).unwrap_or(u64::MAX).clamp(1, range)
        };
        let mut budget = bound;
        let mut want = (limit as u64).saturating_mul(2).max(64);
        // Per filter: matches above the current window. None above the newest window are
        // counted (later sends are read and dropped).
        let mut above = vec![0u64; filters.len()];
        let mut hi = last;
        let mut out: Vec<Item> = Vec::new();
        let mut newest = true;
        let mut windows = 0u32;
        loop {
            let mut lo = (hi + 1)
                .saturating_sub(span_for(want.min(budget)))
                .max(start);
            // Probe the window; while it holds more than the bound has left, shrink it in
            // proportion (to nine tenths of what is left: densities are uneven).
            let (probes, counts) = loop {
                let probes = if lo == start && !at_start.is_empty() {
                    // The probes that counted the total are this window's.
                    std::mem::take(&mut at_start)
                } else {
                    let mut probes = Vec::with_capacity(filters.len());
                    for f in filters {
                        probes.push(self.probe(f, Start::Seq(lo)).await?);
                    }
                    probes
                };
                let counts: Vec<u64> = probes
                    .iter()
                    .zip(&above)
                    .map(|(p, a)| match &p.first {
                        Some(m) if m.seq <= hi => p.from_here.saturating_sub(*a).max(1),
                        _ => 0,
                    })
                    .collect();
                let n: u64 = counts.iter().sum();
                if n <= budget {
                    break (probes, counts);
                }
                if lo == hi {
                    self.warn_cut(filters, bound, total, &above);
                    return Ok(out);
                }
                let span = u128::from(hi - lo + 1);
                let keep = span * u128::from((budget / 10 * 9).max(1)) / u128::from(n);
                let keep = u64::try_from(keep).unwrap_or(1).clamp(1, hi - lo);
                lo = hi + 1 - keep;
            };
            let next_above: Vec<u64> = probes.iter().map(|p| p.from_here).collect();
            let n: u64 = counts.iter().sum();
            let mut found = Found::default();
            let consumed =
                n >= consumer_min && self.consume_window(q, &mut found, filters, lo, hi).await?;
            let mut lasts = Vec::with_capacity(filters.len());
            if !consumed {
                for ((f, p), c) in filters.iter().zip(probes).zip(&counts) {
                    lasts.push(self.read_window(q, &mut found, f, p, *c, hi).await?);
                }
            }
            if std::mem::take(&mut newest) && !consumed {
                // The batch get may have come from a replica a moment behind: the leader
                // has the rest of what this look counts. (A consumer reads the leader.)
                for (f, last) in filters.iter().zip(lasts) {
                    let mut at = last.max(lo.saturating_sub(1)) + 1;
                    while let Some(r) = self.read_next(f, at).await? {
                        if r.seq > hi {
                            break;
                        }
                        at = r.seq + 1;
                        found.take(q, r);
                    }
                }
            }
            budget = budget.saturating_sub(found.read);
            found.kept.sort_by_key(|(r, _)| r.seq);
            found.kept.dedup_by_key(|(r, _)| r.seq);
            out.extend(self.visible(found.kept).await?);
            above = next_above;
            windows += 1;
            if out.len() >= limit || lo <= start {
                tracing::debug!(
                    read = bound - budget,
                    windows,
                    found = out.len(),
                    "history: scan done"
                );
                return Ok(out);
            }
            // What is left of the bound is not worth more windows below a hundredth.
            if budget == 0 || budget < bound / 100 {
                self.warn_cut(filters, bound, total, &above);
                return Ok(out);
            }
            hi = lo - 1;
            want = want.saturating_mul(4);
        }
    }

    /// Says that the bound ended a search before its start: what was read, what was not.
    fn warn_cut(&self, filters: &[String], bound: u64, total: u64, above: &[u64]) {
        let older = total.saturating_sub(above.iter().sum());
        tracing::warn!(
            "search stopped at its bound ({SCAN_ENV}={bound} messages read): about {older} older \
             messages matching {} were not searched, so older results may be missing; \
             narrow the search (--since, --from, --to, --thread) or raise {SCAN_ENV}",
            filters.join(" and "),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::nats::NatsStore;
    use crate::store::query::TextQuery;
    use crate::store::{FetchMode, Registration, Store, TEXT_PLAIN};

    #[test]
    fn filters_narrow_by_every_side_given() {
        let q = |p: Option<&str>, to: Option<&str>, from: Option<&str>| History {
            participant: p.map(String::from),
            to: to.map(String::from),
            from: from.map(String::from),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(sides(&q(None, None, None)), vec![(None, None)]);
        assert_eq!(
            sides(&q(Some("p"), None, None)),
            vec![(Some("p"), None), (None, Some("p"))]
        );
        assert_eq!(
            sides(&q(Some("p"), Some("b"), None)),
            vec![(Some("b"), Some("p"))]
        );
        assert_eq!(
            sides(&q(Some("p"), None, Some("a"))),
            vec![(Some("p"), Some("a"))]
        );
        assert!(sides(&q(Some("p"), Some("a"), Some("b"))).is_empty());
        assert_eq!(
            sides(&q(Some("p"), Some("p"), Some("b"))),
            vec![(Some("p"), Some("b"))]
        );
        assert_eq!(mail_filter(None, None, None), "relay.mail.>");
        assert_eq!(
            mail_filter(Some("a.b"), None, None),
            "relay.mail.a=2Eb.*.*.*"
        );
    }

    /// The prefilter never says no where the full match says yes.
    #[test]
    fn the_prefilter_is_only_a_necessary_condition() {
        let bodies = [
            "Lease renewed by Bob",
            "lease-holder",
            "leaseholder",
            "Émile wrote",
            "emile",
            "ALPHA beta",
            "nothing here",
            "",
            "x1 y2",
            "naïve café",
        ];
        let queries = [
            "lease",
            "lease*",
            "\"lease renewed\"",
            "emile",
            "Émile",
            "alpha -beta",
            "alpha OR nothing",
            "caf*",
            "naive",
            "y2",
            "zzz OR x1",
        ];
        for q in queries {
            let q = TextQuery::parse(q).unwrap();
            for b in bodies {
                if q.matches(b) {
                    assert!(may_match(&q, b.as_bytes()), "{q:?} on {b:?}");
                }
            }
        }
        let q = TextQuery::parse("lease").unwrap();
        assert!(!may_match(&q, b"nothing here"));
    }

    /// A store on a fresh single-node server (None: no nats-server here).
    fn store() -> Option<(NatsStore, crate::natsd::Cluster, tempfile::TempDir)> {
        if crate::natsd::skip_or_fail("NATS history") {
            return None;
        }
        let cluster = crate::natsd::Cluster::start(1, Duration::from_secs(300)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = NatsStore::open(&cluster.urls(), &Config::at(dir.path().join("home"))).unwrap();
        Some((s, cluster, dir))
    }

    fn reg(s: &NatsStore, name: &str) -> String {
        s.register(&Registration {
            name: Some(name.into()),
            ..Default::default()
        })
        .unwrap()
        .endpoint
        .id
    }

    fn new(from: &str, to: &str, body: &str) -> NewMessage {
        NewMessage {
            from: from.into(),
            to: to.into(),
            thread: None,
            reply_to: None,
            intent: Intent::Notify,
            content_type: TEXT_PLAIN.into(),
            body: body.as_bytes().to_vec(),
            expires_at: None,
            hold: None,
        }
    }

    fn bodies(m: &[Message]) -> Vec<String> {
        m.iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }

    /// Random-ish queries against a brute-force reading of what was sent: the windows,
    /// probes and filters must lose nothing and add nothing.
    #[test]
    fn history_equals_a_brute_force_filter() {
        let Some((s, _c, _d)) = store() else { return };
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|n| reg(&s, n)).collect();
        let mut sent: Vec<(NewMessage, String, i64)> = Vec::new();
        let words = ["lease", "alpha", "beta", "gamma"];
        let mut msgs = Vec::new();
        for k in 0..900usize {
            let (f, t) = (k % 3, (k / 3) % 3);
            let mut m = new(&ids[f], &ids[t], &format!("{} n{k}", words[k % 4]));
            m.thread = (k % 5 == 0).then(|| format!("t{}", k % 2));
            m.reply_to = sent.get(k / 2).map(|(_, id, _)| id.clone());
            msgs.push(m.clone());
            if msgs.len() == 50 || k % 7 == 0 {
                // Batches of several and single sends both.
                let receipts = s.enqueue_batch(&msgs).unwrap();
                for (m, r) in msgs.drain(..).zip(receipts) {
                    sent.push((m, r.id, r.created_at));
                }
            }
        }
        for (m, r) in msgs.iter().zip(s.enqueue_batch(&msgs).unwrap()) {
            sent.push((m.clone(), r.id, r.created_at));
        }
        let mid = sent[sent.len() / 2].2;
        let some_ids: Vec<String> = sent.iter().step_by(37).map(|x| x.1.clone()).collect();
        let many_ids: Vec<String> = sent.iter().step_by(2).map(|x| x.1.clone()).collect();
        let queries: Vec<History> = vec![
            History {
                limit: 1000,
                ..Default::default()
            },
            History {
                limit: 7,
                ..Default::default()
            },
            History {
                participant: Some(ids[0].clone()),
                limit: 1000,
                ..Default::default()
            },
            History {
                participant: Some(ids[1].clone()),
                to: Some(ids[2].clone()),
                limit: 1000,
                ..Default::default()
            },
            History {
                from: Some(ids[2].clone()),
                limit: 30,
                ..Default::default()
            },
            History {
                to: Some(ids[1].clone()),
                thread: Some("t1".into()),
                limit: 1000,
                ..Default::default()
            },
            History {
                text: Some(TextQuery::parse("lease n1*").unwrap()),
                limit: 1000,
                ..Default::default()
            },
            History {
                text: Some(TextQuery::parse("gamma -n2*").unwrap()),
                participant: Some(ids[2].clone()),
                limit: 5,
                ..Default::default()
            },
            History {
                ids: Some(some_ids.clone()),
                limit: 1000,
                ..Default::default()
            },
            History {
                ids: Some(some_ids),
                to: Some(ids[0].clone()),
                limit: 1000,
                ..Default::default()
            },
            History {
                ids: Some(many_ids),
                from: Some(ids[1].clone()),
                limit: 1000,
                ..Default::default()
            },
            History {
                reply_to: Some(vec![sent[10].1.clone(), sent[11].1.clone()]),
                limit: 1000,
                ..Default::default()
            },
            History {
                since_ms: Some(mid),
                limit: 1000,
                ..Default::default()
            },
            History {
                since_ms: Some(mid),
                participant: Some(ids[1].clone()),
                limit: 3,
                ..Default::default()
            },
            History {
                text: Some(TextQuery::parse("nothingmatches").unwrap()),
                limit: 10,
                ..Default::default()
            },
        ];
        for (n, q) in queries.iter().enumerate() {
            let want: Vec<String> = sent
                .iter()
                .rev()
                .filter(|(m, id, at)| {
                    q.participant
                        .as_ref()
                        .is_none_or(|p| m.from == *p || m.to == *p)
                        && q.from.as_ref().is_none_or(|f| m.from == *f)
                        && q.to.as_ref().is_none_or(|t| m.to == *t)
                        && q.thread
                            .as_ref()
                            .is_none_or(|t| m.thread.as_ref() == Some(t))
                        && q.ids.as_ref().is_none_or(|i| i.contains(id))
                        && q.reply_to
                            .as_ref()
                            .is_none_or(|r| m.reply_to.as_ref().is_some_and(|x| r.contains(x)))
                        && q.since_ms.is_none_or(|s| *at >= s)
                        && q.text
                            .as_ref()
                            .is_none_or(|t| t.matches(&String::from_utf8_lossy(&m.body)))
                })
                .take(q.limit)
                .map(|(_, id, _)| id.clone())
                .collect();
            // Batch gets only, the default, and a consumer for every window.
            for consumer_min in [u64::MAX, CONSUMER_MIN, 1] {
                let q2 = q.clone();
                let got: Vec<String> =
                    s.run(move |i| async move {
                        i.history_within(&q2, DEFAULT_SCAN, consumer_min).await
                    })
                    .unwrap()
                    .into_iter()
                    .map(|m| m.id)
                    .collect();
                assert_eq!(got, want, "query {n} ({consumer_min}): {q:?}");
            }
        }
    }

    /// States come from receipts; an uncommitted batch and a message relay did not write
    /// are invisible; the bound cuts the scan to the newest messages.
    #[test]
    fn states_visibility_and_the_bound() {
        let Some((s, _c, _d)) = store() else { return };
        let (a, b) = (reg(&s, "a"), reg(&s, "b"));
        for k in 0..300 {
            s.enqueue(&new(&a, &b, &format!("m{k}"))).unwrap();
        }
        let got = s
            .fetch(
                &b,
                &crate::store::Fetch {
                    limit: 2,
                    mode: FetchMode::Take,
                    filter: Default::default(),
                },
            )
            .unwrap();
        assert_eq!(bodies(&got), ["m0", "m1"]);
        s.fetch(
            &b,
            &crate::store::Fetch {
                limit: 1,
                mode: FetchMode::Deliver {
                    lease: Duration::from_secs(60),
                },
                filter: Default::default(),
            },
        )
        .unwrap();
        let all = s
            .history(&History {
                limit: 1000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(bodies(&all[..2]), ["m299", "m298"]);
        let states: Vec<State> = all.iter().rev().take(4).map(|m| m.state).collect();
        assert_eq!(
            states,
            [State::Acked, State::Acked, State::Delivered, State::Queued]
        );

        // A batch published but not committed, and a message without relay's headers.
        let inner = s.inner.clone();
        let (a2, b2) = (a.clone(), b.clone());
        s.run(move |i| async move {
            let env = Env {
                id: uuid::Uuid::now_v7().to_string(),
                from: a2.clone(),
                from_name: None,
                to: b2.clone(),
                thread: None,
                reply_to: None,
                intent: Intent::Notify,
                content_type: TEXT_PLAIN.into(),
                created_at: now_ms(),
                expires_at: None,
                hold_until: None,
                batch: Some(uuid::Uuid::now_v7().to_string()),
            };
            i.publish(
                mail_subject(&b2, &a2, None, &env.id),
                env.headers(),
                Bytes::from("uncommitted"),
            )
            .await?;
            i.publish(
                mail_subject(&b2, &a2, None, "x"),
                HeaderMap::new(),
                Bytes::from("forged"),
            )
            .await?;
            Ok(())
        })
        .unwrap();
        let newest = s
            .history(&History {
                to: Some(b.clone()),
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(bodies(&newest), ["m299", "m298", "m297"]);

        // The bound: 100 messages read, the newest 100 (the two invisible ones count).
        let cut = s
            .run(move |i| async move {
                i.history_within(
                    &History {
                        limit: 1000,
                        ..Default::default()
                    },
                    100,
                    u64::MAX,
                )
                .await
            })
            .unwrap();
        assert!((85..=98).contains(&cut.len()), "{}", cut.len());
        let want: Vec<String> = (0..cut.len()).map(|k| format!("m{}", 299 - k)).collect();
        assert_eq!(bodies(&cut), want);
        let small = s
            .run(move |i| async move {
                i.history_within(
                    &History {
                        participant: Some(a.clone()),
                        limit: 5,
                        ..Default::default()
                    },
                    100,
                    1,
                )
                .await
            })
            .unwrap();
        assert_eq!(bodies(&small), ["m299", "m298", "m297", "m296", "m295"]);
        drop(inner);
    }
}
