//! The live saga timeline: one lane per step with its state, attempts, durations and errors,
//! and a bar per attempt drawn to scale (actions left to right, compensations in their own
//! colour as they run back up the lanes). Below it the event log and what the services hold.
//! A finished saga can be replayed at any moment of its history with the scrubber.

use std::time::Duration;

use leptos::prelude::*;
use shared::story::{summary, words_of};
use shared::{Event, STEPS, SagaEvent, SagaState, StepOutcome, Timeline as Projection};

use crate::components::service_state::ServiceState;
use crate::format::{clock, duration, hundredths, ms, now_ms, short_id};
use crate::reactive::{dynamic, list, text};

/// One attempt of an action or a compensation, as a bar on the time axis.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    compensation: bool,
    attempt: u32,
    start: f64,
    end: Option<f64>,
    /// `ok`, `retry`, `timeout`, `failed`, `running`, `interrupted`.
    outcome: &'static str,
    error: Option<String>,
}

fn bars_of(events: &[SagaEvent], step: &str) -> Vec<Bar> {
    let mut bars: Vec<Bar> = Vec::new();
    for e in events.iter().filter(|e| e.step.as_deref() == Some(step)) {
        let at = ms(&e.at);
        let error = e.event.error().map(str::to_string);
        let mut close = |outcome: &'static str, error: Option<String>| {
            if let Some(bar) = bars.last_mut().filter(|b| b.end.is_none()) {
                bar.end = Some(at);
                bar.outcome = outcome;
                bar.error = error;
            }
        };
        match &e.event {
            Event::StepStarted { .. } | Event::CompensationStarted {} => {
                // A start while the previous attempt is still open: the process died mid-step.
                close(
                    "interrupted",
                    Some("the server stopped during this attempt".into()),
                );
                bars.push(Bar {
                    compensation: matches!(e.event, Event::CompensationStarted {}),
                    attempt: e.attempt.unwrap_or(1),
                    start: at,
                    end: None,
                    outcome: "running",
                    error: None,
                });
            }
            Event::StepSucceeded { .. } | Event::CompensationSucceeded { .. } => close("ok", None),
            Event::StepRetrying {
                outcome_unknown, ..
            } => close(if *outcome_unknown { "timeout" } else { "retry" }, error),
            Event::CompensationFailed { will_retry, .. } => {
                close(if *will_retry { "retry" } else { "failed" }, error)
            }
            Event::StepFailed { outcome, .. } => match outcome {
                StepOutcome::Unknown => close("timeout", error),
                StepOutcome::Failed => close("failed", error),
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

/// What the timeline reads, handed to its parts.
#[derive(Clone, Copy)]
struct Shown {
    saga_id: Memo<Option<String>>,
    /// Bumped to follow the saga's stream again (after a retry).
    refollow: RwSignal<u64>,
    events: RwSignal<Vec<SagaEvent>>,
    /// The moment shown: `None` follows the present; `Some(n)` replays the first n events.
    cursor: RwSignal<Option<usize>>,
    now: RwSignal<f64>,
    shown: Memo<Vec<SagaEvent>>,
    projection: Memo<Projection>,
    finished: Memo<bool>,
}

impl Shown {
    /// The time axis: from the first event to the last shown (or to now while it runs).
    fn axis(self) -> (f64, f64, f64) {
        let (start, last) = self.shown.with(|ev| {
            let start = ev.first().map(|e| ms(&e.at)).unwrap_or_else(now_ms);
            (start, ev.last().map(|e| ms(&e.at)).unwrap_or(start))
        });
        let live = self.cursor.get().is_none() && !self.finished.get();
        let end = if live { self.now.get().max(last) } else { last };
        // While the saga runs, the scale is a round span that only steps up (1 s, 2 s, 5 s,
        // …): the bars already drawn keep their width instead of shrinking at every tick.
        let span = if live {
            round_up(end - start, 1000.0)
        } else {
            (end - start).max(1.0)
        };
        (start, span, end)
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
    Effect::new(move |_| {
        saga_id.track();
        cursor.set(None);
    });
    let now = RwSignal::new(now_ms());
    if let Ok(handle) =
        set_interval_with_handle(move || now.set(now_ms()), Duration::from_millis(100))
    {
        on_cleanup(move || handle.clear());
    }
    let shown = Memo::new(move |_| {
        let all = events.get();
        match cursor.get() {
            Some(n) if n < all.len() => all[..n].to_vec(),
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
        now,
        shown,
        projection,
        finished,
    };
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
                <span class="muted">{text(move || duration(t.axis().1))}</span>
            </div>
            <p class="summary" data-testid="saga-summary" data-status=text(status) aria-live="polite" aria-atomic="true">
                {text(move || t.shown.with(|shown| summary(shown)))}
            </p>
            {dynamic(move || if t.projection.with(|p| p.status == SagaState::Stuck) && t.cursor.get().is_none() {
                retry_button(t)
            } else {
                ().into_any()
            })}
            <ol class="lanes">
                {STEPS.iter().enumerate().map(|(i, &step)| lane(t, i, step)).collect_view()}
            </ol>
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
            {dynamic(move || if t.finished.get() { scrubber(t) } else { ().into_any() })}
        </div>
        <h3 id="event-log-title">"Event log"</h3>
        // Focusable, so a keyboard can scroll it; a region named by its heading, so focus says what it is.
        <div class="log-wrap" tabindex="0" role="region" aria-labelledby="event-log-title" node_ref=log_box on:scroll=move |_| {
            // Following the newest row unless the person scrolled up to read.
            if let Some(el) = log_box.get_untracked() {
                follow.set(el.scroll_height() - el.scroll_top() - el.client_height() < 24);
            }
        }>
            <table class="log" data-testid="event-log">
                <thead><tr><th>"seq"</th><th>"time"</th><th>"event"</th><th>"step"</th><th>"attempt"</th><th>"reason"</th></tr></thead>
                <tbody>
                    {list(move || t.shown.with(|shown| shown.iter().map(log_row).collect()))}
                </tbody>
            </table>
        </div>
        <ServiceState order_id=order_id finished=t.finished.into() />
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

fn lane(t: Shown, i: usize, step: &'static str) -> impl IntoView {
    let status = move || t.projection.with(|p| p.steps[i].status.to_string());
    let bars = move || t.shown.with(|shown| bars_of(shown, step));
    view! {
        <li class=text(move || format!("lane {}", status())) data-testid=format!("step-{step}") data-status=text(status)>
            <div class="lane-label">
                <span class="step-title">{words_of(step).map(|w| format!("{} · {}", w.service, w.action)).unwrap_or_default()}</span>
                <code class="step-name">{step}</code>
                <span class="lane-status">{text(status)}</span>
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
                    let mut parts: Vec<AnyView> = bars().into_iter().map(|b| {
                        let stop = b.end.unwrap_or_else(|| t.now.get());
                        let label = format!("{}#{} {}", if b.compensation { "undo " } else { "" }, b.attempt, duration(stop - b.start));
                        let kind = if b.compensation { "comp" } else { "act" };
                        view! { <span class=format!("attempt {kind} {}", b.outcome)>{label}</span> }.into_any()
                    }).collect();
                    if let Some(e) = t.projection.with(|p| p.steps[i].error.clone()) {
                        parts.push(view! { <span class="lane-error">{e}</span> }.into_any());
                    }
                    parts
                })}
            </div>
        </li>
    }
}

/// One attempt drawn on the time axis `start`..`end` (`span` long), in percent.
fn bar(b: Bar, start: f64, span: f64, end: f64) -> AnyView {
    let stop = b.end.unwrap_or(end);
    let left = (b.start - start) / span * 100.0;
    let width = ((stop - b.start) / span * 100.0).max(0.6);
    let title = format!(
        "{} attempt {}: {}{}",
        if b.compensation {
            "compensation"
        } else {
            "action"
        },
        b.attempt,
        duration(stop - b.start),
        b.error
            .as_ref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    );
    view! {
        <span
            class=format!("bar {} {}", if b.compensation { "comp" } else { "act" }, b.outcome)
            style=format!("left:{}%;width:{}%", hundredths((left * 100.0).round() as i64), hundredths((width * 100.0).round() as i64))
            title=title
        ></span>
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
    const KEYS: [(&str, &str); 7] = [
        ("bar act", "action"),
        ("bar act running", "running"),
        ("bar comp", "compensation (undo)"),
        ("bar retry", "failed, retried"),
        ("bar timeout", "timed out: outcome unknown"),
        ("bar failed", "failed for good"),
        ("bar interrupted", "interrupted by a crash"),
    ];
    view! {
        <ul class="legend" data-testid="timeline-legend">
            {KEYS.iter().map(|(class, label)| view! {
                <li><span class=format!("swatch {class}")></span>{*label}</li>
            }).collect_view()}
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
                on:input=move |ev| t.cursor.set(event_target_value(&ev).parse().ok())
            />
            <span class="muted">{text(move || format!("event {} of {}", t.shown.with(Vec::len), count()))}</span>
        </label>
    }
    .into_any()
}
