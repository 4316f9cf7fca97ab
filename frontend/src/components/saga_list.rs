//! Every saga with its live state, from `/api/sagas` and then the `/api/events` stream; each
//! row opens its timeline.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::{Event, SagaEvent, SagaListItem, SagaState};

use crate::api;
use crate::format::{clock, short_id};
use crate::live;
use crate::reactive::{dynamic, list, text};
use crate::route::{Route, navigate};

/// How many sagas the list shows, newest first.
const ROWS: usize = 50;

/// How often the list takes in what the stream brought. A busy system changes it many times a
/// second; its rows are rebuilt in place, so it changes at most this often, all at once.
const REFRESH: Duration = Duration::from_millis(100);

/// `event` into the list: a saga's new state, or a saga that has just started, at the top.
///
/// A saga not in the list that changes state started before the 50 shown, so it stays out:
/// placing it at the top would show it as new. A saga already in the list that the stream
/// says has started (it started after the list's position was read and before the list
/// itself) keeps its row. And a finished saga's row is final.
fn apply(list: &mut Vec<SagaListItem>, event: SagaEvent, status: SagaState) {
    match list.iter_mut().find(|s| s.saga_id == event.saga_id) {
        Some(s) if s.finished_at.is_none() => {
            s.status = status;
            if status.is_finished() {
                s.finished_at = Some(event.at);
            }
        }
        Some(_) => {}
        None => {
            if let Event::SagaStarted { order_id, .. } = event.event {
                list.insert(
                    0,
                    SagaListItem {
                        saga_id: event.saga_id,
                        order_id,
                        status,
                        started_at: event.at,
                        finished_at: None,
                        customer: None,
                        total_cents: None,
                        currency: None,
                        failure: None,
                    },
                );
                list.truncate(ROWS);
            }
        }
    }
}

#[component]
pub fn SagaList(route: RwSignal<Route>) -> impl IntoView {
    let sagas = RwSignal::new(Vec::<SagaListItem>::new());
    let arrived = Rc::new(RefCell::new(Vec::<(SagaEvent, SagaState)>::new()));
    // The stream starts where the fetched list is current, once it is in place: a saga that
    // starts, or finishes, between the two is neither missed nor shown as new. Without the
    // list (the fetch failed) it follows from now on.
    spawn_local({
        let arrived = arrived.clone();
        async move {
            let after = match api::sagas(ROWS).await {
                Ok((list, position)) => {
                    sagas.set(list);
                    position
                }
                Err(e) => {
                    leptos::logging::error!("cannot list the sagas: {}", e.message);
                    None
                }
            };
            live::follow_all(after, move |event| {
                if let Some(status) = event.event.kind().saga_state_after() {
                    arrived.borrow_mut().push((event, status));
                }
            });
        }
    });
    if let Ok(handle) = set_interval_with_handle(
        move || {
            let batch = std::mem::take(&mut *arrived.borrow_mut());
            if !batch.is_empty() {
                sagas.update(|list| {
                    for (event, status) in batch {
                        apply(list, event, status);
                    }
                });
            }
        },
        REFRESH,
    ) {
        on_cleanup(move || handle.clear());
    }
    let none = Memo::new(move |_| sagas.with(Vec::is_empty));
    view! {
        <section class="panel sagas" aria-label="All sagas">
            <h2>"All sagas"</h2>
            {dynamic(move || if none.get() {
                view! { <p class="muted">"None yet."</p> }.into_any()
            } else {
                view! {
                    <table class="saga-list">
                        <thead><tr><th>"saga"</th><th>"state"</th><th>"started"</th><th>"finished"</th></tr></thead>
                        <tbody>
                            {list(move || sagas.with(|all| all.iter().map(|s| row(route, s)).collect()))}
                        </tbody>
                    </table>
                }
                .into_any()
            })}
        </section>
    }
}

fn row(route: RwSignal<Route>, s: &SagaListItem) -> AnyView {
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
    view! {
        <tr data-testid=format!("saga-row-{}", s.saga_id) data-status=s.status.as_str() class=class>
            <td>
                <a href=href on:click=move |ev| {
                    ev.prevent_default();
                    navigate(route, Route::Saga(id.clone()));
                }><code title=s.saga_id.clone()>{short_id(&s.saga_id)}</code></a>
            </td>
            <td><span class=format!("badge {}", s.status)>{s.status.as_str()}</span></td>
            <td>{clock(&s.started_at)}</td>
            <td>{s.finished_at.as_deref().map(clock).unwrap_or_default()}</td>
        </tr>
    }
    .into_any()
}
