//! Reservation globs: how they are written, and when two of them overlap (DESIGN.md §12).
//!
//! A reservation glob is a [`globset`] pattern relative to the project root, compiled with
//! `literal_separator` (so `*` and `?` never cross `/`; `**` as a whole segment crosses any
//! number of them) and `\` as an escape. Two globs *overlap* when some path matches both.
//! That is decided exactly where it can be: each glob's regex becomes an anchored DFA and
//! the product of the two automata is searched for a byte string both accept. When a DFA
//! would be too large to build, or the search too long, the answer is `true`: a reservation
//! wrongly refused can be forced, one wrongly granted lets two sessions edit one file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::OnceLock;

use globset::{Glob, GlobBuilder};
use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};

/// Longest reservation glob: 1024 bytes.
pub const MAX_GLOB: usize = 1024;

/// Largest DFA built for one glob (bytes of transition table): beyond it, overlap is
/// assumed. Globs of ordinary size need a few KiB; building one this large takes about
/// 7 ms in a release build (measured: 770 KiB in 0.87 s, debug build, about 20 times
/// slower).
const DFA_SIZE_LIMIT: usize = 128 << 10;

/// How much work deciding overlaps may take, shared by every pair one request decides
/// (a reservation request checks each of its globs against every live reservation of the
/// project): DFA bytes built, and product transitions followed (state pairs visited times
/// the joint alphabet's classes). Past either, every pair not yet decided is
/// [`Overlap::Undecided`], which callers count as a conflict ("unsure = conflict").
/// [`Budget::default`] is calibrated so one request finishes in tens of ms (release
/// build) whatever its globs.
#[derive(Debug, Clone)]
pub struct Budget {
    dfa_bytes: usize,
    steps: usize,
}

/// DFA bytes one request may build: 1 MiB (about 50 ms in a release build at worst).
const BUDGET_DFA_BYTES: usize = 1 << 20;
/// Product transitions one request may follow: 500 000 (about 20 ms in a release build;
/// measured 2 million in 3.3 s, debug build, and about 70 ms, release).
const BUDGET_STEPS: usize = 500_000;

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            dfa_bytes: BUDGET_DFA_BYTES,
            steps: BUDGET_STEPS,
        }
    }
}

impl Budget {
    /// A budget of `dfa_bytes` DFA bytes and `steps` product transitions (for tests and
    /// tuning; requests use [`Budget::default`]).
    pub fn new(dfa_bytes: usize, steps: usize) -> Budget {
        Budget { dfa_bytes, steps }
    }

    /// Whether nothing is left: every further undecided pair stays undecided.
    pub fn is_spent(&self) -> bool {
        self.dfa_bytes == 0 || self.steps == 0
    }
}

/// The answer to "does some path match both globs?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// No path matches both.
    Disjoint,
    /// Some path matches both.
    Overlaps,
    /// Not decided within the work [`Budget`] (or a glob's DFA is over the size limit):
    /// to be treated as an overlap.
    Undecided,
}

impl Overlap {
    /// Whether a reservation must treat the pair as conflicting: overlapping or unsure.
    pub fn conflicts(self) -> bool {
        self != Overlap::Disjoint
    }
}

/// A glob that is not valid for a reservation. Nothing was reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("glob {glob:?}: {reason}")]
pub struct GlobError {
    /// The glob as given.
    pub glob: String,
    /// What is wrong, and what would be right.
    pub reason: String,
}

/// Normalises a reservation glob relative to the project root.
///
/// Leading `./` and `.` segments are dropped and runs of `/` collapse to one; a trailing
/// `/` means everything under that directory (`src/` → `src/**`); `.` or `./` alone is the
/// whole project (`**`). The result is what [`overlap`] and [`matches`] expect.
///
/// # Errors
/// [`GlobError`] for an empty glob, one over [`MAX_GLOB`] bytes, one with NUL or another
/// control character, an absolute path (`/…`), a `..` segment (also inside `{…}`), or a
/// glob that does not parse (an unclosed `[` or `{`, a dangling `\`).
pub fn normalize_glob(glob: &str) -> Result<String, GlobError> {
    let err = |reason: String| GlobError {
        glob: glob.to_string(),
        reason,
    };
    if glob.is_empty() {
        return Err(err(
            "empty; give a path or glob relative to the project root, e.g. 'src/**'".into(),
        ));
    }
    if glob.len() > MAX_GLOB {
        return Err(err(format!(
            "{} bytes is over the {MAX_GLOB}-byte limit; reserve a directory ('src/store/') \
             instead of listing files",
            glob.len()
        )));
    }
    if let Some(c) = glob.chars().find(|c| c.is_control()) {
        return Err(err(format!(
            "contains the control character U+{:04X}; paths in a reservation are printable \
             text",
            c as u32
        )));
    }
    if let Some(c) = glob.chars().find(|c| is_invisible_format(*c)) {
        return Err(err(format!(
            "contains the invisible format character U+{:04X} (a bidirectional control or \
             zero-width character), which makes the glob read differently from what it \
             matches; type the path without it",
            c as u32
        )));
    }
    if glob.starts_with('/') {
        return Err(err(format!(
            "is an absolute path; give it relative to the project root, e.g. '{}'",
            glob.trim_start_matches('/')
        )));
    }
    let raw: Vec<&str> = glob.split('/').collect();
    if raw
        .iter()
        .any(|seg| seg.split(['{', '}', ',']).any(|piece| piece == ".."))
    {
        return Err(err(
            "has a '..' segment, which leaves the project; reserve paths inside it, relative \
             to its root"
                .into(),
        ));
    }
    // A directory when it ends in `/` (or `/.`): everything under it.
    let dir = matches!(raw.last(), Some(&"") | Some(&"."));
    let segs: Vec<&str> = raw
        .into_iter()
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let mut out = segs.join("/");
    if out.is_empty() {
        out.push_str("**");
    } else if dir && segs.last() != Some(&"**") {
        out.push_str("/**");
    }
    build(&out).map_err(|e| {
        err(format!(
            "is not a valid glob ({}); use *, ?, **, [abc], {{a,b}}, and \\ to escape",
            e.kind()
        ))
    })?;
    if hides_dotdot(&out) {
        return Err(err(
            "has a segment that matches '..' (written with escapes, a class or braces), which \
             leaves the project; reserve paths inside it, relative to its root"
                .into(),
        ));
    }
    Ok(out)
}

/// Bidirectional controls, zero-width characters, the BOM and the line and paragraph
/// separators: invisible in a terminal, so a glob holding one is not what it looks like.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Most alternatives [`hides_dotdot`] expands `{…}` into before it gives up (and the glob
/// is refused: unsure is unsafe here).
const MAX_ALTERNATIVES: usize = 256;

/// Whether some `/`-separated segment of the normalised glob (after expanding `{…}`)
/// matches `..` without containing an unescaped `*`: `\.\.`, `[.][.]`, `.{.}`, `??`. A
/// segment with `*` matches `..` too, but also every other name; the guard and the
/// overlap decisions treat it as the wildcard it is. True also when the glob has too many
/// alternatives to check, or a segment that does not parse alone.
fn hides_dotdot(glob: &str) -> bool {
    let Some(alternatives) = expand_braces(glob, MAX_ALTERNATIVES) else {
        return true;
    };
    alternatives.iter().any(|alt| {
        split_segments(alt).into_iter().any(|seg| {
            if has_unescaped_star(seg) {
                return false;
            }
            match build(seg) {
                Ok(g) => g.compile_matcher().is_match(".."),
                Err(_) => true,
            }
        })
    })
}

/// Whether `seg` has a `*` that is not escaped by `\`.
fn has_unescaped_star(seg: &str) -> bool {
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' => return true,
            _ => {}
        }
    }
    false
}

/// `glob` split at each `/` outside `[…]`, escaped (`\/`, which matches a `/` all the same)
/// or not; other escapes are kept as they are.
fn split_segments(glob: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_class, mut escaped) = (0, false, false);
    for (i, c) in glob.char_indices() {
        if escaped {
            escaped = false;
            if c == '/' && !in_class {
                out.push(&glob[start..i - 1]);
                start = i + 1;
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '/' if !in_class => {
                out.push(&glob[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&glob[start..]);
    out
}

/// Every alternative `glob` spells with `{a,b}` (nested too; escapes and `[…]` kept as they
/// are), or `None` when there would be more than `max`.
fn expand_braces(glob: &str, max: usize) -> Option<Vec<String>> {
    // The first top-level `{`, and its matching `}` with the top-level commas between.
    let chars: Vec<(usize, char)> = glob.char_indices().collect();
    let (mut depth, mut open, mut commas) = (0usize, None, Vec::new());
    let (mut in_class, mut k) = (false, 0);
    while k < chars.len() {
        let (i, c) = chars[k];
        k += 1;
        match c {
            '\\' => k += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            _ if in_class => {}
            '{' => {
                if depth == 0 {
                    open = Some(i);
                    commas.clear();
                }
                depth += 1;
            }
            ',' if depth == 1 => commas.push(i),
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let o = open?;
                    let (head, tail) = (&glob[..o], &glob[i + 1..]);
                    let mut bounds = vec![o];
                    bounds.extend(&commas);
                    bounds.push(i);
                    let mut out = Vec::new();
                    for w in bounds.windows(2) {
                        let alt = format!("{head}{}{tail}", &glob[w[0] + 1..w[1]]);
                        out.extend(expand_braces(&alt, max)?);
                        if out.len() > max {
                            return None;
                        }
                    }
                    return Some(out);
                }
            }
            _ => {}
        }
    }
    Some(vec![glob.to_string()])
}

/// The glob as relay compiles it: `*` and `?` stop at `/`, `\` escapes.
fn build(glob: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// A compiled reservation glob, for deciding many overlaps without compiling the same glob
/// again (a reservation request checks each of its globs against every live reservation
/// of the project).
#[derive(Debug, Clone)]
pub struct Pattern {
    glob: String,
    /// Everything the glob matches starts with this (the text before its first
    /// metacharacter, unescaped): a cheap way to tell most disjoint globs apart.
    prefix: String,
    /// Everything the glob matches ends with this (the unescaped text after its last
    /// metacharacter, without a leading `/` after `**`, which may match nothing).
    suffix: String,
    /// The glob has no metacharacter: it matches exactly `prefix`.
    literal: bool,
    /// globset's matcher, compiled once: decides a literal path against this glob at no
    /// DFA cost. `None` when the glob does not parse.
    matcher: Option<globset::GlobMatcher>,
    /// The anchored DFA of the glob's regex, built when first needed (most pairs are told
    /// apart by their prefixes); `None` when it could not be built (then every overlap with
    /// this pattern is assumed).
    dfa: OnceLock<Option<dense::DFA<Vec<u32>>>>,
}

impl Pattern {
    /// Compiles a normalised glob. A glob that does not parse, or whose DFA is too large,
    /// still yields a pattern: one that overlaps everything (the sound answer).
    pub fn new(glob: &str) -> Pattern {
        let (prefix, literal) = literal_prefix(glob);
        Pattern {
            glob: glob.to_string(),
            prefix,
            suffix: literal_suffix(glob),
            literal,
            matcher: matcher(glob),
            dfa: OnceLock::new(),
        }
    }

    /// The DFA, built on first use within `budget` (charged what it built); `None` when it
    /// is over [`DFA_SIZE_LIMIT`] or what is left of the budget.
    fn dfa_within(&self, budget: &mut Budget) -> Option<&dense::DFA<Vec<u32>>> {
        if let Some(d) = self.dfa.get() {
            return d.as_ref();
        }
        let limit = DFA_SIZE_LIMIT.min(budget.dfa_bytes);
        let built = build(&self.glob)
            .ok()
            .and_then(|g| dfa_of(g.regex(), limit));
        // A failed build did about `limit` bytes of work before it stopped.
        let cost = built.as_ref().map_or(limit, |d| d.memory_usage());
        budget.dfa_bytes = budget.dfa_bytes.saturating_sub(cost.max(1));
        self.dfa.get_or_init(|| built).as_ref()
    }

    #[cfg(test)]
    fn dfa(&self) -> Option<&dense::DFA<Vec<u32>>> {
        self.dfa_within(&mut Budget::default())
    }

    /// The glob this pattern was compiled from.
    pub fn glob(&self) -> &str {
        &self.glob
    }

    /// Whether some path matches both patterns. Sound: when unsure (within a fresh
    /// [`Budget::default`]), `true`.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.overlap_within(other, &mut Budget::default())
            .conflicts()
    }

    /// Whether some path matches both patterns, spending at most what is left of `budget`
    /// (and charging it what was spent). Cheap cases (disjoint literal prefixes, a literal
    /// glob) cost nothing.
    pub fn overlap_within(&self, other: &Pattern, budget: &mut Budget) -> Overlap {
        let yes = |b: bool| {
            if b {
                Overlap::Overlaps
            } else {
                Overlap::Disjoint
            }
        };
        // Every match of one starts with its literal prefix, so the prefixes must agree as
        // far as the shorter goes.
        if !self.prefix.starts_with(&other.prefix) && !other.prefix.starts_with(&self.prefix) {
            return Overlap::Disjoint;
        }
        // Likewise every match ends with its literal suffix.
        if !self.suffix.ends_with(&other.suffix) && !other.suffix.ends_with(&self.suffix) {
            return Overlap::Disjoint;
        }
        match (self.literal, other.literal) {
            (true, true) => yes(self.prefix == other.prefix),
            (true, false) => other.accepts(&self.prefix),
            (false, true) => self.accepts(&other.prefix),
            (false, false) => {
                let (Some(a), Some(b)) = (self.dfa_within(budget), other.dfa_within(budget)) else {
                    return Overlap::Undecided;
                };
                match product(a, b, &mut budget.steps) {
                    Product::Both(_) => Overlap::Overlaps,
                    Product::Disjoint => Overlap::Disjoint,
                    Product::Unsure => Overlap::Undecided,
                }
            }
        }
    }

    /// Whether this pattern matches exactly `path`: by globset's own matcher (no DFA
    /// needed, so it costs nothing of the budget and is always decided).
    fn accepts(&self, path: &str) -> Overlap {
        match &self.matcher {
            Some(m) if m.is_match(path) => Overlap::Overlaps,
            Some(_) => Overlap::Disjoint,
            None => Overlap::Undecided,
        }
    }
}

/// The overlap decisions of one reservation request: its globs compiled once, the live
/// reservations' globs compiled once each, every decision remembered (an overlap depends
/// only on the two globs), all within one shared [`Budget`]. So a store can decide before
/// it takes its write lock, and after re-reading under the lock decide only what is new.
#[derive(Debug)]
pub struct Decider {
    asked: Vec<Pattern>,
    held: HashMap<String, Pattern>,
    decided: HashMap<(usize, String), Overlap>,
    budget: Budget,
}

impl Decider {
    /// The decisions for a request asking for `globs` (normalised), within
    /// [`Budget::default`].
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Decider {
        Decider::with_budget(globs, Budget::default())
    }

    /// As [`Decider::new`], within `budget`.
    pub fn with_budget<S: AsRef<str>>(globs: &[S], budget: Budget) -> Decider {
        Decider {
            asked: globs.iter().map(|g| Pattern::new(g.as_ref())).collect(),
            held: HashMap::new(),
            decided: HashMap::new(),
            budget,
        }
    }

    /// The globs asked for, in order.
    pub fn asked(&self) -> &[Pattern] {
        &self.asked
    }

    /// The decision for asked glob `i` against `held`, if already made.
    pub fn known(&self, i: usize, held: &str) -> Option<Overlap> {
        self.decided.get(&(i, held.to_string())).copied()
    }

    /// Decides (or recalls) whether asked glob `i` overlaps `held`, spending from the
    /// shared budget. [`Overlap::Undecided`] once the budget is spent; `i` out of range is
    /// `Undecided` too.
    pub fn decide(&mut self, i: usize, held: &str) -> Overlap {
        if let Some(o) = self.known(i, held) {
            return o;
        }
        let Some(want) = self.asked.get(i) else {
            return Overlap::Undecided;
        };
        let pat = self
            .held
            .entry(held.to_string())
            .or_insert_with(|| Pattern::new(held));
        let o = want.overlap_within(pat, &mut self.budget);
        self.decided.insert((i, held.to_string()), o);
        o
    }
}

/// The unescaped text before the first metacharacter of `glob`, and whether the glob is
/// all literal.
fn literal_prefix(glob: &str) -> (String, bool) {
    let mut out = String::new();
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' | '{' | '}' | ']' => return (out, false),
            '\\' => match chars.next() {
                Some(e) => out.push(e),
                None => return (out, false),
            },
            c => out.push(c),
        }
    }
    (out, true)
}

/// The unescaped text after the last metacharacter of `glob` (all of it when there is
/// none). After `**`, a leading `/` is dropped: `**/x` matches `x`.
fn literal_suffix(glob: &str) -> String {
    let mut out = String::new();
    let mut after_star = false;
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                after_star = chars.peek() == Some(&'*');
                if after_star {
                    chars.next();
                }
                out.clear();
            }
            '?' | '[' | '{' | '}' | ']' | ',' => {
                // Inside `[...]` or `{...}` everything up to its end is not literal either;
                // clearing at every such character and at the closing one covers it.
                after_star = false;
                out.clear();
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            c => out.push(c),
        }
    }
    if after_star && out.starts_with('/') {
        out.remove(0);
    }
    out
}

/// An anchored DFA for a glob's regex, with globset's own syntax settings (bytes, `.`
/// matching newlines too), recognising exactly the paths the glob matches.
/// At most `limit` bytes (of the NFA, the determinizer's working memory and the DFA each).
fn dfa_of(regex: &str, limit: usize) -> Option<dense::DFA<Vec<u32>>> {
    dense::Builder::new()
        .syntax(syntax::Config::new().utf8(false).dot_matches_new_line(true))
        .thompson(
            thompson::Config::new()
                .utf8(false)
                .nfa_size_limit(Some(limit)),
        )
        .configure(
            dense::Config::new()
                // All: keep every thread, so the DFA accepts the whole language rather than
                // stopping at a preferred match.
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(limit))
                .determinize_size_limit(Some(limit))
                .minimize(false),
        )
        .build(regex)
        .ok()
}

/// What the product search found.
#[derive(Debug, PartialEq, Eq)]
enum Product {
    /// A byte string both DFAs accept (the shortest).
    Both(Vec<u8>),
    /// No string is accepted by both.
    Disjoint,
    /// The search could not decide (a quit state, or the step budget ran out).
    Unsure,
}

/// A state of the product automaton: one state of each DFA.
type Pair = (StateID, StateID);

/// Searches the product of two anchored DFAs breadth-first for a byte string that takes
/// both from their start to a match at end of input, following at most `*steps`
/// transitions (each pair visited costs one per class of the joint alphabet); `*steps` is
/// charged what was followed.
fn product(a: &dense::DFA<Vec<u32>>, b: &dense::DFA<Vec<u32>>, steps: &mut usize) -> Product {
    let anchored = start::Config::new().anchored(Anchored::Yes);
    let (Ok(sa), Ok(sb)) = (a.start_state(&anchored), b.start_state(&anchored)) else {
        return Product::Unsure;
    };
    // One representative byte per class of the joint alphabet: bytes both DFAs treat alike
    // lead to the same pair.
    let mut reps: Vec<u8> = Vec::new();
    let mut seen_class: HashSet<(u8, u8)> = HashSet::new();
    for byte in 0..=255u8 {
        if seen_class.insert((a.byte_classes().get(byte), b.byte_classes().get(byte))) {
            reps.push(byte);
        }
    }
    // Each pair reached, with the pair and byte it was first reached from (for the witness).
    let mut parent: HashMap<Pair, Option<(Pair, u8)>> = HashMap::new();
    let mut queue: VecDeque<Pair> = VecDeque::new();
    parent.insert((sa, sb), None);
    queue.push_back((sa, sb));
    while let Some((x, y)) = queue.pop_front() {
        if *steps < reps.len() {
            *steps = 0;
            return Product::Unsure;
        }
        *steps -= reps.len();
        if a.is_match_state(a.next_eoi_state(x)) && b.is_match_state(b.next_eoi_state(y)) {
            let mut witness = Vec::new();
            let mut at = (x, y);
            while let Some(&Some((from, byte))) = parent.get(&at) {
                witness.push(byte);
                at = from;
            }
            witness.reverse();
            return Product::Both(witness);
        }
        for &byte in &reps {
            let (nx, ny) = (a.next_state(x, byte), b.next_state(y, byte));
            if a.is_quit_state(nx) || b.is_quit_state(ny) {
                return Product::Unsure;
            }
            if a.is_dead_state(nx) || b.is_dead_state(ny) || parent.contains_key(&(nx, ny)) {
                continue;
            }
            parent.insert((nx, ny), Some(((x, y), byte)));
            queue.push_back((nx, ny));
        }
    }
    Product::Disjoint
}

/// Whether some path matches both normalised globs. Sound: when unsure, `true`.
pub fn overlap(a: &str, b: &str) -> bool {
    Pattern::new(a).overlaps(&Pattern::new(b))
}

/// Whether `path` (relative to the project root; a leading `./` is ignored) matches the
/// normalised glob. A glob that does not parse matches nothing.
pub fn matches(glob: &str, path: &str) -> bool {
    let path = path.trim_start_matches("./");
    build(glob).is_ok_and(|g| g.compile_matcher().is_match(path))
}

/// The normalised glob compiled once, with exactly the options [`matches`] uses, for
/// matching many paths against it; `None` when it does not parse (it matches nothing).
/// `matcher(g)?.is_match(p)` is [`matches`]`(g, p)` for a path without a leading `./` (strip
/// it first, as [`matches`] does).
pub fn matcher(glob: &str) -> Option<globset::GlobMatcher> {
    build(glob).ok().map(|g| g.compile_matcher())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(g: &str) -> String {
        normalize_glob(g).unwrap()
    }

    #[test]
    fn normalising() {
        assert_eq!(n("./src/"), "src/**");
        assert_eq!(n("src//store///x.rs"), "src/store/x.rs");
        assert_eq!(n("./././a/./b"), "a/b");
        assert_eq!(n("src/**/"), "src/**");
        assert_eq!(n("src/."), "src/**");
        assert_eq!(n("."), "**");
        assert_eq!(n("./"), "**");
        assert_eq!(n("*.rs"), "*.rs");
        assert_eq!(n("a\\*b"), "a\\*b");
    }

    #[test]
    fn bad_globs_say_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", ".."),
            ("src/../../x", ".."),
            ("src/{..,a}/x", ".."),
            ("a\0b", "control"),
            ("a\nb", "control"),
            ("src/[ab", "not a valid glob"),
            ("src/{a,b", "not a valid glob"),
            ("a\\", "not a valid glob"),
        ] {
            let e = normalize_glob(bad).unwrap_err();
            assert!(e.reason.contains(says), "{bad:?}: {e}");
        }
        let long = "a".repeat(MAX_GLOB + 1);
        assert!(normalize_glob(&long).unwrap_err().reason.contains("limit"));
        assert!(normalize_glob(&"a".repeat(MAX_GLOB)).is_ok());
        // Dots inside names are not `..` segments.
        assert!(normalize_glob("a..b/..c/.d").is_ok());
        // issue 12 item 4: `..` hidden by escapes, classes or braces; invisible characters.
        for bad in [
            "\\.\\./x",
            ".\\./x",
            "..\\/x",
            "[.][.]/x",
            ".[.]/x",
            ".{.}/x",
            "{.}./x",
            "src/??/x",
            "src/.?/x",
            "src/{a,x/.}./y",
            "src/{a,{b,.}.}/y",
        ] {
            let e = normalize_glob(bad).unwrap_err();
            assert!(e.reason.contains(".."), "{bad:?}: {e}");
        }
        for ok in ["src/*/x", "**/x", "{a,b/}c", "a.{b,c}/x", "[!.]?/x"] {
            assert!(normalize_glob(ok).is_ok(), "{ok:?}");
        }
        for (bad, cp) in [
            ("src/\u{202E}x", "U+202E"),
            ("a\u{200B}b", "U+200B"),
            ("\u{FEFF}a", "U+FEFF"),
            ("a\u{2066}b", "U+2066"),
            ("a\u{2028}b", "U+2028"),
        ] {
            let e = normalize_glob(bad).unwrap_err();
            assert!(e.reason.contains(cp), "{bad:?}: {e}");
        }
    }

    #[test]
    fn hand_cases() {
        let yes = [
            ("src/**", "src/store/x.rs"),
            ("src/**", "src/**"),
            ("src/{a,b}.rs", "src/b.rs"),
            ("a/**/b", "a/b"),
            ("a/**/b", "a/x/y/b"),
            ("**", "anything/at/all"),
            ("**/*.rs", "src/a.rs"),
            ("**/*.rs", "a.rs"),
            ("src/*.rs", "src/*"),
            ("[ab]*", "b?"),
            ("src/**", "src/*/mod.rs"),
            ("*", "README.md"),
            ("src/store/**", "src/**/sqlite.rs"),
            ("a\\*b", "a*"),
        ];
        let no = [
            ("*.rs", "src/a.rs"),
            ("[ab]*", "c*"),
            ("src/{a,b}.rs", "src/c.rs"),
            ("src/**", "tests/x.rs"),
            ("src/*.rs", "src/store/x.rs"),
            ("src/store/**", "src/cli/**"),
            ("a/**/b", "a/b/c"),
            ("*.md", "*.rs"),
            ("a\\*b", "axb"),
            ("docs/*.md", "docs/a.rs"),
        ];
        for (a, b) in yes {
            assert!(overlap(a, b), "{a} should overlap {b}");
            assert!(overlap(b, a), "{b} should overlap {a}");
        }
        for (a, b) in no {
            assert!(!overlap(a, b), "{a} should not overlap {b}");
            assert!(!overlap(b, a), "{b} should not overlap {a}");
        }
    }

    #[test]
    fn matching_paths() {
        assert!(matches("src/**", "src/store/x.rs"));
        assert!(matches("src/**", "./src/a"));
        assert!(!matches("*.rs", "src/a.rs"));
        assert!(matches("**/*.rs", "src/a.rs"));
        assert!(matches("src/{a,b}.rs", "src/b.rs"));
        assert!(matches("a/**/b", "a/b"));
        assert!(!matches("src/[ab", "src/[ab"), "a bad glob matches nothing");
    }

    #[test]
    fn too_large_to_decide_is_an_overlap() {
        // "an `a` twenty characters before the end" needs 2^20 DFA states: over the limit.
        let big = format!("src/*a{}", "?".repeat(20));
        assert!(
            Pattern::new(&big).dfa().is_none(),
            "the DFA should be over the limit"
        );
        // A literal path is decided by globset's matcher, no DFA needed.
        assert!(!overlap(&big, "src/b"));
        assert!(overlap(&big, &format!("src/a{}", "b".repeat(20))));
        assert!(overlap(&big, "src/*.rs"), "unsure means overlap");
        assert!(
            !overlap(&big, "docs/x"),
            "the literal prefix still tells these apart"
        );
    }

    /// Whether the anchored DFA accepts exactly `path`.
    fn dfa_accepts(dfa: &dense::DFA<Vec<u32>>, path: &[u8]) -> bool {
        let mut s = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .unwrap();
        for &b in path {
            s = dfa.next_state(s, b);
        }
        dfa.is_match_state(dfa.next_eoi_state(s))
    }

    #[test]
    fn literal_suffixes() {
        assert_eq!(literal_suffix("src/*.rs"), ".rs");
        assert_eq!(literal_suffix("**/x"), "x");
        assert_eq!(literal_suffix("a/**/x"), "x");
        assert_eq!(literal_suffix("a/*/x"), "/x");
        assert_eq!(literal_suffix("a\\*b"), "a*b");
        assert_eq!(literal_suffix("[ab]c"), "c");
        assert_eq!(literal_suffix("{a,b}c"), "c");
        assert_eq!(literal_suffix("src/**"), "");
        assert!(!overlap("*a???????????x1", "*b???????????y1"));
        assert!(overlap("**/x", "x"));
    }

    /// issue 12 item 2: one request's overlap work is bounded by one budget shared by all
    /// its pairs; past it, pairs are undecided, which counts as a conflict. 8 x 8
    /// pathological globs took 49 s (debug build) before.
    #[test]
    fn pathological_globs_are_bounded_by_one_budget() {
        let held: Vec<String> = (1..=8).map(|i| format!("*a???????????x{i}*")).collect();
        let asked: Vec<String> = (1..=8).map(|i| format!("*b???????????y{i}*")).collect();
        let started = std::time::Instant::now();
        let mut d = Decider::new(&asked);
        let mut undecided = 0;
        for (i, a) in asked.iter().enumerate() {
            for h in &held {
                let o = d.decide(i, h);
                assert!(o.conflicts(), "{a} vs {h}: {o:?}");
                undecided += usize::from(o == Overlap::Undecided);
            }
        }
        let took = started.elapsed();
        eprintln!("64 pathological pairs: {took:?}, {undecided} undecided");
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
        // Decisions are remembered: asking again costs nothing and says the same.
        assert!(d.known(0, &held[0]).is_some());
        // A spent budget decides nothing new (but cheap cases still are).
        let mut spent = Decider::with_budget(&["*a*b"], Budget::new(0, 0));
        assert_eq!(spent.decide(0, "*b*"), Overlap::Undecided);
        assert_eq!(spent.decide(0, "docs/x"), Overlap::Disjoint);
        assert_eq!(spent.decide(0, "xaxb"), Overlap::Overlaps);
    }

    fn glob_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("/".to_string()),
            Just("*".to_string()),
            Just("?".to_string()),
            Just("**".to_string()),
            Just("/**/".to_string()),
            Just("[ab]".to_string()),
            Just("[!a]".to_string()),
            Just("{a,b/}".to_string()),
            Just(".".to_string()),
        ]
    }

    fn glob() -> impl Strategy<Value = String> {
        prop::collection::vec(glob_piece(), 1..6).prop_map(|v| v.concat())
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just('a'),
                Just('b'),
                Just('c'),
                Just('/'),
                Just('.'),
                Just('*')
            ],
            0..8,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Soundness: a path matching both globs means they overlap.
        #[test]
        fn a_common_path_means_overlap(a in glob(), b in glob(), p in path()) {
            let (Ok(a), Ok(b)) = (normalize_glob(&a), normalize_glob(&b)) else {
                return Ok(());
            };
            if matches(&a, &p) && matches(&b, &p) {
                prop_assert!(overlap(&a, &b), "{a} and {b} both match {p}");
            }
        }

        /// Exactness: when the product search finds a common path, globset matches it with
        /// both globs; when it finds none, no sampled path matches both (checked above).
        #[test]
        fn a_witness_matches_both(a in glob(), b in glob()) {
            use std::os::unix::ffi::OsStrExt;
            let (Ok(a), Ok(b)) = (normalize_glob(&a), normalize_glob(&b)) else {
                return Ok(());
            };
            let (pa, pb) = (Pattern::new(&a), Pattern::new(&b));
            let (Some(da), Some(db)) = (pa.dfa(), pb.dfa()) else { return Ok(()) };
            if let Product::Both(w) = product(da, db, &mut { usize::MAX }) {
                let path = std::ffi::OsStr::from_bytes(&w);
                let ga = build(&a).unwrap().compile_matcher();
                let gb = build(&b).unwrap().compile_matcher();
                prop_assert!(ga.is_match(path) && gb.is_match(path), "{a} {b} {w:?}");
            }
        }

        /// The DFA agrees with globset's matcher on every path (so the product search
        /// decides about the same language the guard matches with).
        #[test]
        fn dfa_accepts_what_globset_matches(a in glob(), p in path()) {
            let Ok(a) = normalize_glob(&a) else { return Ok(()) };
            let pat = Pattern::new(&a);
            let globset_says = build(&a).unwrap().compile_matcher().is_match(&p);
            if let Some(dfa) = pat.dfa() {
                prop_assert_eq!(dfa_accepts(dfa, p.as_bytes()), globset_says, "{} vs {}", a, p);
            }
        }
    }
}
