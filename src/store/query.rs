//! relay's full-text query language, one definition for every backend (docs/coordination.md).
//!
//! A query is words, `"quoted phrases"` and `prefix*` terms; all must appear (AND).
//! `-word` (or `NOT word`) excludes; `OR` between groups matches either group. Matching
//! is on tokens, as [`tokenize`] makes them: maximal runs of letters, digits and combining
//! marks, NFD-decomposed with the marks dropped and lower-cased (`Émile` matches `emile`,
//! `שָׁלוֹם` matches `שלום`, `हिन्दी` is one token). Both stores use this one tokenizer: the
//! NATS store evaluates [`TextQuery::matches`] on each body, and the SQLite store indexes
//! each body's [`tokenize`] output joined by spaces (FTS5's `ascii` tokenizer then splits
//! at exactly those spaces), so [`TextQuery::to_fts5`] and [`TextQuery::matches`] agree by
//! construction. Nothing the user types reaches FTS5's own syntax: every token is quoted.

use unicode_normalization::UnicodeNormalization;

/// Longest query: 1024 bytes.
pub const MAX_QUERY: usize = 1024;
/// Most terms in one query: 32.
pub const MAX_TERMS: usize = 32;

/// A query that is not valid. Nothing was searched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("search query {query:?}: {reason}")]
pub struct QueryError {
    /// The query as given.
    pub query: String,
    /// What is wrong, and what would be right.
    pub reason: String,
}

/// One term: a sequence of tokens that must appear next to each other, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Normalised tokens (at least one).
    pub tokens: Vec<String>,
    /// The last token matches any token it starts (`lease*`).
    pub prefix: bool,
}

/// A conjunction: every `must` term and no `not` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Terms that must appear (at least one).
    pub must: Vec<Term>,
    /// Terms that must not appear.
    pub not: Vec<Term>,
}

/// A parsed query: any group matching is a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQuery {
    /// The query as given.
    pub source: String,
    /// Alternatives (at least one).
    pub groups: Vec<Group>,
}

/// Splits text into normalised tokens: runs of alphanumeric characters, NFD-decomposed
/// with combining marks dropped, lower-cased.
pub fn tokenize(text: &str) -> Vec<String> {
    token_spans(text).into_iter().map(|(_, _, t)| t).collect()
}

/// Tokens with their byte ranges in `text`: `(start, end, token)`.
pub fn token_spans(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_token_char(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i, normalize(&text[s..i])));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len(), normalize(&text[s..])));
    }
    out.retain(|(_, _, t)| !t.is_empty());
    out
}

fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)
}

fn normalize(word: &str) -> String {
    word.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

impl TextQuery {
    /// Parses `query`.
    ///
    /// # Errors
    /// [`QueryError`] for an empty query, one over [`MAX_QUERY`] bytes or [`MAX_TERMS`]
    /// terms, an unbalanced `"`, a group with only excluded terms, or `OR` with nothing on
    /// one side.
    pub fn parse(query: &str) -> Result<TextQuery, QueryError> {
        let err = |reason: String| QueryError {
            query: query.to_string(),
            reason,
        };
        if query.len() > MAX_QUERY {
            return Err(err(format!(
                "{} bytes is over the {MAX_QUERY}-byte limit",
                query.len()
            )));
        }
        // Lexing: quoted phrases, `OR`, `NOT`, `-` before a word, bare words.
        enum Lex {
            Word {
                text: String,
                quoted: bool,
                neg: bool,
                prefix: bool,
            },
            Or,
        }
        let mut lexed = Vec::new();
        let mut chars = query.char_indices().peekable();
        let mut negate_next = false;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            let mut neg = std::mem::take(&mut negate_next);
            let mut start = i;
            if c == '-' {
                chars.next();
                neg = true;
                match chars.peek() {
                    Some(&(j, d)) if !d.is_whitespace() => start = j,
                    _ => continue,
                }
            }
            if chars.peek().map(|&(_, d)| d) == Some('"') {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                for (_, d) in chars.by_ref() {
                    if d == '"' {
                        closed = true;
                        break;
                    }
                    text.push(d);
                }
                if !closed {
                    return Err(err(format!(
                        "the quote at byte {start} is never closed; end the phrase with \""
                    )));
                }
                let prefix = chars.peek().map(|&(_, d)| d) == Some('*');
                if prefix {
                    chars.next();
                }
                lexed.push(Lex::Word {
                    text,
                    quoted: true,
                    neg,
                    prefix,
                });
                continue;
            }
            let mut text = String::new();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_whitespace() || d == '"' {
                    break;
                }
                text.push(d);
                chars.next();
            }
            match (text.as_str(), neg) {
                ("OR", false) => lexed.push(Lex::Or),
                ("NOT", false) => negate_next = true,
                _ => {
                    let prefix = text.ends_with('*');
                    lexed.push(Lex::Word {
                        text,
                        quoted: false,
                        neg,
                        prefix,
                    });
                }
            }
        }
        if negate_next {
            return Err(err("NOT has nothing after it; write NOT word".into()));
        }
        let mut groups = vec![Group {
            must: Vec::new(),
            not: Vec::new(),
        }];
        let mut terms = 0;
        for l in lexed {
            match l {
                Lex::Or => {
                    if groups
                        .last()
                        .is_some_and(|g| g.must.is_empty() && g.not.is_empty())
                    {
                        return Err(err("OR has nothing before it; write a OR b".into()));
                    }
                    groups.push(Group {
                        must: Vec::new(),
                        not: Vec::new(),
                    });
                }
                Lex::Word {
                    text,
                    quoted,
                    neg,
                    prefix,
                } => {
                    let tokens = tokenize(&text);
                    if tokens.is_empty() {
                        // Punctuation only ("(", "!!"): nothing a token could match.
                        if quoted {
                            return Err(err(format!(
                                "the phrase \"{text}\" has no letters or digits to search for"
                            )));
                        }
                        continue;
                    }
                    terms += 1;
                    if terms > MAX_TERMS {
                        return Err(err(format!("more than {MAX_TERMS} terms")));
                    }
                    let term = Term { tokens, prefix };
                    let g = groups.last_mut().expect("one group at least");
                    if neg {
                        g.not.push(term)
                    } else {
                        g.must.push(term)
                    }
                }
            }
        }
        if groups
            .last()
            .is_some_and(|g| g.must.is_empty() && g.not.is_empty())
            && groups.len() > 1
        {
            return Err(err("OR has nothing after it; write a OR b".into()));
        }
        if groups.iter().all(|g| g.must.is_empty() && g.not.is_empty()) {
            return Err(err(
                "nothing to search for; give at least one word with letters or digits".into(),
            ));
        }
        if groups.iter().any(|g| g.must.is_empty()) {
            return Err(err(
                "a group has only excluded terms; say what to find, e.g. 'deploy -staging'".into(),
            ));
        }
        Ok(TextQuery {
            source: query.to_string(),
            groups,
        })
    }

    /// The query as an FTS5 MATCH expression: every token double-quoted, so no FTS5
    /// operator or column filter can come from the user.
    pub fn to_fts5(&self) -> String {
        fn term(t: &Term) -> String {
            let quoted: Vec<String> = t
                .tokens
                .iter()
                .map(|k| format!("\"{}\"", k.replace('"', "\"\"")))
                .collect();
            let mut s = quoted.join(" + ");
            if t.prefix {
                s.push('*');
            }
            s
        }
        self.groups
            .iter()
            .map(|g| {
                let mut s = format!(
                    "({})",
                    g.must.iter().map(term).collect::<Vec<_>>().join(" AND ")
                );
                for n in &g.not {
                    s = format!("({s} NOT {})", term(n));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// Whether `text` matches, by the same rules as [`TextQuery::to_fts5`] under FTS5.
    pub fn matches(&self, text: &str) -> bool {
        let tokens = tokenize(text);
        self.groups.iter().any(|g| {
            g.must.iter().all(|t| find(&tokens, t).is_some())
                && !g.not.iter().any(|t| find(&tokens, t).is_some())
        })
    }

    /// A short excerpt of `text` around its first match, with matched words marked
    /// `**like this**`; control characters and line breaks become spaces. At most about
    /// `width` characters (32 to 400), with `…` where it was cut.
    pub fn snippet(&self, text: &str, width: usize) -> String {
        let width = width.clamp(32, 400);
        let clean: String = text
            .chars()
            .map(|c| {
                if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let spans = token_spans(&clean);
        let tokens: Vec<String> = spans.iter().map(|(_, _, t)| t.clone()).collect();
        // Token indexes of every matched term occurrence (positive terms only).
        let mut hit = vec![false; tokens.len()];
        for g in &self.groups {
            for t in &g.must {
                let mut from = 0;
                while let Some(i) = find(&tokens[from..], t) {
                    for k in 0..t.tokens.len() {
                        hit[from + i + k] = true;
                    }
                    from += i + 1;
                }
            }
        }
        let first = hit.iter().position(|h| *h);
        let chars: Vec<(usize, char)> = clean.char_indices().collect();
        let centre = first.map_or(0, |i| spans[i].0);
        let centre_char = chars.iter().position(|(b, _)| *b >= centre).unwrap_or(0);
        let start_char = centre_char.saturating_sub(width / 3);
        let end_char = (start_char + width).min(chars.len());
        let byte = |c: usize| chars.get(c).map_or(clean.len(), |(b, _)| *b);
        let (lo, hi) = (byte(start_char), byte(end_char));
        let mut out = String::new();
        if start_char > 0 {
            out.push('…');
        }
        let mut at = lo;
        for (i, (s, e, _)) in spans.iter().enumerate() {
            if !hit[i] || *s < lo || *e > hi {
                continue;
            }
            out.push_str(&clean[at..*s]);
            out.push_str("**");
            out.push_str(&clean[*s..*e]);
            out.push_str("**");
            at = *e;
        }
        out.push_str(&clean[at..hi]);
        if end_char < chars.len() {
            out.push('…');
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// The first index where `term` starts in `tokens`.
fn find(tokens: &[String], term: &Term) -> Option<usize> {
    let n = term.tokens.len();
    if tokens.len() < n {
        return None;
    }
    (0..=tokens.len() - n).find(|&i| {
        term.tokens.iter().enumerate().all(|(k, want)| {
            let have = &tokens[i + k];
            if term.prefix && k == n - 1 {
                have.starts_with(want.as_str())
            } else {
                have == want
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> TextQuery {
        TextQuery::parse(s).unwrap()
    }

    #[test]
    fn words_phrases_prefixes_and_exclusions() {
        assert!(q("lease expiry").matches("the Lease has an expiry"));
        assert!(!q("lease expiry").matches("the lease"));
        assert!(q("\"lease expiry\"").matches("a lease, expiry!"));
        assert!(!q("\"lease expiry\"").matches("expiry lease"));
        assert!(q("lea*").matches("leases"));
        assert!(!q("lea").matches("leases"));
        assert!(q("deploy -staging").matches("deploy prod"));
        assert!(!q("deploy -staging").matches("deploy staging"));
        assert!(!q("deploy NOT staging").matches("deploy staging"));
        assert!(q("alpha OR beta").matches("beta"));
        assert!(q("emile").matches("Émile"));
        assert!(q("ÉMILE").matches("emile"));
        assert!(q("foo-bar").matches("foo bar"));
    }

    #[test]
    fn bad_queries_are_errors() {
        for bad in [
            "", "   ", "\"open", "-x", "a OR", "OR a", "NOT", "!!!", "\"!!\"",
        ] {
            assert!(TextQuery::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TextQuery::parse(&"a ".repeat(600)).is_err());
        assert!(TextQuery::parse(&"w ".repeat(MAX_TERMS + 1)).is_err());
    }

    #[test]
    fn fts5_expression_quotes_every_token() {
        assert_eq!(
            q("a \"b c\" d*").to_fts5(),
            "(\"a\" AND \"b\" + \"c\" AND \"d\"*)"
        );
        assert_eq!(q("a -b OR c").to_fts5(), "((\"a\") NOT \"b\") OR (\"c\")");
        // Column filters and operators in the input are just tokens.
        assert_eq!(
            q("body:x NEAR(y)").to_fts5(),
            "(\"body\" + \"x\" AND \"near\" + \"y\")"
        );
    }

    #[test]
    fn snippets_mark_matches_and_drop_controls() {
        let s = q("lease").snippet("first line\nthe \x1b[31m lease\x07 lapsed", 80);
        assert_eq!(s, "first line the [31m **lease** lapsed");
        let long = format!("{} needle {}", "x ".repeat(300), "y ".repeat(300));
        let s = q("needle").snippet(&long, 60);
        assert!(
            s.starts_with('…') && s.ends_with('…') && s.contains("**needle**"),
            "{s}"
        );
    }
}
