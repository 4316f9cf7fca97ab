//! A purchase saga in words: one sentence for whatever state it is in, in business terms (what
//! is happening or happened, why, what was undone, whether the customer was charged, what was
//! left behind), and the business name of each step.
//!
//! Built from the typed events alone, the same way [`Timeline`] is, so the page and anything
//! else that shows a saga say the same thing. The words for each step live in [`STEP_WORDS`],
//! beside the step names of [`STEPS`](crate::STEPS).
//!
//! A saga whose records changed node ([`Takeover`]) says so, in the summary and in the words
//! the page shows where it happened ([`takeover_words`]); one node's saga says nothing of
//! nodes.

use crate::api::SagaEvent;
use crate::event::{Event, SagaState, StepOutcome, StepState};
use crate::timeline::{Takeover, TakeoverCause, Timeline};

/// How a step of the purchase is spoken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepWords {
    /// The step's code name (`process_payment`).
    pub step: &'static str,
    /// The service that does it.
    pub service: &'static str,
    /// The business action, as a lane's title ("Charge the payment").
    pub action: &'static str,
    /// The action under way ("charging the payment").
    pub doing: &'static str,
    /// What its compensation did ("the payment was refunded").
    pub undone: &'static str,
    /// The compensation under way ("refunding the payment").
    pub undoing: &'static str,
    /// What its service holds once it is done ("the payment is charged").
    pub held: &'static str,
    /// What stays if it is never undone ("the payment stays charged").
    pub left: &'static str,
    /// Its action failing, as the start of a sentence ("The payment was refused").
    pub refused: &'static str,
}

/// The purchase's steps in words, in the order of [`STEPS`](crate::STEPS).
pub const STEP_WORDS: [StepWords; 4] = [
    StepWords {
        step: "place_order",
        service: "Orders",
        action: "Place the order and reserve the stock",
        doing: "placing the order and reserving the stock",
        undone: "the order was cancelled, its stock back on the shelf",
        undoing: "cancelling the order and putting the stock back",
        held: "the order is placed, its stock reserved",
        left: "the order stays open with its stock reserved",
        refused: "The order was refused",
    },
    StepWords {
        step: "create_invoice",
        service: "Billing",
        action: "Issue the invoice",
        doing: "issuing the invoice",
        undone: "the invoice was voided",
        undoing: "voiding the invoice",
        held: "the invoice is issued",
        left: "the invoice stays issued",
        refused: "The invoice could not be issued",
    },
    StepWords {
        step: "process_payment",
        service: "Payments",
        action: "Charge the payment",
        doing: "charging the payment",
        undone: "the payment was refunded",
        undoing: "refunding the payment",
        held: "the payment is charged",
        left: "the payment stays charged",
        refused: "The payment was refused",
    },
    StepWords {
        step: "ship_order",
        service: "Shipping",
        action: "Schedule the shipment",
        doing: "scheduling the shipment",
        undone: "the shipment was cancelled",
        undoing: "cancelling the shipment",
        held: "the shipment is scheduled",
        left: "the shipment stays scheduled",
        refused: "The shipment could not be scheduled",
    },
];

impl StepWords {
    /// What the step's service holds for the order when the step is in `state`.
    pub fn at_state(&self, state: StepState) -> &'static str {
        match state {
            StepState::Pending => "nothing yet",
            StepState::Skipped => "nothing: the step never ran",
            StepState::Running | StepState::Retrying => self.doing,
            StepState::Succeeded => self.held,
            StepState::Failed => self.refused,
            StepState::Compensating => self.undoing,
            StepState::Compensated => self.undone,
        }
    }
}

/// The words of a step of the purchase, if `step` is one.
pub fn words_of(step: &str) -> Option<&'static StepWords> {
    STEP_WORDS.iter().find(|w| w.step == step)
}

/// What happened to the step that failed, as the events tell it.
struct Failure<'a> {
    words: &'static StepWords,
    error: &'a str,
    unknown: bool,
    /// The card's last four digits, for a refused payment.
    card: Option<&'a str>,
}

/// One sentence (or a few short ones) that is true for the purchase saga in its current state.
pub fn summary(events: &[SagaEvent]) -> String {
    let timeline = Timeline::from_events("", &crate::STEPS, events);
    let card = events.iter().find_map(|e| match &e.event {
        Event::SagaStarted { card_last4, .. } => card_last4.as_deref(),
        _ => None,
    });
    let failure = events.iter().find_map(|e| match &e.event {
        Event::StepFailed { error, outcome, .. } => Some(Failure {
            words: words_of(e.step.as_deref()?)?,
            error,
            unknown: *outcome == StepOutcome::Unknown,
            card,
        }),
        _ => None,
    });
    let undone: Vec<&StepWords> = events
        .iter()
        .filter(|e| matches!(e.event, Event::CompensationSucceeded { .. }))
        .filter_map(|e| words_of(e.step.as_deref()?))
        .collect();
    let mut sentence = match timeline.status {
        SagaState::Pending => "Waiting for the saga's first event.".into(),
        // A step has just failed; its compensations are about to start.
        SagaState::Running if failure.is_some() => {
            let mut s = failure.as_ref().map(why).unwrap_or_default();
            let anything_done = timeline
                .steps
                .iter()
                .any(|v| v.status == StepState::Succeeded);
            s.push_str(if anything_done {
                " The saga turns back: what was done will be undone, newest first."
            } else {
                " Nothing had been done yet, so there is nothing to undo."
            });
            s
        }
        SagaState::Running => running(events, &timeline),
        SagaState::Completed => {
            let mut s: String = "The order is confirmed: the stock is reserved, the invoice \
                 issued, the payment charged and the shipment scheduled. You were charged."
                .into();
            for w in STEP_WORDS.iter() {
                let tries = events
                    .iter()
                    .filter(|e| {
                        e.step.as_deref() == Some(w.step)
                            && matches!(e.event, Event::StepRetrying { .. })
                    })
                    .count();
                if tries > 0 {
                    s.push_str(&format!(
                        " {} took {} attempts: {} failed first and {} retried.",
                        capitalised(w.doing),
                        tries + 1,
                        if tries == 1 { "one" } else { "the first ones" },
                        if tries == 1 { "was" } else { "were" }
                    ));
                }
            }
            s
        }
        SagaState::Compensating => {
            let mut s = failure.as_ref().map(why).unwrap_or_default();
            s.push_str(" Undoing what was done, newest first");
            if !undone.is_empty() {
                s.push_str(": ");
                s.push_str(&join(undone.iter().map(|w| w.undone)));
            }
            if let Some(current) = compensating_now(events) {
                s.push_str(if undone.is_empty() { ": " } else { "; now " });
                s.push_str(current.undoing);
            }
            s.push('…');
            s
        }
        SagaState::Compensated => {
            let mut s = failure.as_ref().map(why).unwrap_or_default();
            s.push(' ');
            if undone.is_empty() {
                s.push_str("Nothing had been done yet, so nothing was undone.");
            } else {
                s.push_str(&capitalised(&join(undone.iter().map(|w| w.undone))));
                s.push('.');
            }
            s.push(' ');
            s.push_str(charged(events, &undone, failure.as_ref()));
            s
        }
        SagaState::Stuck => stuck(events, &undone, failure.as_ref()),
    };
    let resumed = events
        .iter()
        .any(|e| matches!(e.event, Event::SagaResumed {}));
    if resumed && timeline.status != SagaState::Stuck {
        sentence.push_str(" It had been stuck until a person retried the compensation.");
    }
    let cut = interrupted(events, &timeline.takeovers);
    for t in &timeline.takeovers {
        sentence.push(' ');
        sentence.push_str(&taken_over(t, &cut));
    }
    for words in cut.iter().filter(|c| c.takeover.is_none()).map(|c| c.words) {
        sentence.push_str(&format!(
            " The server stopped while {}; after the restart the saga resumed from its log and \
             sent the same request again with the same idempotency key, so it took effect once{}.",
            words.doing,
            not_charged_twice(words)
        ));
    }
    sentence
}

/// ": you were not charged twice" for the payment, nothing for another step.
fn not_charged_twice(words: &StepWords) -> &'static str {
    if words.step == "process_payment" {
        ": you were not charged twice"
    } else {
        ""
    }
}

/// A node as a sentence names it: "node web-1", or an id that already says it is one as it is
/// ("node-a", not "node node-a").
pub fn node(id: &str) -> String {
    if id
        .get(..4)
        .is_some_and(|head| head.eq_ignore_ascii_case("node"))
    {
        id.to_string()
    } else {
        format!("node {id}")
    }
}

/// [`node`] at the start of a sentence.
fn node_first(id: &str) -> String {
    let named = node(id);
    let mut chars = named.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// A takeover as the summary tells it, with the step the stop cut short if it did.
fn taken_over(t: &Takeover, cut: &[Interrupted]) -> String {
    let (from, to) = (node(&t.from), node(&t.to));
    let to_first = node_first(&t.to);
    if t.cause == TakeoverCause::Retried {
        return format!("The retry ran on {to}; {from} had driven the saga until it got stuck.");
    }
    let resent: Vec<&StepWords> = cut
        .iter()
        .filter(|c| c.takeover == Some(t.seq))
        .map(|c| c.words)
        .collect();
    if resent.is_empty() {
        return format!(
            "{to_first} took over after {from} stopped; the saga resumed from its log and \
             nothing was done twice."
        );
    }
    // Worded as a stop and a resume, as for one server restarted: with the default node ids
    // (host and process) a restart is a new node too, and both are true of either.
    format!(
        "The server stopped while {} ({from}); {to} took over, and the saga resumed \
         from its log and sent the same request again with the same idempotency key, so it \
         took effect once{}.",
        join(resent.iter().map(|w| w.doing)),
        resent
            .iter()
            .map(|w| not_charged_twice(w))
            .collect::<String>()
    )
}

/// A takeover in words for a first-time visitor, where the page shows it (the timeline, the
/// event log): who took over from whom, and why as far as the log can tell. A node that was
/// killed and one that shut down look alike in the log (both just stop writing), so it says
/// either.
pub fn takeover_words(t: &Takeover) -> String {
    let (from, to_first) = (node(&t.from), node_first(&t.to));
    let (from_id, to_id) = (&t.from, &t.to);
    match t.cause {
        TakeoverCause::Stopped => format!(
            "{to_first} took over from {from}: {from_id} stopped answering or shut down, and \
             {to_id} resumed the saga from its log."
        ),
        TakeoverCause::Retried => format!(
            "{to_first} resumed the saga when a person retried it; {from} had driven it \
             until it got stuck."
        ),
    }
}

/// A step's action whose attempt was cut short by its process stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub words: &'static StepWords,
    /// When another node sent it again: the `seq` of that [`Takeover`]. `None` when the node
    /// that resumed it is the one that stopped (a restart with the same `--node-id`), or the
    /// records name no node.
    pub takeover: Option<u64>,
}

/// The steps whose action an attempt was cut short by the process stopping: a new attempt
/// started while the one before had not ended, which only a resume from the log does. Each
/// says which of `takeovers` (the saga's [`Timeline::takeovers`]) resumed it, if one did: the
/// step was under way when the records changed node.
pub fn interrupted(events: &[SagaEvent], takeovers: &[Takeover]) -> Vec<Interrupted> {
    let mut open: Vec<&str> = Vec::new();
    // The steps under way when the latest takeover happened, and its `seq`.
    let mut open_at_takeover: Option<(u64, Vec<&str>)> = None;
    let mut cut: Vec<Interrupted> = Vec::new();
    for e in events {
        if takeovers.iter().any(|t| t.seq == e.seq) {
            open_at_takeover = Some((e.seq, open.clone()));
        }
        let Some(step) = e.step.as_deref() else {
            continue;
        };
        match e.event {
            Event::StepStarted { .. } => {
                if open.contains(&step)
                    && let Some(words) = words_of(step)
                    && !cut.iter().any(|c| c.words.step == step)
                {
                    let takeover = open_at_takeover
                        .as_ref()
                        .filter(|(_, steps)| steps.contains(&step))
                        .map(|(seq, _)| *seq);
                    cut.push(Interrupted { words, takeover });
                }
                open.retain(|s| *s != step);
                open.push(step);
            }
            Event::StepSucceeded { .. } | Event::StepFailed { .. } | Event::StepRetrying { .. } => {
                open.retain(|s| *s != step)
            }
            _ => {}
        }
    }
    cut
}

/// A saga going forward: the step under way, or the retry it waits for.
fn running(events: &[SagaEvent], timeline: &Timeline) -> String {
    let done = timeline
        .steps
        .iter()
        .filter(|s| s.status == crate::StepState::Succeeded)
        .count();
    let Some(last) = events.iter().rev().find(|e| e.step.is_some()) else {
        return "The order was received; the first step is about to start.".into();
    };
    let Some(words) = last.step.as_deref().and_then(words_of) else {
        return format!("{done} of 4 steps done.");
    };
    match &last.event {
        Event::StepStarted { .. } => {
            let attempt = last.attempt.unwrap_or(1);
            let mut s = format!(
                "{} ({}, step {} of 4)",
                capitalised(words.doing),
                words.service,
                done + 1
            );
            if attempt > 1 {
                s.push_str(&format!(", attempt {attempt}"));
                // Why the one before did not do: its reason stays in the sentence.
                let before = events.iter().rev().find_map(|e| match &e.event {
                    Event::StepRetrying {
                        error,
                        outcome_unknown,
                        ..
                    } if e.step == last.step => Some(if *outcome_unknown {
                        format!(
                            ", after attempt {} got no answer in time, so whether it went \
                             through is unknown",
                            attempt - 1
                        )
                    } else {
                        format!(", after attempt {} failed: {error}", attempt - 1)
                    }),
                    _ => None,
                });
                s.push_str(&before.unwrap_or_default());
            }
            s.push('…');
            s
        }
        Event::StepRetrying {
            error,
            outcome_unknown,
            delay_ms,
            ..
        } => {
            let why = if *outcome_unknown {
                format!("{} did not answer in time ({error})", words.service)
            } else {
                format!("{} failed: {error}", capitalised(words.doing))
            };
            format!("{why}. Trying again after a {delay_ms} ms wait.")
        }
        _ => format!("{done} of 4 steps done; the next one is about to start."),
    }
}

/// Why the saga unwound, as a sentence.
fn why(f: &Failure<'_>) -> String {
    if f.unknown {
        format!(
            "{} did not answer in time ({}), so whether it went through is unknown: it is \
             undone as if it had.",
            f.words.service, f.error
        )
    } else {
        match f.card.filter(|_| f.words.step == "process_payment") {
            Some(last4) => format!("{} (card ending {last4}): {}.", f.words.refused, f.error),
            None => format!("{}: {}.", f.words.refused, f.error),
        }
    }
}

/// The compensation under way, if one is.
fn compensating_now(events: &[SagaEvent]) -> Option<&'static StepWords> {
    let last = events.iter().rev().find(|e| e.step.is_some())?;
    match last.event {
        Event::CompensationStarted {}
        | Event::CompensationFailed {
            will_retry: true, ..
        } => words_of(last.step.as_deref()?),
        _ => None,
    }
}

/// Whether the customer's money was taken, kept or given back.
fn charged(
    events: &[SagaEvent],
    undone: &[&StepWords],
    failure: Option<&Failure<'_>>,
) -> &'static str {
    let payment = "process_payment";
    let paid = events.iter().any(|e| {
        matches!(e.event, Event::StepSucceeded { .. }) && e.step.as_deref() == Some(payment)
    }) || failure.is_some_and(|f| f.unknown && f.words.step == payment);
    let refunded = undone.iter().any(|w| w.step == payment);
    let unknown = failure.is_some_and(|f| f.unknown && f.words.step == payment);
    match (paid, refunded) {
        (false, _) => "You were not charged.",
        (true, true) if unknown => "If the payment went through, it was refunded in full.",
        (true, true) => "You were charged, then refunded in full.",
        (true, false) => "Your payment has not been refunded.",
    }
}

/// A compensation gave up: what is left behind and what a person must do.
fn stuck(events: &[SagaEvent], undone: &[&StepWords], failure: Option<&Failure<'_>>) -> String {
    let mut s = failure.map(why).unwrap_or_default();
    let gave_up = events.iter().rev().find_map(|e| match &e.event {
        Event::SagaStuck { step, error } => Some((words_of(step), error.as_str())),
        _ => None,
    });
    if let Some((words, error)) = gave_up {
        let what = words.map(|w| w.undoing).unwrap_or("undoing a step");
        s.push_str(&format!(
            " {} failed on every attempt: {error}.",
            capitalised(what)
        ));
    }
    // Left behind: every step done (or maybe done) that was not undone.
    let left: Vec<&str> = STEP_WORDS
        .iter()
        .filter(|w| {
            let done = events.iter().any(|e| {
                e.step.as_deref() == Some(w.step)
                    && matches!(
                        e.event,
                        Event::StepSucceeded { .. }
                            | Event::StepFailed {
                                outcome: StepOutcome::Unknown,
                                ..
                            }
                    )
            });
            done && !undone.iter().any(|u| u.step == w.step)
        })
        .map(|w| w.left)
        .collect();
    if !undone.is_empty() {
        s.push_str(&format!(
            " Already undone: {}.",
            join(undone.iter().map(|w| w.undone))
        ));
    }
    if !left.is_empty() {
        s.push_str(&format!(" Left behind: {}.", join(left.into_iter())));
    }
    s.push_str(
        " The saga is stuck and needs a person: retry the compensation once the service is back.",
    );
    s
}

/// "a, b and c".
fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let parts: Vec<&str> = parts.collect();
    match parts.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saga's events, written the short way: (kind, step), and the node writing them.
    struct Story(Vec<SagaEvent>, Option<String>);

    impl Story {
        fn new() -> Self {
            Story(Vec::new(), None).with(
                Event::SagaStarted {
                    saga: "purchase".into(),
                    order_id: Some("ord_1".into()),
                    card_last4: Some("0002".into()),
                },
                None,
            )
        }

        fn with(mut self, event: Event, step: Option<&str>) -> Self {
            let seq = self.0.len() as u64 + 1;
            self.0.push(SagaEvent {
                saga_id: "s".into(),
                seq,
                at: format!("2026-12-06T12:00:00.{seq:03}Z"),
                step: step.map(str::to_string),
                attempt: Some(1),
                node: self.1.clone(),
                event,
            });
            self
        }

        /// The events from here on are written by `node`.
        fn on(mut self, node: &str) -> Self {
            self.1 = Some(node.into());
            self
        }

        fn ok(self, step: &str) -> Self {
            self.with(Event::StepStarted { timeout_ms: 5000 }, Some(step))
                .with(
                    Event::StepSucceeded {
                        output: serde_json::Value::Null,
                        duration_ms: 3,
                    },
                    Some(step),
                )
        }

        fn refused(self, step: &str, error: &str, outcome: StepOutcome) -> Self {
            self.with(Event::StepStarted { timeout_ms: 5000 }, Some(step))
                .with(
                    Event::StepFailed {
                        error: error.into(),
                        outcome,
                        retryable: false,
                        duration_ms: 3,
                    },
                    Some(step),
                )
        }

        fn undone(self, step: &str) -> Self {
            self.with(Event::CompensationStarted {}, Some(step))
                .with(Event::CompensationSucceeded { duration_ms: 2 }, Some(step))
        }

        fn end(self, event: Event) -> String {
            summary(&self.with(event, None).0)
        }
    }

    #[test]
    fn a_declined_card_says_what_was_undone_and_that_nothing_was_charged() {
        let s = Story::new()
            .ok("place_order")
            .ok("create_invoice")
            .refused(
                "process_payment",
                "the card was declined",
                StepOutcome::Failed,
            )
            .undone("create_invoice")
            .undone("place_order")
            .end(Event::SagaCompensated {});
        assert_eq!(
            s,
            "The payment was refused (card ending 0002): the card was declined. The invoice \
             was voided and the order was cancelled, its stock back on the shelf. You were not \
             charged."
        );
    }

    #[test]
    fn a_step_cut_short_by_a_restart_says_it_took_effect_once() {
        let s = Story::new()
            .ok("place_order")
            .ok("create_invoice")
            .with(
                Event::StepStarted { timeout_ms: 5000 },
                Some("process_payment"),
            )
            .ok("process_payment")
            .ok("ship_order")
            .end(Event::SagaCompleted {});
        assert!(s.starts_with("The order is confirmed"), "{s}");
        assert!(
            s.contains("The server stopped while charging the payment"),
            "{s}"
        );
        assert!(s.ends_with("you were not charged twice."), "{s}");
        let plain = Story::new().ok("place_order").end(Event::SagaCompleted {});
        assert!(!plain.contains("stopped"), "{plain}");
    }

    #[test]
    fn an_order_refused_at_the_first_step_says_nothing_was_undone() {
        let s = Story::new()
            .refused("place_order", "KB-01 is out of stock", StepOutcome::Failed)
            .end(Event::SagaCompensated {});
        assert!(
            s.starts_with("The order was refused: KB-01 is out of stock."),
            "{s}"
        );
        assert!(s.contains("nothing was undone"), "{s}");
        assert!(s.ends_with("You were not charged."), "{s}");
    }

    #[test]
    fn a_timeout_says_the_outcome_is_unknown_and_the_refund() {
        let s = Story::new()
            .ok("place_order")
            .ok("create_invoice")
            .ok("process_payment")
            .refused("ship_order", "timed out after 800 ms", StepOutcome::Unknown)
            .undone("ship_order")
            .undone("process_payment")
            .undone("create_invoice")
            .undone("place_order")
            .end(Event::SagaCompensated {});
        assert!(s.starts_with("Shipping did not answer in time"), "{s}");
        assert!(s.contains("is unknown"), "{s}");
        assert!(
            s.contains("The shipment was cancelled, the payment was refunded"),
            "{s}"
        );
        assert!(
            s.ends_with("You were charged, then refunded in full."),
            "{s}"
        );
    }

    #[test]
    fn a_stuck_saga_says_what_is_left_behind_and_what_to_do() {
        let s = Story::new()
            .ok("place_order")
            .ok("create_invoice")
            .refused(
                "process_payment",
                "the card was declined",
                StepOutcome::Failed,
            )
            .with(Event::CompensationStarted {}, Some("create_invoice"))
            .with(
                Event::CompensationFailed {
                    error: "billing is down".into(),
                    will_retry: false,
                    delay_ms: None,
                    duration_ms: 1,
                },
                Some("create_invoice"),
            )
            .end(Event::SagaStuck {
                step: "create_invoice".into(),
                error: "billing is down".into(),
            });
        assert!(
            s.contains("Voiding the invoice failed on every attempt: billing is down."),
            "{s}"
        );
        assert!(
            s.contains("Left behind: the order stays open with its stock reserved and the invoice stays issued."),
            "{s}"
        );
        assert!(s.contains("needs a person"), "{s}");
    }

    #[test]
    fn retries_keep_their_reasons_in_the_sentence() {
        let retried = |error: &str, unknown: bool| Event::StepRetrying {
            error: error.into(),
            outcome_unknown: unknown,
            delay_ms: 200,
            duration_ms: 1,
        };
        let story = Story::new()
            .ok("place_order")
            .with(
                Event::StepStarted { timeout_ms: 800 },
                Some("create_invoice"),
            )
            .with(
                retried("timed out after 800 ms", true),
                Some("create_invoice"),
            )
            .with(
                Event::StepStarted { timeout_ms: 800 },
                Some("create_invoice"),
            );
        let mut events = story.0;
        if let Some(last) = events.last_mut() {
            last.attempt = Some(2);
        }
        let s = summary(&events);
        assert!(
            s.contains("attempt 2, after attempt 1 got no answer in time"),
            "{s}"
        );
        let done = Story::new()
            .ok("place_order")
            .with(
                Event::StepStarted { timeout_ms: 800 },
                Some("create_invoice"),
            )
            .with(retried("billing is busy", false), Some("create_invoice"))
            .ok("create_invoice")
            .ok("process_payment")
            .ok("ship_order")
            .end(Event::SagaCompleted {});
        assert!(
            done.ends_with(
                "Issuing the invoice took 2 attempts: one failed first and was retried."
            ),
            "{done}"
        );
    }

    #[test]
    fn a_payment_that_timed_out_is_refunded_if_it_went_through() {
        let s = Story::new()
            .ok("place_order")
            .ok("create_invoice")
            .refused("process_payment", "timed out", StepOutcome::Unknown)
            .undone("process_payment")
            .undone("create_invoice")
            .undone("place_order")
            .end(Event::SagaCompensated {});
        assert!(
            s.ends_with("If the payment went through, it was refunded in full."),
            "{s}"
        );
    }

    #[test]
    fn the_moment_a_step_fails_says_why_before_anything_is_undone() {
        let story = Story::new().ok("place_order").refused(
            "create_invoice",
            "billing refused",
            StepOutcome::Failed,
        );
        assert_eq!(
            summary(&story.0),
            "The invoice could not be issued: billing refused. The saga turns back: what was \
             done will be undone, newest first."
        );
    }

    #[test]
    fn running_and_retrying_say_what_is_under_way() {
        let story = Story::new().ok("place_order").with(
            Event::StepStarted { timeout_ms: 5000 },
            Some("create_invoice"),
        );
        assert_eq!(
            summary(&story.0),
            "Issuing the invoice (Billing, step 2 of 4)…"
        );
        let story = story.with(
            Event::StepRetrying {
                error: "billing is busy".into(),
                outcome_unknown: false,
                delay_ms: 200,
                duration_ms: 1,
            },
            Some("create_invoice"),
        );
        assert_eq!(
            summary(&story.0),
            "Issuing the invoice failed: billing is busy. Trying again after a 200 ms wait."
        );
        let done = Story::new()
            .ok("place_order")
            .ok("create_invoice")
            .ok("process_payment")
            .ok("ship_order")
            .end(Event::SagaCompleted {});
        assert!(done.starts_with("The order is confirmed"), "{done}");
        assert_eq!(summary(&[]), "Waiting for the saga's first event.");
    }

    #[test]
    fn a_takeover_mid_step_says_which_node_sent_it_again_and_that_it_took_effect_once() {
        let s = Story::new()
            .on("a")
            .ok("place_order")
            .ok("create_invoice")
            .with(
                Event::StepStarted { timeout_ms: 5000 },
                Some("process_payment"),
            )
            .on("b")
            .ok("process_payment")
            .ok("ship_order")
            .end(Event::SagaCompleted {});
        assert!(s.starts_with("The order is confirmed"), "{s}");
        assert!(
            s.ends_with(
                " The server stopped while charging the payment (node a); node b took over, and \
                 the saga resumed from its log and sent the same request again with the same \
                 idempotency key, so it took effect once: you were not charged twice."
            ),
            "{s}"
        );
        // Told once, as a takeover: not a second time as a restart.
        assert!(!s.contains("after the restart"), "{s}");
    }

    #[test]
    fn a_takeover_between_steps_says_nothing_was_done_twice() {
        let s = Story::new()
            .on("a")
            .ok("place_order")
            .on("b")
            .ok("create_invoice")
            .refused(
                "process_payment",
                "the card was declined",
                StepOutcome::Failed,
            )
            .undone("create_invoice")
            .undone("place_order")
            .end(Event::SagaCompensated {});
        assert!(
            s.ends_with(
                "You were not charged. Node b took over after node a stopped; the saga resumed \
                 from its log and nothing was done twice."
            ),
            "{s}"
        );
        // Back and forth: each change is told, in order.
        let twice = Story::new()
            .on("a")
            .ok("place_order")
            .on("b")
            .ok("create_invoice")
            .on("a")
            .ok("process_payment")
            .ok("ship_order")
            .end(Event::SagaCompleted {});
        let b = twice
            .find("Node b took over after node a")
            .unwrap_or(usize::MAX);
        let a = twice.find("Node a took over after node b").unwrap_or(0);
        assert!(b < a, "{twice}");
    }

    #[test]
    fn a_saga_one_node_drove_says_nothing_of_nodes() {
        let story = |node: Option<&str>| {
            let s = Story::new();
            let s = match node {
                Some(n) => s.on(n),
                None => s,
            };
            s.ok("place_order")
                .with(
                    Event::StepStarted { timeout_ms: 5000 },
                    Some("create_invoice"),
                )
                .ok("create_invoice")
                .ok("process_payment")
                .ok("ship_order")
                .end(Event::SagaCompleted {})
        };
        let named = story(Some("a"));
        assert_eq!(named, story(None));
        assert!(!named.contains("node"), "{named}");
        // A restart with the same node id is the server stopping, as before nodes were named.
        assert!(
            named.contains("The server stopped while issuing the invoice"),
            "{named}"
        );
    }

    #[test]
    fn a_stuck_saga_retried_on_another_node_says_where_the_retry_ran() {
        let s = Story::new()
            .on("a")
            .refused("place_order", "out of stock", StepOutcome::Unknown)
            .with(Event::CompensationStarted {}, Some("place_order"))
            .with(
                Event::CompensationFailed {
                    error: "orders is down".into(),
                    will_retry: false,
                    delay_ms: None,
                    duration_ms: 1,
                },
                Some("place_order"),
            )
            .with(
                Event::SagaStuck {
                    step: "place_order".into(),
                    error: "orders is down".into(),
                },
                None,
            )
            .on("b")
            .with(Event::SagaResumed {}, None)
            .undone("place_order")
            .end(Event::SagaCompensated {});
        assert!(
            s.ends_with(
                "It had been stuck until a person retried the compensation. The retry ran on \
                 node b; node a had driven the saga until it got stuck."
            ),
            "{s}"
        );
        assert!(!s.contains("stopped"), "{s}");
    }

    #[test]
    fn the_page_says_who_took_over_from_whom_and_why_as_far_as_the_log_tells() {
        let t = Takeover {
            from: "a".into(),
            to: "b".into(),
            seq: 5,
            step: Some("process_payment".into()),
            cause: TakeoverCause::Stopped,
        };
        assert_eq!(
            takeover_words(&t),
            "Node b took over from node a: a stopped answering or shut down, and b resumed the \
             saga from its log."
        );
        let retried = Takeover {
            cause: TakeoverCause::Retried,
            ..t
        };
        assert!(
            takeover_words(&retried)
                .starts_with("Node b resumed the saga when a person retried it"),
            "{}",
            takeover_words(&retried)
        );
    }
}
