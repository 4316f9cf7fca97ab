//! Every saga, newest first, as a person reads it: who is buying, for how much, how it ended
//! and why, how long it took, and when it started (the browser's local time, and how long
//! ago). A filter shows the sagas in one state only; each row opens its timeline. The node
//! that drove each saga is shown only when it tells rows apart: the rows on screen come from
//! more than one node, or one of them was taken over (`node-a → node-b`).
//!
//! The rows are the server's: `GET /api/sagas?status=`, fetched again whenever the
//! `/api/events` stream brings a change the list shows (a saga started, changed state, was
//! priced or failed). So a saga that changes state moves into or out of a filtered view, and
//! a new saga's row comes with its customer and total, which no event carries. The stream is
//! opened once the first list is in place, from its `x-log-position`, so nothing between the
//! two is missed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::story::{node, words_of};
use shared::{Event, SagaEvent, SagaListItem, SagaState};

use crate::api;
use crate::format::{ago, elapsed, local_time, money_in, ms, now_ms, short_id};
use crate::live;
use crate::reactive::{dynamic, list, text};
use crate::route::{Route, navigate};

/// How many sagas the list shows, newest first.
const ROWS: usize = 50;

/// How often the list looks whether the stream brought a change it shows.
const TICK: Duration = Duration::from_millis(100);

/// The least time between two fetches of the list, in ms: a busy system changes it many times
/// a second; it is fetched again at most this often, one request at a time, all at once.
const REFETCH_GAP_MS: f64 = 300.0;

/// After a failed fetch, the next waits this long (ms).
const RETRY_MS: f64 = 2000.0;

/// How often the times that run on ("2 min ago", "12 s so far") are brought up to date.
const CLOCK: Duration = Duration::from_secs(1);

/// The purchase step whose answer prices the order.
const PLACE_ORDER: &str = "place_order";

/// Whether the list must be fetched again, and when it may be.
#[derive(Default)]
struct Refresh {
    /// Something the list shows changed since the last fetch was sent.
    stale: Cell<bool>,
    in_flight: Cell<bool>,
    /// The earliest time (ms since the epoch) of the next fetch.
    not_before: Cell<f64>,
}

/// Whether `event` changes something a row shows: a saga's state (its start included), its
/// total (the order placed) or why it turned back.
fn changes_the_list(event: &SagaEvent) -> bool {
    event.event.kind().saga_state_after().is_some()
        || match event.event {
            Event::StepFailed { .. } => true,
            Event::StepSucceeded { .. } => event.step.as_deref() == Some(PLACE_ORDER),
            _ => false,
        }
}

/// Fetch the list as the filter now says, unless a fetch is under way. A filter changed while
/// it was leaves the list stale, to be fetched again; a list is never shown under the wrong
/// filter.
fn fetch(
    sagas: RwSignal<Vec<SagaListItem>>,
    filter: RwSignal<Option<SagaState>>,
    refresh: Rc<Refresh>,
) {
    if refresh.in_flight.replace(true) {
        return;
    }
    refresh.stale.set(false);
    refresh.not_before.set(now_ms() + REFETCH_GAP_MS);
    let asked = filter.get_untracked();
    spawn_local(async move {
        match api::sagas(ROWS, asked).await {
            Ok((list, _)) if filter.get_untracked() == asked => sagas.set(list),
            Ok(_) => refresh.stale.set(true),
            Err(e) => {
                leptos::logging::error!("cannot list the sagas: {}", e.message);
                refresh.stale.set(true);
                refresh.not_before.set(now_ms() + RETRY_MS);
            }
        }
        refresh.in_flight.set(false);
    });
}

#[component]
pub fn SagaList(route: RwSignal<Route>) -> impl IntoView {
    let sagas = RwSignal::new(Vec::<SagaListItem>::new());
    let filter = RwSignal::new(None::<SagaState>);
    let now = RwSignal::new(now_ms());
    let refresh = Rc::new(Refresh::default());
    // The first list, then the stream from where it is current. Without the list (the fetch
    // failed) the stream follows from now on, and its first change fetches the list again.
    refresh.in_flight.set(true);
    spawn_local({
        let refresh = refresh.clone();
        async move {
            let after = match api::sagas(ROWS, None).await {
                Ok((list, position)) => {
                    if filter.get_untracked().is_none() {
                        sagas.set(list);
                    } else {
                        refresh.stale.set(true);
                    }
                    position
                }
                Err(e) => {
                    leptos::logging::error!("cannot list the sagas: {}", e.message);
                    refresh.stale.set(true);
                    None
                }
            };
            refresh.in_flight.set(false);
            let stream_refresh = refresh.clone();
            live::follow_all(after, move |event| {
                if changes_the_list(&event) {
                    stream_refresh.stale.set(true);
                }
            });
        }
    });
    let on_tick = {
        let refresh = refresh.clone();
        move || {
            if refresh.stale.get() && now_ms() >= refresh.not_before.get() {
                fetch(sagas, filter, refresh.clone());
            }
        }
    };
    if let Ok(handle) = set_interval_with_handle(on_tick, TICK) {
        on_cleanup(move || handle.clear());
    }
    if let Ok(handle) = set_interval_with_handle(move || now.set(now_ms()), CLOCK) {
        on_cleanup(move || handle.clear());
    }
    let choose = move |value: String| {
        let wanted = SagaState::LOGGED.into_iter().find(|s| s.as_str() == value);
        filter.set(wanted);
        // The rows already here that fit show at once; the fetch brings the rest.
        sagas.update(|list| list.retain(|s| wanted.is_none_or(|w| s.status == w)));
        refresh.stale.set(true);
        fetch(sagas, filter, refresh.clone());
    };
    let none = Memo::new(move |_| sagas.with(Vec::is_empty));
    let nodes_shown = Memo::new(move |_| sagas.with(|all| tells_nodes_apart(all)));
    view! {
        <section class="panel sagas" aria-label="All sagas">
            <div class="sagas-head">
                <h2>"All sagas"</h2>
                <label class="saga-filter">
                    <span>"Show"</span>
                    <select data-testid="saga-filter" on:change=move |ev| choose(event_target_value(&ev))>
                        <option value="all">"all"</option>
                        {SagaState::LOGGED
                            .iter()
                            .map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> })
                            .collect_view()}
                    </select>
                </label>
            </div>
            {dynamic(move || if none.get() {
                let empty = match filter.get() {
                    None => "None yet.".to_string(),
                    Some(state) => format!("No {state} sagas."),
                };
                view! { <p class="muted">{empty}</p> }.into_any()
            } else {
                view! {
                    <table class="saga-list">
                        <thead><tr>
                            <th>"saga"</th><th>"customer"</th><th class="num">"total"</th>
                            <th>"outcome"</th><th>"took"</th><th>"started"</th>
                            {dynamic(move || if nodes_shown.get() {
                                view! { <th>"node"</th> }.into_any()
                            } else {
                                ().into_any()
                            })}
                        </tr></thead>
                        <tbody>
                            {list(move || {
                                let nodes = nodes_shown.get();
                                sagas.with(|all| all.iter().map(|s| row(route, now, s, nodes)).collect())
                            })}
                        </tbody>
                    </table>
                }
                .into_any()
            })}
        </section>
    }
}

/// Whether the rows' nodes are worth a column: more than one node among them, or a row that
/// more than one node drove. One node's sagas (every single-node deployment) say nothing of
/// nodes.
fn tells_nodes_apart(rows: &[SagaListItem]) -> bool {
    let mut first: Option<&str> = None;
    for node in rows.iter().flat_map(|s| &s.nodes) {
        match first {
            None => first = Some(node),
            Some(f) if f != node => return true,
            Some(_) => {}
        }
    }
    false
}

/// A saga's outcome in a few words: its state, and why it turned back if it did.
fn outcome(s: &SagaListItem) -> String {
    let why = s.failure.as_ref().map(|f| {
        let service = words_of(&f.step).map(|w| w.service).unwrap_or(&f.step);
        format!("{service}: {}", f.error)
    });
    match (s.status, why) {
        (SagaState::Pending, _) => "waiting…".into(),
        (SagaState::Running, _) => "running…".into(),
        (SagaState::Completed, _) => "completed".into(),
        (SagaState::Compensating, Some(why)) => format!("compensating — {why}"),
        (SagaState::Compensating, None) => "compensating…".into(),
        (SagaState::Compensated, Some(why)) => format!("compensated — {why}"),
        (SagaState::Compensated, None) => "compensated".into(),
        (SagaState::Stuck, _) => "stuck — needs a person".into(),
    }
}

fn row(route: RwSignal<Route>, now: RwSignal<f64>, s: &SagaListItem, nodes: bool) -> AnyView {
    let id = s.saga_id.clone();
    let href = format!("/sagas/{id}");
    let class = {
        let id = id.clone();
        text(move || {
            route.with(|r| match r {
                Route::Saga(shown) if *shown == id => "selected".into(),
                _ => String::new(),
            })
        })
    };
    let started = ms(&s.started_at);
    let took = match s.finished_at.as_deref() {
        Some(finished) => {
            let took = elapsed(ms(finished) - started);
            text(move || took.clone())
        }
        None => text(move || format!("{} so far", elapsed(now.get() - started))),
    };
    let outcome = outcome(s);
    // The row says it in a few words; the step that failed and its whole error are a hover
    // away (for a stuck saga, what turned it back).
    let reason = s
        .failure
        .as_ref()
        .map(|f| format!("{} failed: {}", f.step, f.error))
        .unwrap_or_else(|| outcome.clone());
    let words = outcome
        .strip_prefix(s.status.as_str())
        .unwrap_or(&outcome)
        .to_string();
    let total = match (s.total_cents, s.currency.as_deref()) {
        (Some(cents), Some(currency)) => money_in(cents, currency),
        _ => "—".into(),
    };
    view! {
        <tr data-testid=format!("saga-row-{}", s.saga_id) data-status=s.status.as_str() class=class>
            <td>
                <a href=href on:click=move |ev| {
                    ev.prevent_default();
                    navigate(route, Route::Saga(id.clone()));
                }><code title=s.saga_id.clone()>{short_id(&s.saga_id)}</code></a>
            </td>
            <td class="customer">{s.customer.clone().unwrap_or_else(|| "—".into())}</td>
            <td class="num">{total}</td>
            <td class="outcome" title=reason>
                <span class=format!("badge {}", s.status)>{s.status.as_str()}</span>
                <span class="why">{words}</span>
            </td>
            <td class="took">{took}</td>
            <td class="started">
                <time datetime=s.started_at.clone() title=s.started_at.clone()>
                    {local_time(&s.started_at)}
                </time>
                " "
                <span class="ago">{text(move || ago(now.get() - started))}</span>
            </td>
            {nodes.then(|| node_cell(&s.nodes))}
        </tr>
    }
    .into_any()
}

/// The node that drove a saga, or the nodes in the order they took it over.
fn node_cell(nodes: &[String]) -> AnyView {
    let (shown, title) = match nodes {
        [] => (
            "—".to_string(),
            "written before records named their node".to_string(),
        ),
        [one] => (one.clone(), format!("driven by {}", node(one))),
        [first, rest @ ..] => (
            nodes.join(" → "),
            format!(
                "taken over: driven by {}, then {}",
                node(first),
                rest.join(", then ")
            ),
        ),
    };
    view! { <td class="nodes" title=title>{shown}</td> }.into_any()
}
