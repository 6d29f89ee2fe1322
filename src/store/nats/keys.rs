//! Names in the cluster: the mail stream's subjects, the buckets' keys, and the escaping
//! that makes any endpoint id, name or host a safe subject token.
//!
//! Layout (DESIGN.md §4, with the message id appended to the mail subject so a message is
//! found by id with one subject-filtered read, no index to keep in step):
//! - stream `RELAY_MAIL`: `relay.mail.<to>.<from>.<thread>.<id>`, `<thread>` = `_` without
//!   a thread, else `t` + 24 hex digits of the thread's SHA-256 (a thread may hold any
//!   printable text up to 256 bytes; the real thread travels in a header);
//! - bucket `relay_rcpt`: `<to>.<id>` → the receipt once its state first changes;
//! - bucket `relay_ep`: `ep.<id>` → endpoint, `name.<name>` → id,
//!   `bind.<host>.<pid>.<start>` → binding, `batch.<uuid>` → a committed batch,
//!   `floor.<to>` → the sequence at or below which all of `to`'s mail is acked,
//!   `resv.<project>` → the project's file reservations ([`resv_key`]);
//! - core subject `relay.bell.<to>`: the doorbell (payload: what a woken reader must see);
//! - stream `RELAY_EVENTS`: the event log — copies of the mail stream and of the buckets'
//!   `<to>.<id>`, `ep.`, `bind.` and `resv.` keys under their own subjects, plus
//!   `relay.events.<verb>` (rejects, expiries); it republishes each record's headers on
//!   core subject `relay.evbell.<subject>`.

use sha2::{Digest, Sha256};

/// The mail stream.
pub const MAIL_STREAM: &str = "RELAY_MAIL";
/// Every mail subject is under this prefix.
pub const MAIL_PREFIX: &str = "relay.mail";
/// The receipts bucket.
pub const RCPT_BUCKET: &str = "relay_rcpt";
/// The endpoints, names, bindings and batch commits bucket.
pub const EP_BUCKET: &str = "relay_ep";
/// The event log stream.
pub const EVENTS_STREAM: &str = "RELAY_EVENTS";
/// The event log's own subjects (what changes no stored state) are under this prefix.
pub const EVENTS_PREFIX: &str = "relay.events";
/// The event log republishes each record's headers under this prefix.
pub const EVBELL_PREFIX: &str = "relay.evbell";

/// `s` as one subject token / key token: `[A-Za-z0-9_-]` kept, every other byte as `=XX`
/// (upper-case hex), so `.`, `*`, `>`, spaces and non-ASCII can never split or widen a
/// subject. Injective: `=` itself is escaped.
pub fn tok(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() {
        // No relay id or name is empty; keep the token non-empty all the same.
        out.push_str("=00");
    }
    out
}

/// Reverses [`tok`]; `None` for a token [`tok`] cannot have made.
pub fn untok(t: &str) -> Option<String> {
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            let hex = t.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes `%XX` escapes (UTF-8, lossy); a `%` not followed by two hex digits stays.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The thread token of a mail subject.
pub fn thread_tok(thread: Option<&str>) -> String {
    match thread {
        None => "_".into(),
        Some(t) => {
            let d = Sha256::digest(t.as_bytes());
            let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("t{hex}")
        }
    }
}

/// The subject one message is stored under.
pub fn mail_subject(to: &str, from: &str, thread: Option<&str>, id: &str) -> String {
    format!(
        "{MAIL_PREFIX}.{}.{}.{}.{}",
        tok(to),
        tok(from),
        thread_tok(thread),
        tok(id)
    )
}

/// Every message to `to`.
pub fn mail_to(to: &str) -> String {
    format!("{MAIL_PREFIX}.{}.>", tok(to))
}

/// The message with this exact id, whoever it is for.
pub fn mail_id(id: &str) -> String {
    format!("{MAIL_PREFIX}.*.*.*.{}", tok(id))
}

/// Every message from `from`.
pub fn mail_from(from: &str) -> String {
    format!("{MAIL_PREFIX}.*.{}.>", tok(from))
}

/// Every message in `thread`.
pub fn mail_thread(thread: &str) -> String {
    format!("{MAIL_PREFIX}.*.*.{}.*", thread_tok(Some(thread)))
}

/// The receipt key of message `id` to `to`.
pub fn rcpt_key(to: &str, id: &str) -> String {
    format!("{}.{}", tok(to), tok(id))
}

/// Endpoint record key.
pub fn ep_key(id: &str) -> String {
    format!("ep.{}", tok(id))
}

/// Name key (→ endpoint id).
pub fn name_key(name: &str) -> String {
    format!("name.{}", tok(name))
}

/// Binding key of a process on `host`.
pub fn bind_key(host: &str, pid: u32, start: u64) -> String {
    format!("bind.{}.{pid}.{start}", tok(host))
}

/// KV stream subject filter for every binding on `host`.
pub fn binds_on(host: &str) -> String {
    format!("$KV.{EP_BUCKET}.bind.{}.>", tok(host))
}

/// Acked-floor key of `to` (a sequence number: every message to `to` at or below it is
/// acked).
pub fn floor_key(to: &str) -> String {
    format!("floor.{}", tok(to))
}

/// Batch commit key.
pub fn batch_key(batch: &str) -> String {
    format!("batch.{}", tok(batch))
}

/// Longest escaped project path kept readable in a reservations key; longer ones are
/// hashed (subjects have a length limit, and `tok` can triple a path).
const PROJECT_TOKEN_MAX: usize = 200;

/// Reservations key of a project directory: `resv.p.<tok(project)>`, or for a path whose
/// token would be longer than 200 bytes `resv.h.<32 hex digits of its SHA-256>` (the path
/// itself is kept in the value). The two forms cannot collide: their second tokens differ.
pub fn resv_key(project: &str) -> String {
    let t = tok(project);
    if t.len() <= PROJECT_TOKEN_MAX {
        format!("resv.p.{t}")
    } else {
        let d = Sha256::digest(project.as_bytes());
        let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("resv.h.{hex}")
    }
}

/// KV stream subject filter for every project's reservations.
pub fn resv_all() -> String {
    format!("$KV.{EP_BUCKET}.resv.>")
}

/// The doorbell subject of `to`.
pub fn bell(to: &str) -> String {
    format!("relay.bell.{}", tok(to))
}

/// The key of a KV stream subject (`$KV.<bucket>.<key>` → `<key>`).
pub fn key_of<'a>(bucket: &str, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix("$KV.")?
        .strip_prefix(bucket)?
        .strip_prefix('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_safe_and_reversible() {
        for s in ["alice", "a.b", "x y*>", "naïve", "=3D", "01J-abc_d"] {
            let t = tok(s);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
                "{t}"
            );
            assert_eq!(untok(&t).as_deref(), Some(s));
        }
        assert_ne!(tok("a.b"), tok("a=2Eb"));
        assert_eq!(untok("=2"), None);
        assert_eq!(thread_tok(None), "_");
        assert_eq!(thread_tok(Some("x")).len(), 25);
        assert_eq!(mail_subject("b", "a", None, "m1"), "relay.mail.b.a._.m1");
        assert_eq!(key_of("relay_ep", "$KV.relay_ep.ep.x"), Some("ep.x"));
        assert_eq!(resv_key("/w/a.b"), "resv.p.=2Fw=2Fa=2Eb");
        let long = format!("/{}", "d/".repeat(100));
        assert!(resv_key(&long).starts_with("resv.h.") && resv_key(&long).len() == 39);
    }
}
