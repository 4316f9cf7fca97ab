//! What each service holds for the order (order, invoice, payment, shipment, notification),
//! fetched when the saga has finished.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::OrderView;

use crate::api;
use crate::format::money;
use crate::reactive::dynamic;

/// What the services held at a past moment of the saga, as its events tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// Which moment ("At event 7 of 18").
    pub caption: String,
    /// (service, what it held).
    pub lines: Vec<(&'static str, String)>,
}

#[component]
pub fn ServiceState(
    order_id: Memo<Option<String>>,
    finished: Signal<bool>,
    /// Set while the page shows a past moment: the panel follows it.
    replay: Signal<Option<Replayed>>,
) -> impl IntoView {
    let view_of = RwSignal::new(None::<Result<OrderView, String>>);
    Effect::new(move |_| {
        let (Some(id), true) = (order_id.get(), finished.get()) else {
            view_of.set(None);
            return;
        };
        spawn_local(async move {
            view_of.set(Some(api::order(&id).await.map_err(|e| e.message)));
        });
    });
    view! {
        <h3>"What the services hold"</h3>
        <div data-testid="service-state">
            {dynamic(move || if let Some(r) = replay.get() {
                view! {
                    <p class="muted">{r.caption}", as the saga's events tell it:"</p>
                    <dl class="services replayed">
                        {r.lines.into_iter().map(|(label, value)| view! {
                            <div class="svc"><dt>{label}</dt><dd>{value}</dd></div>
                        }).collect_view()}
                    </dl>
                }.into_any()
            } else {
                match view_of.get() {
                None => note("muted", "Shown when the saga has finished.".into()),
                Some(Err(e)) => note("error", e),
                Some(Ok(o)) => view! {
                    <dl class="services">
                        {services(o).into_iter().map(|(label, value)| view! {
                            <div class="svc">
                                <dt>{label}</dt>
                                <dd>{value.unwrap_or_else(|| "nothing".into())}</dd>
                            </div>
                        }).collect_view()}
                    </dl>
                }.into_any(),
                }
            })}
        </div>
    }
}

fn note(class: &'static str, message: String) -> AnyView {
    view! { <p class=class>{message}</p> }.into_any()
}

/// What each service holds, one line each, `None` where it holds nothing.
fn services(o: OrderView) -> [(&'static str, Option<String>); 5] {
    [
        (
            "orders",
            // An order refused at its first step reserved nothing: it was never placed, so
            // there was nothing to cancel.
            Some(
                if o.status == "cancelled" && o.total_cents == 0 && o.invoice.is_none() {
                    "refused: nothing was reserved".to_string()
                } else {
                    format!("{} · {}", o.status, money(o.total_cents))
                },
            ),
        ),
        (
            "billing",
            o.invoice
                .map(|i| format!("invoice {} · {}", i.status, money(i.total_cents))),
        ),
        (
            "payments",
            o.payment.map(|p| {
                let card = p
                    .card_last4
                    .map(|l| format!(" · card …{l}"))
                    .unwrap_or_default();
                if p.refunded_cents > 0 {
                    format!(
                        "{} · {} of {} given back{card}",
                        p.status,
                        money(p.refunded_cents),
                        money(p.amount_cents)
                    )
                } else {
                    format!("{} · {}{card}", p.status, money(p.amount_cents))
                }
            }),
        ),
        (
            "shipping",
            o.shipment.as_ref().map(|s| {
                format!(
                    "{} · {} · expected {}",
                    s.status, s.tracking_number, s.estimated_delivery
                )
            }),
        ),
        (
            "notification",
            o.notification.map(|n| {
                // The message was sent when the shipment was scheduled; once the shipment is
                // cancelled it no longer holds, and the panel must not say otherwise.
                let cancelled = o.shipment.as_ref().is_some_and(|s| s.status == "cancelled");
                if cancelled {
                    format!(
                        "to {}: withdrawn, the shipment was cancelled (it had said: {})",
                        n.email, n.message
                    )
                } else {
                    format!("to {}: {}", n.email, n.message)
                }
            }),
        ),
    ]
}
