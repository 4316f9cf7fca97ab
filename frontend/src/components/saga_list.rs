//! Every saga with its live state, from `/api/sagas` and then the `/api/events` stream; each
//! row opens its timeline.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::SagaListItem;

use crate::api;
use crate::format::clock;
use crate::live;
use crate::reactive::{dynamic, list, text};
use crate::route::{Route, navigate};

fn status_after(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "saga_started" => "running",
        "compensation_started" => "compensating",
        "saga_completed" => "completed",
        "saga_compensated" => "compensated",
        "saga_stuck" => "stuck",
        _ => return None,
    })
}

#[component]
pub fn SagaList(route: RwSignal<Route>) -> impl IntoView {
    let sagas = RwSignal::new(Vec::<SagaListItem>::new());
    spawn_local(async move {
        if let Ok(list) = api::sagas().await {
            // Events may have arrived first: keep whatever they already added.
            sagas.update(|s| {
                for item in list {
                    if !s.iter().any(|x| x.saga_id == item.saga_id) {
                        s.push(item);
                    }
                }
            });
        }
    });
    live::follow_all(move |event| {
        let Some(status) = status_after(&event.kind) else {
            return;
        };
        sagas.update(
            |list| match list.iter_mut().find(|s| s.saga_id == event.saga_id) {
                Some(s) => {
                    s.status = status.into();
                    if live::is_terminal(&event.kind) {
                        s.finished_at = Some(event.at.clone());
                    }
                }
                None => list.insert(
                    0,
                    SagaListItem {
                        saga_id: event.saga_id.clone(),
                        order_id: event
                            .detail
                            .get("order_id")
                            .and_then(|v| v.as_str())
                            .map(str::to_string),
                        status: status.into(),
                        started_at: event.at.clone(),
                        finished_at: None,
                    },
                ),
            },
        );
    });
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
        <tr data-testid=format!("saga-row-{}", s.saga_id) data-status=s.status.clone() class=class>
            <td>
                <a href=href on:click=move |ev| {
                    ev.prevent_default();
                    navigate(route, Route::Saga(id.clone()));
                }><code>{s.saga_id.chars().take(8).collect::<String>()}</code></a>
            </td>
            <td><span class=format!("badge {}", s.status)>{s.status.clone()}</span></td>
            <td>{clock(&s.started_at)}</td>
            <td>{s.finished_at.as_deref().map(clock).unwrap_or_default()}</td>
        </tr>
    }
    .into_any()
}
