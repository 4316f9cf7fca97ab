//! The live saga timeline: one lane per step with its state, attempts, durations and errors,
//! and a bar per attempt drawn to scale (actions left to right, compensations in their own
//! colour as they run back up the lanes). Below it the event log and what the services hold.
//! A finished saga can be replayed at any moment of its history with the scrubber.
//!
//! A saga that another node took over says so where it happened: a line in the lane of the
//! record the new node wrote first (under the lanes for a record about the whole saga), and a
//! row in the event log before that record. A saga one node drove shows no node at all.

use std::time::Duration;

use leptos::prelude::*;
use shared::story::{summary, takeover_words, words_of};
use shared::{Event, STEPS, SagaEvent, SagaState, StepOutcome, Takeover, Timeline as Projection};

use crate::components::service_state::{Replayed, ServiceState};
use crate::format::{clock, duration, hundredths, ms, now_ms, short_id};
use crate::reactive::{dynamic, list, text};

/// What a bar on a lane stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Action,
    Compensation,
    /// The backoff between a failed attempt and the next one.
    Wait,
}

/// One attempt of an action or a compensation, or the wait before the next attempt, as a bar
/// on the time axis.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    kind: Kind,
    attempt: u32,
    start: f64,
    end: Option<f64>,
    /// An attempt's time limit, or when a wait is planned to end (ms since the epoch).
    limit: Option<f64>,
    /// `ok`, `retry`, `timeout`, `failed`, `running`, `interrupted`, `wait`.
    outcome: &'static str,
    error: Option<String>,
}

impl Bar {
    fn open(kind: Kind, e: &SagaEvent, limit: Option<f64>) -> Bar {
        Bar {
            kind,
            attempt: e.attempt.unwrap_or(1),
            start: ms(&e.at),
            end: None,
            limit,
            outcome: if kind == Kind::Wait {
                "wait"
            } else {
                "running"
            },
            error: None,
        }
    }
}

fn bars_of(events: &[SagaEvent], step: &str) -> Vec<Bar> {
    let mut bars: Vec<Bar> = Vec::new();
    for e in events.iter().filter(|e| e.step.as_deref() == Some(step)) {
        let at = ms(&e.at);
        let error = e.event.error().map(str::to_string);
        // The open attempt (not a wait) ends with this outcome.
        let close = |bars: &mut Vec<Bar>, outcome: &'static str, error: Option<String>| {
            if let Some(bar) = bars
                .last_mut()
                .filter(|b| b.end.is_none() && b.kind != Kind::Wait)
            {
                bar.end = Some(at);
                bar.outcome = outcome;
                bar.error = error;
            }
        };
        let wait = |bars: &mut Vec<Bar>, delay_ms: u64| {
            bars.push(Bar::open(Kind::Wait, e, Some(at + delay_ms as f64)));
        };
        match &e.event {
            Event::StepStarted { .. } | Event::CompensationStarted {} => {
                // The wait before this attempt is over.
                if let Some(w) = bars
                    .last_mut()
                    .filter(|b| b.end.is_none() && b.kind == Kind::Wait)
                {
                    w.end = Some(at);
                }
                // A start while the previous attempt is still open: the process died mid-step.
                close(
                    &mut bars,
                    "interrupted",
                    Some("the server stopped during this attempt".into()),
                );
                bars.push(match e.event {
                    Event::StepStarted { timeout_ms } => {
                        Bar::open(Kind::Action, e, Some(at + timeout_ms as f64))
                    }
                    _ => Bar::open(Kind::Compensation, e, None),
                });
            }
            Event::StepSucceeded { .. } | Event::CompensationSucceeded { .. } => {
                close(&mut bars, "ok", None)
            }
            Event::StepRetrying {
                outcome_unknown,
                delay_ms,
                ..
            } => {
                close(
                    &mut bars,
                    if *outcome_unknown { "timeout" } else { "retry" },
                    error,
                );
                wait(&mut bars, *delay_ms);
            }
            Event::CompensationFailed {
                will_retry,
                delay_ms,
                ..
            } => {
                close(
                    &mut bars,
                    if *will_retry { "retry" } else { "failed" },
                    error,
                );
                if let (true, Some(delay)) = (*will_retry, delay_ms) {
                    wait(&mut bars, *delay);
                }
            }
            Event::StepFailed { outcome, .. } => match outcome {
                StepOutcome::Unknown => close(&mut bars, "timeout", error),
                StepOutcome::Failed => close(&mut bars, "failed", error),
            },
            // About the saga as a whole, not one of the step's attempts.
            Event::SagaStarted { .. }
            | Event::SagaCompleted {}
            | Event::SagaCompensated {}
            | Event::SagaStuck { .. }
            | Event::SagaResumed {} => {}
        }
    }
    bars
}

/// How a saga too fast to follow is shown: played once, slowed, when it is first shown.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Playback {
    /// Not decided yet: no event has arrived.
    Undecided,
    /// Shown as it happens (or happened): it is slow enough to follow.
    Off,
    /// Played `speed` times slower than it ran; `at` ms of the saga shown so far, playing
    /// since `since` (the page's clock: the server's may differ).
    Playing { speed: u32, at: f64, since: f64 },
    /// Played slowed once and now shown whole, in real time.
    Played { speed: u32 },
}

/// A saga that ran for less than this is played slowed.
const FAST_MS: f64 = 1000.0;

/// How much slower to play a saga that took `ms`: a round factor that makes it last a few
/// seconds.
fn speed_for(ms: f64) -> u32 {
    const SPEEDS: [u32; 8] = [500, 200, 100, 50, 20, 10, 5, 2];
    let wanted = 4000.0 / ms.max(1.0);
    SPEEDS
        .into_iter()
        .find(|s| f64::from(*s) <= wanted)
        .unwrap_or(2)
}

/// What the timeline reads, handed to its parts.
#[derive(Clone, Copy)]
struct Shown {
    saga_id: Memo<Option<String>>,
    /// Bumped to follow the saga's stream again (after a retry).
    refollow: RwSignal<u64>,
    events: RwSignal<Vec<SagaEvent>>,
    /// The moment shown: `None` follows the present; `Some(n)` replays the first n events.
    cursor: RwSignal<Option<usize>>,
    playback: RwSignal<Playback>,
    now: RwSignal<f64>,
    shown: Memo<Vec<SagaEvent>>,
    projection: Memo<Projection>,
    finished: Memo<bool>,
}

impl Shown {
    /// When the saga started (its first event), or now before any event.
    fn start(self) -> f64 {
        self.events
            .with(|ev| ev.first().map(|e| ms(&e.at)))
            .unwrap_or_else(|| self.now.get())
    }

    /// How long the saga has taken so far, by its own events' times (0 before two events).
    fn took(self) -> f64 {
        self.events.with(|ev| match (ev.first(), ev.last()) {
            (Some(a), Some(b)) => ms(&b.at) - ms(&a.at),
            _ => 0.0,
        })
    }

    /// Whether the page shows a moment of the past (the scrubber, or the slowed playback)
    /// rather than the present.
    fn replaying(self) -> bool {
        self.cursor.get().is_some() || matches!(self.playback.get(), Playback::Playing { .. })
    }

    /// The moment on show, in ms since the epoch: what "now" is for the bars still open. The
    /// present while the saga runs; the playback's moment; the last event shown otherwise.
    fn moment(self) -> f64 {
        let last = self.shown.with(|ev| ev.last().map(|e| ms(&e.at)));
        if self.cursor.get().is_some() {
            return last.unwrap_or_else(|| self.start());
        }
        match self.playback.get() {
            Playback::Playing { at, .. } => self.start() + at,
            _ if self.finished.get() => last.unwrap_or_else(|| self.start()),
            _ => self.now.get().max(last.unwrap_or(0.0)),
        }
    }

    /// The time axis: from the first event to the moment on show.
    fn axis(self) -> (f64, f64, f64) {
        let start = self.start();
        let end = self.moment();
        let growing = self.cursor.get().is_none()
            && (!self.finished.get() || matches!(self.playback.get(), Playback::Playing { .. }));
        // While the saga runs (or plays), the scale is a round span that only steps up (1 s,
        // 2 s, 5 s, …): the bars already drawn keep their width instead of shrinking at every
        // tick.
        let span = if growing {
            match self.playback.get() {
                // Played once it is known whole: the final scale from the start, so no bar
                // shrinks as it plays.
                Playback::Playing { .. } if self.finished.get() => self.took().max(1.0),
                Playback::Playing { .. } => round_up(end - start, 10.0),
                _ => round_up(end - start, 1000.0),
            }
        } else {
            (end - start).max(1.0)
        };
        (start, span, end)
    }
}

/// Advance the playback by `dt` ms of the page's time: decide it for a saga just shown,
/// move its moment on, and end it once the whole saga has been played. Durations are read
/// from the events' own times, never against the page's clock, which may differ.
fn advance(t: Shown, dt: f64) {
    let (first, last) = t.events.with(|ev| {
        (
            ev.first().map(|e| ms(&e.at)),
            ev.last().map(|e| ms(&e.at)).unwrap_or(0.0),
        )
    });
    let Some(first) = first else { return };
    let finished = t.finished.get_untracked();
    let took = last - first;
    let now = t.now.get_untracked();
    let next = match t.playback.get_untracked() {
        Playback::Undecided if finished && took < FAST_MS => Playback::Playing {
            speed: speed_for(took),
            at: 0.0,
            since: now,
        },
        // A saga that has only just started may turn out fast: play it slowed from the
        // start; it goes to real time if it lasts.
        Playback::Undecided if !finished && took < FAST_MS / 4.0 => Playback::Playing {
            speed: 20,
            at: 0.0,
            since: now,
        },
        Playback::Undecided => Playback::Off,
        Playback::Playing { since, .. }
            if !finished && (took > FAST_MS || now - since > FAST_MS) =>
        {
            Playback::Off
        }
        Playback::Playing { speed, at, since } => {
            let speed = if finished { speed_for(took) } else { speed };
            let at = at + dt / f64::from(speed);
            if finished && at >= took {
                Playback::Played { speed }
            } else {
                Playback::Playing { speed, at, since }
            }
        }
        other => other,
    };
    if next != t.playback.get_untracked() {
        t.playback.set(next);
    }
}

/// The smallest of 1, 2 and 5 times a power of ten that is at least `ms` and `floor`.
fn round_up(ms: f64, floor: f64) -> f64 {
    let mut unit = 1.0;
    loop {
        for step in [1.0, 2.0, 5.0] {
            if step * unit >= ms.max(floor) {
                return step * unit;
            }
        }
        unit *= 10.0;
    }
}

/// Ticks for a time axis `span` ms long: a round step giving at most five intervals.
fn ticks(span: f64) -> Vec<f64> {
    let step = round_up(span / 5.0, 1.0);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= span + 0.5)
        .collect()
}

#[component]
pub fn Timeline(
    saga_id: Memo<Option<String>>,
    events: RwSignal<Vec<SagaEvent>>,
    refollow: RwSignal<u64>,
) -> impl IntoView {
    let cursor = RwSignal::new(None::<usize>);
    let playback = RwSignal::new(Playback::Undecided);
    Effect::new(move |_| {
        saga_id.track();
        cursor.set(None);
        playback.set(Playback::Undecided);
    });
    let now = RwSignal::new(now_ms());
    let shown = Memo::new(move |_| {
        let all = events.get();
        if let Some(n) = cursor.get().filter(|n| *n < all.len()) {
            return all[..n].to_vec();
        }
        match playback.get() {
            Playback::Playing { at, .. } => {
                let start = all.first().map(|e| ms(&e.at)).unwrap_or_default();
                all.into_iter()
                    .take_while(|e| ms(&e.at) - start <= at)
                    .collect()
            }
            _ => all,
        }
    });
    let projection = Memo::new(move |_| {
        Projection::from_events(&saga_id.get().unwrap_or_default(), &STEPS, &shown.get())
    });
    let finished =
        Memo::new(move |_| events.with(|e| e.last().is_some_and(|l| l.event.kind().is_terminal())));
    let t = Shown {
        saga_id,
        refollow,
        events,
        cursor,
        playback,
        now,
        shown,
        projection,
        finished,
    };
    if let Ok(handle) = set_interval_with_handle(
        move || {
            let before = now.get_untracked();
            let at = now_ms();
            now.set(at);
            advance(t, at - before);
        },
        Duration::from_millis(50),
    ) {
        on_cleanup(move || handle.clear());
    }
    let watching = Memo::new(move |_| saga_id.with(Option::is_some));
    // An address naming no saga (mistyped, or from another server's log) says so, instead of
    // waiting forever for a first event.
    let missing = RwSignal::new(false);
    Effect::new(move |_| {
        missing.set(false);
        if let Some(id) = saga_id.get() {
            leptos::task::spawn_local(async move {
                if crate::api::saga_exists(&id).await == Some(false)
                    && saga_id.get_untracked().as_deref() == Some(id.as_str())
                {
                    missing.set(true);
                }
            });
        }
    });
    view! {
        <div class="panel">
            {dynamic(move || match (watching.get(), missing.get()) {
                (true, true) => no_such_saga(),
                (true, false) => watch(t),
                (false, _) => intro(),
            })}
        </div>
    }
}

fn no_such_saga() -> AnyView {
    view! {
        <div class="intro" data-testid="saga-missing">
            <h2>"No such saga"</h2>
            <p>"This server has no saga with the id in the address. Pick one from the list below, or place an order to start one."</p>
        </div>
    }
    .into_any()
}

fn intro() -> AnyView {
    view! {
        <div class="intro">
            <h2>"Watch a saga"</h2>
            <p>"Add something to the cart and press " <strong>"Buy"</strong>
            ". The purchase runs as a saga: each step below lights up as its service does its part. "
            "Pick a fault first to see retries, timeouts, and compensations undoing the earlier steps in reverse."</p>
        </div>
    }
    .into_any()
}

fn watch(t: Shown) -> AnyView {
    let order_id = Memo::new(move |_| {
        t.events.with(|e| {
            e.first().and_then(|f| match &f.event {
                Event::SagaStarted { order_id, .. } => order_id.clone(),
                _ => None,
            })
        })
    });
    let status = move || t.projection.with(|p| p.status.to_string());
    let log_box = NodeRef::<leptos::html::Div>::new();
    let follow = RwSignal::new(true);
    let last_top = StoredValue::new(0);
    Effect::new(move |_| {
        t.shown.track();
        if follow.get_untracked() {
            // After the new rows are in the page.
            request_animation_frame(move || {
                if let Some(el) = log_box.get_untracked() {
                    el.set_scroll_top(el.scroll_height());
                }
            });
        }
    });
    view! {
        <div
            class="timeline"
            data-testid="timeline"
            data-saga-id=text(move || t.saga_id.get().unwrap_or_default())
            data-status=text(status)
        >
            <div class="timeline-head">
                <h2>"Saga " <code title=text(move || t.saga_id.get().unwrap_or_default())>{text(move || t.saga_id.with(|s| short_id(s.as_deref().unwrap_or_default())))}</code></h2>
                <span class=text(move || format!("badge {}", status())) data-testid="saga-status">
                    {text(status)}
                </span>
                <span class="muted">{text(move || duration(t.moment() - t.start()))}</span>
            </div>
            <p class="summary" data-testid="saga-summary" data-status=text(status) aria-live="polite" aria-atomic="true">
                {text(move || t.shown.with(|shown| summary(shown)))}
            </p>
            {playback_control(t)}
            {dynamic(move || if t.projection.with(|p| p.status == SagaState::Stuck) && !t.replaying() {
                retry_button(t)
            } else {
                ().into_any()
            })}
            <ol class="lanes">
                {STEPS.iter().enumerate().map(|(i, &step)| lane(t, i, step)).collect_view()}
            </ol>
            {takeovers_at(t, None)}
            <div class="axis-row" aria-hidden="true">
                <span class="axis-title">"time since the saga started"</span>
                <div class="axis" data-testid="time-axis">
                    {list(move || {
                        let (_, span, _) = t.axis();
                        ticks(span).into_iter().map(|at| {
                            let left = at / span * 100.0;
                            view! {
                                <span class="tick" style=format!("left:{}%", hundredths((left * 100.0).round() as i64))>
                                    {duration(at)}
                                </span>
                            }.into_any()
                        }).collect()
                    })}
                </div>
            </div>
            {legend()}
            {dynamic(move || {
                let playing = matches!(t.playback.get(), Playback::Playing { .. });
                if t.finished.get() && !playing { scrubber(t) } else { ().into_any() }
            })}
        </div>
        <h3 id="event-log-title">"Event log"</h3>
        // Focusable, so a keyboard can scroll it; a region named by its heading, so focus says what it is.
        <div class="log-wrap" tabindex="0" role="region" aria-labelledby="event-log-title" node_ref=log_box on:scroll=move |_| {
            // Following the newest row unless the person scrolled up to read. Only a move
            // upwards stops following: rows added between our own scroll and its event leave
            // the box short of the bottom without anyone having scrolled.
            if let Some(el) = log_box.get_untracked() {
                let top = el.scroll_top();
                if el.scroll_height() - top - el.client_height() < 24 {
                    follow.set(true);
                } else if top < last_top.get_value() {
                    follow.set(false);
                }
                last_top.set_value(top);
            }
        }>
            <table class="log" data-testid="event-log">
                <thead><tr><th>"seq"</th><th>"time"</th><th>"event"</th><th>"step"</th><th>"attempt"</th><th>"reason"</th></tr></thead>
                <tbody>
                    {list(move || t.projection.with(|p| t.shown.with(|shown| {
                        let mut rows = Vec::with_capacity(shown.len() + p.takeovers.len());
                        for e in shown {
                            if let Some(k) = p.takeovers.iter().find(|k| k.seq == e.seq) {
                                rows.push(takeover_row(k));
                            }
                            rows.push(log_row(e));
                        }
                        rows
                    })))}
                </tbody>
            </table>
        </div>
        <ServiceState order_id=order_id finished=t.finished.into() replay=Signal::derive(move || replayed_services(t)) />
    }
    .into_any()
}

fn log_row(e: &SagaEvent) -> AnyView {
    view! {
        <tr class=e.event.kind().as_str()>
            <td>{e.seq.to_string()}</td>
            <td>{clock(&e.at)}</td>
            <td>{e.event.kind().as_str()}</td>
            <td>{e.step.clone().unwrap_or_default()}</td>
            <td>{e.attempt.map(|a| a.to_string()).unwrap_or_default()}</td>
            <td>{e.event.error().unwrap_or_default().to_string()}</td>
        </tr>
    }
    .into_any()
}

/// The log's row before the first record a node wrote after taking the saga over.
fn takeover_row(k: &Takeover) -> AnyView {
    view! {
        <tr class="takeover" data-testid="takeover-row" data-from=k.from.clone() data-to=k.to.clone()>
            <td colspan="6">{takeover_words(k)}</td>
        </tr>
    }
    .into_any()
}

/// The takeovers whose first record is about `step` (`None`: about the whole saga), each a
/// line in words, at the moment on show.
fn takeovers_at(t: Shown, step: Option<&'static str>) -> AnyView {
    list(move || {
        t.projection.with(|p| {
            p.takeovers
                .iter()
                .filter(|k| k.step.as_deref() == step)
                .map(|k| {
                    view! {
                        <p class="takeover" data-testid="takeover" data-from=k.from.clone() data-to=k.to.clone()>
                            {takeover_words(k)}
                        </p>
                    }
                    .into_any()
                })
                .collect()
        })
    })
}

fn lane(t: Shown, i: usize, step: &'static str) -> impl IntoView {
    let status = move || t.projection.with(|p| p.steps[i].status.to_string());
    let bars = move || t.shown.with(|shown| bars_of(shown, step));
    view! {
        <li class=text(move || format!("lane {}", status())) data-testid=format!("step-{step}") data-status=text(status)
            data-node=text(move || t.projection.with(|p| p.steps[i].node.clone().unwrap_or_default()))>
            <div class="lane-label">
                <span class="step-title">{words_of(step).map(|w| format!("{} · {}", w.service, w.action)).unwrap_or_default()}</span>
                <code class="step-name">{step}</code>
                <span class="lane-node">{text(move || t.projection.with(|p| {
                    // Named only when several nodes drove this saga: a takeover is worth seeing.
                    let mut nodes: Vec<&str> = p.steps.iter().filter_map(|s| s.node.as_deref()).collect();
                    nodes.sort_unstable();
                    nodes.dedup();
                    match (&p.steps[i].node, nodes.len() > 1) {
                        (Some(node), true) => format!("on {}", shared::story::node(node)),
                        _ => String::new(),
                    }
                }))}</span>
                <span class="lane-status">{text(move || {
                    // A lane whose undo gave up is not refused like a declined card: it is
                    // what leaves the saga stuck.
                    let undo_failed = bars().last().is_some_and(|b| b.kind == Kind::Compensation && b.outcome == "failed");
                    if undo_failed { "undo failed: needs a person".into() } else { status() }
                })}</span>
                <span class="attempts">{text(move || match t.projection.with(|p| p.steps[i].attempts) {
                    0 => String::new(),
                    1 => "1 attempt".into(),
                    n => format!("{n} attempts"),
                })}</span>
            </div>
            <div class="track" aria-hidden="true">
                {list(move || {
                    let (start, span, end) = t.axis();
                    bars().into_iter().map(|b| bar(b, start, span, end)).collect()
                })}
            </div>
            <div class="lane-detail">
                {list(move || {
                    let moment = t.moment();
                    bars().into_iter().map(|b| attempt_label(&b, moment)).collect()
                })}
            </div>
            {takeovers_at(t, Some(step))}
        </li>
    }
}

/// A bar in words under its lane: each attempt with its time and, for a failed one, its
/// reason (kept after a later attempt succeeds); a wait with its backoff, counting down.
fn attempt_label(b: &Bar, moment: f64) -> AnyView {
    let stop = b.end.unwrap_or(moment);
    let label = match b.kind {
        Kind::Wait => match (b.end, b.limit) {
            (None, Some(until)) => format!("retrying in {}", duration((until - moment).max(0.0))),
            (_, Some(until)) => format!("waited {}", duration(until - b.start)),
            _ => format!("waited {}", duration(stop - b.start)),
        },
        Kind::Action | Kind::Compensation => {
            let mut label = format!(
                "{}#{} {}",
                if b.kind == Kind::Compensation {
                    "undo "
                } else {
                    ""
                },
                b.attempt,
                duration(stop - b.start)
            );
            if let Some(e) = &b.error {
                label.push_str(": ");
                label.push_str(e);
            }
            label
        }
    };
    let kind = match b.kind {
        Kind::Action => "act",
        Kind::Compensation => "comp",
        Kind::Wait => "wait",
    };
    view! { <span class=format!("attempt {kind} {}", b.outcome)>{label}</span> }.into_any()
}

/// One attempt drawn on the time axis `start`..`end` (`span` long), in percent, with its time
/// limit marked where the axis reaches it.
fn bar(b: Bar, start: f64, span: f64, end: f64) -> AnyView {
    let pct = |at: f64| hundredths(((at - start) / span * 10_000.0).round() as i64);
    // A wait is drawn to when it is planned to end, even before it has.
    let stop = match (b.kind, b.end) {
        (_, Some(e)) => e,
        (Kind::Wait, None) => b.limit.unwrap_or(end).min(start + span),
        (_, None) => end,
    };
    let width = ((stop - b.start) / span * 100.0).max(0.6);
    let what = match b.kind {
        Kind::Action => "action",
        Kind::Compensation => "compensation",
        Kind::Wait => "wait before the next attempt",
    };
    let title = format!(
        "{what}{}: {}{}",
        if b.kind == Kind::Wait {
            String::new()
        } else {
            format!(" attempt {}", b.attempt)
        },
        duration(stop - b.start),
        b.error
            .as_ref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    );
    let class = match b.kind {
        Kind::Action => "act",
        Kind::Compensation => "comp",
        Kind::Wait => "wait",
    };
    // The time limit of an attempt still running or one that ran into it, where the axis
    // shows it (a 5 s limit is off a 40 ms axis).
    let limit = b
        .limit
        .filter(|_| b.kind == Kind::Action && matches!(b.outcome, "running" | "timeout"))
        .filter(|l| *l <= start + span)
        .map(|l| {
            view! {
                <span class="limit" style=format!("left:{}%", pct(l)) title=format!("time limit: {}", duration(l - b.start))></span>
            }
            .into_any()
        });
    view! {
        <span
            class=format!("bar {class} {}", b.outcome)
            style=format!("left:{}%;width:{}%", pct(b.start), hundredths((width * 100.0).round() as i64))
            title=title
        ></span>
        {limit}
    }
    .into_any()
}

/// What an operator does for a stuck saga once the outage behind it is over: retry its
/// compensations (`POST /api/sagas/{id}/retry`), then follow it again as it unwinds on.
fn retry_button(t: Shown) -> AnyView {
    let failure = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let retry = move |_| {
        let Some(id) = t.saga_id.get_untracked() else {
            return;
        };
        busy.set(true);
        leptos::task::spawn_local(async move {
            match crate::api::retry_saga(&id).await {
                Ok(_) => {
                    failure.set(None);
                    t.refollow.update(|n| *n += 1);
                }
                Err(e) => failure.set(Some(e.message)),
            }
            busy.set(false);
        });
    };
    view! {
        <div class="operator">
            <button type="button" class="retry" data-testid="retry-saga" on:click=retry disabled=busy>
                "Retry compensation"
            </button>
            <span class="muted">"Once the service is back: the saga undoes what is left, with the same idempotency keys."</span>
            // An alert only when there is something to say.
            {dynamic(move || match failure.get() {
                Some(message) => view! { <span class="error" role="alert">{message}</span> }.into_any(),
                None => ().into_any(),
            })}
        </div>
    }
    .into_any()
}

/// What the bars' colours and patterns mean.
fn legend() -> AnyView {
    const KEYS: [(&str, &str); 9] = [
        ("bar act", "action"),
        ("bar act running", "running"),
        ("bar comp", "compensation (undo)"),
        ("bar retry", "failed, retried"),
        ("bar wait", "wait before a retry (backoff)"),
        ("bar timeout", "timed out: outcome unknown"),
        ("limit", "the step's time limit"),
        ("bar failed", "failed for good"),
        ("bar interrupted", "interrupted by a crash"),
    ];
    view! {
        <ul class="legend" data-testid="timeline-legend">
            {KEYS.iter().map(|(class, label)| view! {
                <li><span class=format!("swatch {class}")></span>{*label}</li>
            }).collect_view()}
            <li>"#2: the second attempt; undo #1: the first attempt at undoing it"</li>
        </ul>
    }
    .into_any()
}

fn scrubber(t: Shown) -> AnyView {
    let count = move || t.events.with(Vec::len);
    view! {
        <label class="scrubber">
            <span>"Replay: "</span>
            <input
                type="range"
                min="1"
                data-testid="scrubber"
                prop:max=text(move || count().to_string())
                prop:value=text(move || t.cursor.get().unwrap_or_else(count).to_string())
                on:input=move |ev| {
                    // Scrubbing takes over from the slowed playback.
                    if let Playback::Playing { speed, .. } = t.playback.get_untracked() {
                        t.playback.set(Playback::Played { speed });
                    }
                    t.cursor.set(event_target_value(&ev).parse().ok())
                }
            />
            <span class="muted">{text(move || format!("event {} of {}", t.shown.with(Vec::len), count()))}</span>
        </label>
    }
    .into_any()
}

/// The slowed playback of a fast saga, labelled, with the way to real time and back.
fn playback_control(t: Shown) -> AnyView {
    let speed = move || match t.playback.get() {
        Playback::Playing { speed, .. } => speed,
        _ => 1,
    };
    view! {
        <div class="playback" data-testid="playback" data-speed=text(move || speed().to_string())>
            {dynamic(move || match t.playback.get() {
                Playback::Playing { speed, .. } => view! {
                    <span class="playing">{text(move || if t.finished.get() {
                        format!("Shown {speed}× slower: it took {}.", duration(t.took()))
                    } else {
                        format!("Shown {speed}× slower, as it happens.")
                    })}</span>
                    <button type="button" on:click=move |_| t.playback.set(Playback::Played { speed })>
                        "Show real time"
                    </button>
                }.into_any(),
                Playback::Played { speed } => view! {
                    <span>{text(move || format!("It took {}, too fast to follow in real time.", duration(t.took())))}</span>
                    <button type="button" on:click=move |_| {
                        t.cursor.set(None);
                        t.playback.set(Playback::Playing { speed, at: 0.0, since: now_ms() });
                    }>{format!("Play again {speed}× slower")}</button>
                }.into_any(),
                Playback::Undecided | Playback::Off => ().into_any(),
            })}
        </div>
    }
    .into_any()
}

/// What each service holds at the moment on show, as the events tell it: while the saga runs
/// or the page shows a past moment (the scrubber or the slowed playback). `None` once the
/// finished saga is shown whole: then the services themselves say.
fn replayed_services(t: Shown) -> Option<Replayed> {
    let replaying = t.replaying();
    if !replaying && (t.finished.get() || t.events.with(Vec::is_empty)) {
        return None;
    }
    let lines = t.projection.with(|p| {
        p.steps
            .iter()
            .filter_map(|v| Some((words_of(&v.step)?, v.status)))
            .map(|(w, status)| (w.service, w.at_state(status).to_string()))
            .collect()
    });
    let caption = if replaying {
        format!(
            "At event {} of {}",
            t.shown.with(Vec::len),
            t.events.with(Vec::len)
        )
    } else {
        "So far".to_string()
    };
    Some(Replayed { caption, lines })
}
