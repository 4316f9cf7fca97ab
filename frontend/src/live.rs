//! Server-sent events into signals. The browser's `EventSource` reconnects by itself after a
//! dropped connection and sends `Last-Event-ID`, so the server resumes right after the last
//! event received; events are also de-duplicated here by `seq`, so nothing shows twice.
//! While a stream is reconnecting the page says so ([`reconnecting`]).

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use gloo_net::eventsource::State;
use gloo_net::eventsource::futures::EventSource;
use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::{EventKind, SagaEvent};

use crate::api;

thread_local! {
    /// How many of the page's streams lost their connection and have not got it back.
    /// Reference-counted, not owned by whichever component or effect first asked for it:
    /// an owned signal would be disposed with that owner.
    static BROKEN: OnceCell<ArcRwSignal<u32>> = const { OnceCell::new() };
}

fn broken() -> ArcRwSignal<u32> {
    BROKEN.with(|b| b.get_or_init(|| ArcRwSignal::new(0)).clone())
}

/// Whether live updates are paused: a stream lost its connection and the browser is trying
/// to get it back.
pub fn reconnecting() -> bool {
    broken().get() > 0
}

/// One stream's part in [`reconnecting`]: counted once while it is down.
struct Health(Cell<bool>);

impl Health {
    fn set_down(&self, down: bool) {
        if self.0.replace(down) != down {
            broken().update(|n| *n = if down { *n + 1 } else { n.saturating_sub(1) });
        }
    }
}

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
    // A reconnected stream may stay quiet: its state says when it is open again.
    let source = Rc::new(source);
    let health = Rc::new(Health(Cell::new(false)));
    let watch = {
        // Weak: the timer must not keep the connection open after the stream has ended.
        let (source, health) = (Rc::downgrade(&source), health.clone());
        // The browser reconnects without telling the page (no error reaches the stream while
        // it is connecting), so the state is read: connecting again after having been open is
        // a lost connection, and so is a first connection still not made after a second (the
        // server went away before it answered).
        let was_open = Cell::new(false);
        let connecting = Cell::new(0u32);
        set_interval_with_handle(
            move || match source.upgrade().map(|s| s.state()) {
                Some(State::Open) => {
                    was_open.set(true);
                    connecting.set(0);
                    health.set_down(false);
                }
                Some(State::Connecting) => {
                    connecting.set(connecting.get() + 1);
                    if was_open.get() || connecting.get() >= 3 {
                        health.set_down(true);
                    }
                }
                _ => {}
            },
            Duration::from_millis(500),
        )
        .ok()
    };
    spawn_local(async move {
        while let Some(item) = merged.next().await {
            // An error reaches the stream only once the browser gave up on it: the server
            // ended it for good (a finished saga's stream answers `204`).
            let Ok((_, message)) = item else {
                if source.state() == State::Closed {
                    break;
                }
                continue;
            };
            health.set_down(false);
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
        health.set_down(false);
        if let Some(watch) = watch {
            watch.clear();
        }
        // Dropping the last handle closes the connection.
        drop(source);
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
