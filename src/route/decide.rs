//! The pure decider (DESIGN.md §7): `(facts about the target, intent) → decision`.
//!
//! This slice has no live transport, so the routes are `mailbox` or a named reject. The
//! live state and wake ability join [`Facts`] as new fields with defaults gathered by
//! [`super::dispatch`], so callers of [`super::send`] do not change when they arrive.

use serde::Serialize;

use crate::store::Intent;

/// What the router knows about a target when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// Exactly one endpoint matched.
    Found,
    /// Nothing matched.
    Unknown,
    /// Several endpoints matched an id prefix.
    Ambiguous,
}

/// Facts gathered before deciding. Gathered by [`super::dispatch`], never by callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// How the target query resolved.
    pub resolution: Resolution,
    /// Whether the target reads a mailbox (`Endpoint::mailbox`).
    pub consumes_mailbox: bool,
    /// Body size in bytes.
    pub body_len: usize,
    /// Body cap in bytes.
    pub body_cap: usize,
}

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "route", content = "reason")]
pub enum Decision {
    /// Into the durable store, read later.
    Mailbox,
    /// Not sent; nothing is written anywhere.
    Reject(Reason),
}

impl Decision {
    /// The route's stable name: `mailbox` or `reject`.
    pub fn route_name(self) -> &'static str {
        match self {
            Decision::Mailbox => "mailbox",
            Decision::Reject(_) => "reject",
        }
    }
}

/// Why a message was rejected. The kebab-case spelling is the stable, documented name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No endpoint has that name, id or id prefix.
    UnknownTarget,
    /// An id prefix matches several endpoints.
    AmbiguousTarget,
    /// The body is over the cap.
    TooLarge,
    /// The target reads no mailbox and has no other way to receive.
    NotDeliverable,
}

impl Reason {
    /// Every reason this decider can produce.
    pub const ALL: [Reason; 4] = [
        Reason::UnknownTarget,
        Reason::AmbiguousTarget,
        Reason::TooLarge,
        Reason::NotDeliverable,
    ];

    /// The stable spelling, e.g. `unknown-target`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownTarget => "unknown-target",
            Reason::AmbiguousTarget => "ambiguous-target",
            Reason::TooLarge => "too-large",
            Reason::NotDeliverable => "not-deliverable",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides the route. Target resolution is checked first (nothing else is known about a
/// target that was not found), then size, then whether any path can carry it.
///
/// `intent` does not change a mailbox decision: every endpoint that reads its mailbox can
/// answer a request through its own mailbox send. It starts to matter with live routing,
/// where a request to a target that cannot reply is `bad-target`.
pub fn decide(facts: &Facts, intent: Intent) -> Decision {
    match (facts.resolution, intent) {
        (Resolution::Unknown, _) => Decision::Reject(Reason::UnknownTarget),
        (Resolution::Ambiguous, _) => Decision::Reject(Reason::AmbiguousTarget),
        (Resolution::Found, _) if facts.body_len > facts.body_cap => {
            Decision::Reject(Reason::TooLarge)
        }
        (Resolution::Found, Intent::Notify | Intent::Request) if facts.consumes_mailbox => {
            Decision::Mailbox
        }
        (Resolution::Found, _) => Decision::Reject(Reason::NotDeliverable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cell of resolution × mailbox × size × intent, with the decision each must give.
    #[test]
    fn table_covers_every_cell_and_every_outcome() {
        use Decision::*;
        use Reason::*;
        let cap = 100;
        let mut seen_decisions = Vec::new();
        let mut cells = 0;
        for resolution in [
            Resolution::Found,
            Resolution::Unknown,
            Resolution::Ambiguous,
        ] {
            for consumes_mailbox in [true, false] {
                for body_len in [0, cap, cap + 1] {
                    for intent in Intent::ALL {
                        let facts = Facts {
                            resolution,
                            consumes_mailbox,
                            body_len,
                            body_cap: cap,
                        };
                        let expected = match resolution {
                            Resolution::Unknown => Reject(UnknownTarget),
                            Resolution::Ambiguous => Reject(AmbiguousTarget),
                            Resolution::Found if body_len > cap => Reject(TooLarge),
                            Resolution::Found if consumes_mailbox => Mailbox,
                            Resolution::Found => Reject(NotDeliverable),
                        };
                        let got = decide(&facts, intent);
                        assert_eq!(got, expected, "{facts:?} {intent:?}");
                        seen_decisions.push(got);
                        cells += 1;
                    }
                }
            }
        }
        assert_eq!(cells, 3 * 2 * 3 * 2);
        assert!(seen_decisions.contains(&Mailbox), "Mailbox never produced");
        for reason in Reason::ALL {
            assert!(
                seen_decisions.contains(&Reject(reason)),
                "reason {reason} never produced"
            );
        }
    }

    #[test]
    fn reasons_have_stable_kebab_names() {
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "unknown-target",
                "ambiguous-target",
                "too-large",
                "not-deliverable"
            ]
        );
        for r in Reason::ALL {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
        }
    }
}
