//! The page: for now a header and the number of sagas on record, fetched from the backend,
//! which proves the whole path (wasm build, static serving, JSON API, shared types).

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::SagaListItem;

async fn fetch_sagas() -> Result<Vec<SagaListItem>, String> {
    let response = gloo_net::http::Request::get("/api/sagas")
        .send()
        .await
        .map_err(|e| format!("the server did not answer: {e}"))?;
    if !response.ok() {
        return Err(format!("the server answered {}", response.status()));
    }
    response
        .json()
        .await
        .map_err(|e| format!("unexpected answer: {e}"))
}

#[component]
pub fn App() -> impl IntoView {
    let (sagas, set_sagas) = signal(None::<Result<Vec<SagaListItem>, String>>);
    spawn_local(async move {
        set_sagas.set(Some(fetch_sagas().await));
    });
    view! {
        <main>
            <h1>"Saga shop"</h1>
            {move || match sagas.get() {
                None => view! { <p>"Loading…"</p> }.into_any(),
                Some(Ok(list)) => {
                    view! { <p data-testid="saga-count">{format!("{} sagas on record", list.len())}</p> }
                        .into_any()
                }
                Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
            }}
        </main>
    }
}
