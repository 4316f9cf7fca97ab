//! The live saga timeline: one lane per step with its state, attempts, durations and errors,
//! and a bar per attempt drawn to scale (actions left to right, compensations in their own
//! colour as they run back up the lanes). Below it the event log and what the services hold.
//! A finished saga can be replayed at any moment of its history with the scrubber.

use std::time::Duration;

use leptos::prelude::*;
use shared::{STEPS, SagaEvent, Timeline as Projection};

use crate::components::service_state::ServiceState;
use crate::format::{clock, duration, hundredths, ms, now_ms};
use crate::live::is_terminal;

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
        let error = e
            .detail
            .get("error")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let mut close = |outcome: &'static str, error: Option<String>| {
            if let Some(bar) = bars.last_mut().filter(|b| b.end.is_none()) {
                bar.end = Some(at);
                bar.outcome = outcome;
                bar.error = error;
            }
        };
        match e.kind.as_str() {
            "step_started" | "compensation_started" => {
                // A start while the previous attempt is still open: the process died mid-step.
                close(
                    "interrupted",
                    Some("the server stopped during this attempt".into()),
                );
                bars.push(Bar {
                    compensation: e.kind == "compensation_started",
                    attempt: e.attempt.unwrap_or(1),
                    start: at,
                    end: None,
                    outcome: "running",
                    error: None,
                });
            }
            "step_succeeded" | "compensation_succeeded" => close("ok", None),
            "step_retrying" => {
                let timeout = e
                    .detail
                    .get("outcome_unknown")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                close(if timeout { "timeout" } else { "retry" }, error);
            }
            "compensation_failed" => {
                let again = e
                    .detail
                    .get("will_retry")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                close(if again { "retry" } else { "failed" }, error);
            }
            "step_failed" => {
                let unknown = e.detail.get("outcome").and_then(|v| v.as_str()) == Some("unknown");
                close(if unknown { "timeout" } else { "failed" }, error);
            }
            _ => {}
        }
    }
    bars
}

#[component]
pub fn Timeline(saga_id: Memo<Option<String>>, events: RwSignal<Vec<SagaEvent>>) -> impl IntoView {
    // The moment shown: `None` follows the present; `Some(n)` replays the first n events.
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
    let finished = move || events.with(|e| e.last().is_some_and(|l| is_terminal(&l.kind)));
    // The time axis: from the first event to the last shown (or to now while it runs).
    let axis = move || {
        let ev = shown.get();
        let start = ev.first().map(|e| ms(&e.at)).unwrap_or_else(now_ms);
        let last = ev.last().map(|e| ms(&e.at)).unwrap_or(start);
        let live = cursor.get().is_none() && !finished();
        let end = if live { now.get().max(last) } else { last };
        (start, (end - start).max(1.0), end)
    };
    let order_id = Memo::new(move |_| {
        events.with(|e| {
            e.first()
                .and_then(|f| f.detail.get("order_id"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
    });

    view! {
        <div class="panel">
            <Show when=move || saga_id.get().is_some() fallback=|| view! {
                <div class="intro">
                    <h2>"Watch a saga"</h2>
                    <p>"Add something to the cart and press " <strong>"Buy"</strong>
                    ". The purchase runs as a saga: each step below lights up as its service does its part. "
                    "Pick a fault first to see retries, timeouts, and compensations undoing the earlier steps in reverse."</p>
                </div>
            }>
                <div
                    class="timeline"
                    data-testid="timeline"
                    data-saga-id=move || saga_id.get().unwrap_or_default()
                    data-status=move || projection.get().status
                >
                    <div class="timeline-head">
                        <h2>"Saga " <code>{move || saga_id.get().map(|s| s.chars().take(8).collect::<String>())}</code></h2>
                        <span class=move || format!("badge {}", projection.get().status) data-testid="saga-status">
                            {move || projection.get().status}
                        </span>
                        <span class="muted">{move || {
                            let (_, span, _) = axis();
                            duration(span)
                        }}</span>
                    </div>
                    <ol class="lanes">
                        {STEPS.iter().enumerate().map(|(i, &step)| {
                            let lane = move || projection.get().steps[i].clone();
                            let bars = move || bars_of(&shown.get(), step);
                            view! {
                                <li class=move || format!("lane {}", lane().status) data-testid=format!("step-{step}") data-status=move || lane().status>
                                    <div class="lane-label">
                                        <span class="step-name">{step}</span>
                                        <span class="lane-status">{move || lane().status}</span>
                                        <span class="attempts">{move || match lane().attempts {
                                            0 => String::new(),
                                            1 => "1 attempt".into(),
                                            n => format!("{n} attempts"),
                                        }}</span>
                                    </div>
                                    <div class="track" aria-hidden="true">
                                        {move || {
                                            let (start, span, end) = axis();
                                            bars().into_iter().map(|b| {
                                                let stop = b.end.unwrap_or(end);
                                                let left = (b.start - start) / span * 100.0;
                                                let width = ((stop - b.start) / span * 100.0).max(0.6);
                                                let title = format!(
                                                    "{} attempt {}: {}{}",
                                                    if b.compensation { "compensation" } else { "action" },
                                                    b.attempt,
                                                    duration(stop - b.start),
                                                    b.error.as_ref().map(|e| format!(" — {e}")).unwrap_or_default()
                                                );
                                                view! {
                                                    <span
                                                        class=format!("bar {} {}", if b.compensation { "comp" } else { "act" }, b.outcome)
                                                        style=format!("left:{}%;width:{}%", hundredths((left * 100.0).round() as i64), hundredths((width * 100.0).round() as i64))
                                                        title=title
                                                    ></span>
                                                }
                                            }).collect_view()
                                        }}
                                    </div>
                                    <div class="lane-detail">
                                        {move || bars().into_iter().map(|b| {
                                            let stop = b.end.unwrap_or_else(|| now.get());
                                            view! {
                                                <span class=format!("attempt {}", b.outcome)>
                                                    {format!("{}#{} {}", if b.compensation { "undo " } else { "" }, b.attempt, duration(stop - b.start))}
                                                </span>
                                            }
                                        }).collect_view()}
                                        {move || lane().error.map(|e| view! { <span class="lane-error">{e}</span> })}
                                    </div>
                                </li>
                            }
                        }).collect_view()}
                    </ol>
                    <Show when=finished>
                        <label class="scrubber">
                            <span>"Replay: "</span>
                            <input
                                type="range"
                                min="1"
                                data-testid="scrubber"
                                prop:max=move || events.with(Vec::len).to_string()
                                prop:value=move || cursor.get().unwrap_or_else(|| events.with(Vec::len)).to_string()
                                on:input=move |ev| cursor.set(event_target_value(&ev).parse().ok())
                            />
                            <span class="muted">{move || format!("event {} of {}", shown.with(Vec::len), events.with(Vec::len))}</span>
                        </label>
                    </Show>
                </div>
                <h3>"Event log"</h3>
                <div class="log-wrap">
                    <table class="log" data-testid="event-log">
                        <thead><tr><th>"seq"</th><th>"time"</th><th>"event"</th><th>"step"</th><th>"attempt"</th></tr></thead>
                        <tbody>
                            <For each=move || shown.get() key=|e| e.seq let:e>
                                <tr class=e.kind.clone()>
                                    <td>{e.seq}</td>
                                    <td>{clock(&e.at)}</td>
                                    <td>{e.kind.clone()}</td>
                                    <td>{e.step.clone().unwrap_or_default()}</td>
                                    <td>{e.attempt.map(|a| a.to_string()).unwrap_or_default()}</td>
                                </tr>
                            </For>
                        </tbody>
                    </table>
                </div>
                <ServiceState order_id=order_id finished=Signal::derive(finished) />
            </Show>
        </div>
    }
}
