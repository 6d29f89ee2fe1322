//! The pure decider (DESIGN.md §7): `(facts about the target, what the sender asks) →
//! decision`. No I/O: [`super::dispatch`] gathers the facts (resolution, the probed live
//! socket, whether the target reads a mailbox, sits idle with an in-session channel, can be
//! woken, replies; the body size; the loop guard's counts) and carries the decision out:
//! `Live` over the transport, `Mailbox` through the store, `Inject` through the store and
//! the session's in-session channel, `Wake` through the store and a headless resume, a
//! `Reject` with nothing stored.

use serde::Serialize;

use crate::store::Intent;

/// How the target query resolved.
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

/// Whether the target has a live socket (probed by connecting to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiveState {
    /// Something accepted a connection on the target's socket.
    Live,
    /// A socket file exists but the connection was refused: a crashed endpoint.
    StaleSocket,
    /// No socket file.
    NoSocket,
    /// The probe failed some other way (permissions, timeouts).
    Indeterminate,
}

impl LiveState {
    /// Every state, for tables.
    pub const ALL: [LiveState; 4] = [
        LiveState::Live,
        LiveState::StaleSocket,
        LiveState::NoSocket,
        LiveState::Indeterminate,
    ];
}

/// Facts gathered before deciding. Gathered by [`super::dispatch`], never by callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// How the target query resolved.
    pub resolution: Resolution,
    /// The target's live socket.
    pub live: LiveState,
    /// Whether the target reads a mailbox (`Endpoint::mailbox`).
    pub consumes_mailbox: bool,
    /// Whether the target is a dormant agent session relay can resume: a Claude Code or
    /// Codex endpoint with a UUID session id and a working directory that exists.
    pub wakeable: bool,
    /// Whether the target is an idle agent session with an in-session channel: a Claude
    /// Code session whose idle waiter runs, or a Codex thread its app-server holds.
    pub injectable: bool,
    /// Whether the target answers requests. False for endpoints registered with
    /// `--no-replies` (meta `"replies": false`): sinks, loggers, dashboards.
    pub replies: bool,
    /// The loop guard's view of this send.
    pub guard: Guard,
    /// Body size in bytes.
    pub body_len: usize,
    /// Body cap in bytes.
    pub body_cap: usize,
}

/// The loop guard's facts (DESIGN.md §7): two agents answering each other forever burn
/// their users' money. A cap of 0 turns its check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guard {
    /// Both sender and target are agent sessions.
    pub agent_to_agent: bool,
    /// The sender is an agent session.
    pub from_agent: bool,
    /// Agent→agent messages already on the thread since a human wrote on it (0 without a
    /// thread).
    pub thread_run: u64,
    /// Most agent→agent messages on a thread without a human message.
    pub thread_cap: u64,
    /// Messages the sender sent in the last minute.
    pub sent_last_minute: u64,
    /// Most messages an agent session may send per minute.
    pub rate_cap: u64,
}

impl Guard {
    /// Default cap of agent↔agent exchanges on a thread without a human message.
    pub const THREAD_CAP: u64 = 12;
    /// Default cap of sends per agent session per minute.
    pub const RATE_CAP: u64 = 30;

    /// True when this send would pass a cap.
    pub fn tripped(&self) -> bool {
        (self.agent_to_agent && self.thread_cap > 0 && self.thread_run >= self.thread_cap)
            || (self.from_agent && self.rate_cap > 0 && self.sent_last_minute >= self.rate_cap)
    }
}

/// What the sender asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Notify or request.
    pub intent: Intent,
    /// Resume the target session after queuing (`send --wake`).
    pub wake: bool,
}

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "route", content = "reason")]
pub enum Decision {
    /// Over the target's socket now (also recorded in the store, so receipts stay true).
    Live,
    /// Into the durable store, read later.
    Mailbox,
    /// Into the durable store, then into the idle session's context in place (its idle
    /// waiter or its app-server), with no prompt typed.
    Inject,
    /// Into the durable store, then the dormant session is resumed to read it.
    Wake,
    /// Not sent; nothing is written anywhere.
    Reject(Reason),
}

impl Decision {
    /// Every route, for tables that must cover them all.
    pub const ROUTES: [&'static str; 5] = ["live", "mailbox", "inject", "wake", "reject"];

    /// The route's stable name: `live`, `mailbox`, `inject`, `wake` or `reject`.
    pub fn route_name(self) -> &'static str {
        match self {
            Decision::Live => "live",
            Decision::Mailbox => "mailbox",
            Decision::Inject => "inject",
            Decision::Wake => "wake",
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
    /// A wake was asked for, but the target is not a resumable agent session.
    NotWakeable,
    /// A request to an endpoint that declared it never replies (`register --no-replies`).
    BadTarget,
    /// An agent session is over the loop guard's caps: too many agent↔agent messages on
    /// the thread without a human one, or too many sends in the last minute.
    LoopGuard,
}

impl Reason {
    /// Every reason this decider can produce.
    pub const ALL: [Reason; 7] = [
        Reason::UnknownTarget,
        Reason::AmbiguousTarget,
        Reason::TooLarge,
        Reason::NotDeliverable,
        Reason::NotWakeable,
        Reason::BadTarget,
        Reason::LoopGuard,
    ];

    /// The stable spelling, e.g. `unknown-target`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownTarget => "unknown-target",
            Reason::AmbiguousTarget => "ambiguous-target",
            Reason::TooLarge => "too-large",
            Reason::NotDeliverable => "not-deliverable",
            Reason::NotWakeable => "not-wakeable",
            Reason::BadTarget => "bad-target",
            Reason::LoopGuard => "loop-guard",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides the route. Resolution first (nothing else is known about a target that was
/// not found), then size, then whether a request can be answered at all, then the loop
/// guard, then a live socket, then whether the mailbox can carry it, then an idle session's
/// in-session channel, then the wake. A stale or indeterminate socket counts as not live:
/// the mailbox is the safe path.
///
/// A request to an endpoint that declared it never replies is `bad-target` whatever its
/// route would have been: the sender would wait for an answer that cannot come. An idle
/// session that can be injected is injected even when a wake was asked for: it is not
/// dormant, and a headless resume beside its open session would fork it.
pub fn decide(facts: &Facts, ask: Ask) -> Decision {
    match facts.resolution {
        Resolution::Unknown => return Decision::Reject(Reason::UnknownTarget),
        Resolution::Ambiguous => return Decision::Reject(Reason::AmbiguousTarget),
        Resolution::Found => {}
    }
    if facts.body_len > facts.body_cap {
        return Decision::Reject(Reason::TooLarge);
    }
    if ask.intent == Intent::Request && !facts.replies {
        return Decision::Reject(Reason::BadTarget);
    }
    if facts.guard.tripped() {
        return Decision::Reject(Reason::LoopGuard);
    }
    // A live target gets it now; no mailbox or wake is needed.
    if facts.live == LiveState::Live {
        return Decision::Live;
    }
    if !facts.consumes_mailbox {
        return Decision::Reject(Reason::NotDeliverable);
    }
    if facts.injectable {
        return Decision::Inject;
    }
    match (ask.wake, facts.wakeable) {
        (false, _) => Decision::Mailbox,
        (true, true) => Decision::Wake,
        (true, false) => Decision::Reject(Reason::NotWakeable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use Reason::*;

    /// Loop-guard cells: under the caps, at the thread cap between agents, at the rate cap,
    /// at the thread cap but not agent to agent, and over both with the caps off.
    fn guards() -> [(Guard, bool); 5] {
        let base = Guard {
            agent_to_agent: true,
            from_agent: true,
            thread_run: 3,
            thread_cap: Guard::THREAD_CAP,
            sent_last_minute: 4,
            rate_cap: Guard::RATE_CAP,
        };
        [
            (base, false),
            (
                Guard {
                    thread_run: Guard::THREAD_CAP,
                    ..base
                },
                true,
            ),
            (
                Guard {
                    sent_last_minute: Guard::RATE_CAP,
                    ..base
                },
                true,
            ),
            (
                Guard {
                    agent_to_agent: false,
                    from_agent: false,
                    thread_run: 99,
                    sent_last_minute: 99,
                    ..base
                },
                false,
            ),
            (
                Guard {
                    thread_run: 99,
                    sent_last_minute: 99,
                    thread_cap: 0,
                    rate_cap: 0,
                    ..base
                },
                false,
            ),
        ]
    }

    /// The expected decision for a cell, written as a first-match rule list (a different
    /// shape from `decide`, so a slip in one does not hide in the other).
    #[allow(clippy::too_many_arguments)]
    fn expected(
        r: Resolution,
        live: LiveState,
        mailbox: bool,
        over: bool,
        request_to_mute: bool,
        looping: bool,
        injectable: bool,
        wake: bool,
        wakeable: bool,
    ) -> Decision {
        let rules: [(bool, Decision); 11] = [
            (r == Resolution::Unknown, Reject(UnknownTarget)),
            (r == Resolution::Ambiguous, Reject(AmbiguousTarget)),
            (over, Reject(TooLarge)),
            (request_to_mute, Reject(BadTarget)),
            (looping, Reject(LoopGuard)),
            (live == LiveState::Live, Live),
            (!mailbox, Reject(NotDeliverable)),
            (injectable, Inject),
            (wake && !wakeable, Reject(NotWakeable)),
            (wake, Wake),
            (true, Mailbox),
        ];
        rules
            .into_iter()
            .find(|(when, _)| *when)
            .map(|(_, d)| d)
            .unwrap()
    }

    /// Every cell: resolution × live × mailbox × size × intent × replies × guard ×
    /// injectable × wake × wakeable.
    #[test]
    fn table_covers_every_cell_and_every_outcome() {
        let cap = 100;
        let mut seen = Vec::new();
        let mut cells = 0;
        for resolution in [
            Resolution::Found,
            Resolution::Unknown,
            Resolution::Ambiguous,
        ] {
            for live in LiveState::ALL {
                for consumes_mailbox in [true, false] {
                    for body_len in [0, cap, cap + 1] {
                        for intent in Intent::ALL {
                            for replies in [true, false] {
                                for (guard, looping) in guards() {
                                    for injectable in [false, true] {
                                        for wake in [false, true] {
                                            for wakeable in [false, true] {
                                                let facts = Facts {
                                                    resolution,
                                                    live,
                                                    consumes_mailbox,
                                                    wakeable,
                                                    injectable,
                                                    replies,
                                                    guard,
                                                    body_len,
                                                    body_cap: cap,
                                                };
                                                let got = decide(&facts, Ask { intent, wake });
                                                let want = expected(
                                                    resolution,
                                                    live,
                                                    consumes_mailbox,
                                                    body_len > cap,
                                                    intent == Intent::Request && !replies,
                                                    looping,
                                                    injectable,
                                                    wake,
                                                    wakeable,
                                                );
                                                assert_eq!(
                                                    got, want,
                                                    "{facts:?} intent={intent:?} wake={wake}"
                                                );
                                                assert_eq!(guard.tripped(), looping, "{guard:?}");
                                                seen.push(got);
                                                cells += 1;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cells, 3 * 4 * 2 * 3 * 2 * 2 * 5 * 2 * 2 * 2);
        // Every route and every reason must be produced by some cell. The match is
        // exhaustive, so a new variant fails to compile until it is listed here.
        for d in &seen {
            match d {
                Live | Mailbox | Inject | Wake => {}
                Reject(
                    UnknownTarget | AmbiguousTarget | TooLarge | NotDeliverable | NotWakeable
                    | BadTarget | LoopGuard,
                ) => {}
            }
        }
        for route in Decision::ROUTES {
            assert!(
                seen.iter().any(|d| d.route_name() == route),
                "route {route} never produced"
            );
        }
        for reason in Reason::ALL {
            assert!(
                seen.contains(&Reject(reason)),
                "reason {reason} never produced"
            );
        }
    }

    #[test]
    fn a_few_cells_spelled_out() {
        let found = Facts {
            resolution: Resolution::Found,
            live: LiveState::NoSocket,
            consumes_mailbox: true,
            wakeable: true,
            injectable: false,
            replies: true,
            guard: Guard::default(),
            body_len: 10,
            body_cap: 100,
        };
        let notify = Ask {
            intent: Intent::Notify,
            wake: false,
        };
        let wake = Ask {
            intent: Intent::Request,
            wake: true,
        };
        assert_eq!(decide(&found, notify), Mailbox);
        let idle = Facts {
            injectable: true,
            ..found
        };
        assert_eq!(decide(&idle, notify), Inject, "an idle session is injected");
        assert_eq!(
            decide(&idle, wake),
            Inject,
            "an idle, open session is injected, never resumed beside itself"
        );
        let looping = Facts {
            guard: Guard {
                agent_to_agent: true,
                from_agent: true,
                thread_run: 12,
                thread_cap: 12,
                ..Guard::default()
            },
            live: LiveState::Live,
            ..idle
        };
        assert_eq!(decide(&looping, notify), Reject(LoopGuard));
        let live = Facts {
            live: LiveState::Live,
            consumes_mailbox: false,
            ..found
        };
        assert_eq!(decide(&live, notify), Live);
        assert_eq!(decide(&live, wake), Live, "a live session needs no wake");
        assert_eq!(
            decide(
                &Facts {
                    live: LiveState::StaleSocket,
                    ..found
                },
                notify
            ),
            Mailbox
        );
        assert_eq!(decide(&found, wake), Wake);
        let mute = Facts {
            replies: false,
            live: LiveState::Live,
            ..found
        };
        assert_eq!(
            decide(&mute, wake),
            Reject(BadTarget),
            "a request to a mute endpoint"
        );
        assert_eq!(decide(&mute, notify), Live, "a notification to it is fine");
        assert_eq!(
            decide(
                &Facts {
                    wakeable: false,
                    ..found
                },
                wake
            ),
            Reject(NotWakeable)
        );
        assert_eq!(
            decide(
                &Facts {
                    body_len: 101,
                    ..found
                },
                wake
            ),
            Reject(TooLarge)
        );
        assert_eq!(
            decide(
                &Facts {
                    consumes_mailbox: false,
                    ..found
                },
                notify
            ),
            Reject(NotDeliverable)
        );
        assert_eq!(
            decide(
                &Facts {
                    resolution: Resolution::Ambiguous,
                    ..found
                },
                notify
            ),
            Reject(AmbiguousTarget)
        );
    }

    #[test]
    fn reasons_have_stable_kebab_names() {
        for r in Reason::ALL {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
        }
        assert_eq!(Reason::NotWakeable.as_str(), "not-wakeable");
        assert_eq!(Reason::BadTarget.as_str(), "bad-target");
        assert_eq!(Reason::LoopGuard.as_str(), "loop-guard");
    }
}
