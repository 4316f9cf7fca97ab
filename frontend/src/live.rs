//! Server-sent events into signals. The browser's `EventSource` reconnects by itself after a
//! dropped connection and sends `Last-Event-ID`, so the server resumes right after the last
//! event received; events are also de-duplicated here by `seq`, so nothing shows twice.

use futures_util::StreamExt;
use gloo_net::eventsource::futures::EventSource;
use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::{EventKind, SagaEvent};

use crate::api;

/// Open `url` and call `on_event` for each event, until it returns `false`.
fn listen(url: String, mut on_event: impl FnMut(SagaEvent) -> bool + 'static) {
    let mut source = match EventSource::new(&url) {
        Ok(s) => s,
        Err(e) => {
            leptos::logging::error!("cannot open {url}: {e}");
            return;
        }
    };
    let mut streams = Vec::new();
    // SSE delivers each event type under its own name: the page listens to every kind there
    // is, so a kind added to `shared` is never silently dropped here.
    for kind in EventKind::ALL {
        match source.subscribe(kind.as_str()) {
            Ok(s) => streams.push(s),
            Err(e) => leptos::logging::error!("cannot subscribe to {kind}: {e}"),
        }
    }
    let mut merged = futures_util::stream::select_all(streams);
    spawn_local(async move {
        while let Some(item) = merged.next().await {
            // Errors are dropped connections: EventSource is already reconnecting.
            let Ok((_, message)) = item else { continue };
            let Some(data) = message.data().as_string() else {
                continue;
            };
            match api::parse_json::<SagaEvent>(&data) {
                Ok(event) => {
                    if !on_event(event) {
                        break;
                    }
                }
                Err(e) => leptos::logging::error!("unreadable event: {e}"),
            }
        }
        source.close();
    });
}

/// Follow one saga: its history, then live, into `events`, until its final event or until
/// `generation` moves on (the page switched to another saga).
pub fn follow_saga(
    saga_id: String,
    events: RwSignal<Vec<SagaEvent>>,
    generation: RwSignal<u64>,
    on_end: impl Fn() + 'static,
) {
    let mine = generation.get_untracked();
    listen(format!("/api/sagas/{saga_id}/events"), move |event| {
        if generation.get_untracked() != mine {
            return false;
        }
        let kind = event.event.kind();
        // A stuck saga may yet be resumed: its stream is left to the server, which ends it
        // (and an EventSource resumed past its end gets a 204 and stops) unless it goes on.
        let terminal = kind.is_terminal() && kind != EventKind::SagaStuck;
        let ended = kind.is_terminal();
        events.update(|list| {
            let next = list.last().map(|e| e.seq + 1).unwrap_or(1);
            if event.seq == next {
                list.push(event);
            }
        });
        if ended {
            on_end();
        }
        !terminal
    });
}

/// Follow every saga's events (for the saga list): those after log position `after`, or from
/// now on.
pub fn follow_all(after: Option<i64>, on_event: impl Fn(SagaEvent) + 'static) {
    let url = match after {
        Some(position) => format!("/api/events?after={position}"),
        None => "/api/events".into(),
    };
    listen(url, move |event| {
        on_event(event);
        true
    });
}
