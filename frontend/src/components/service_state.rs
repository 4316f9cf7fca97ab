//! What each service holds for the order (order, invoice, payment, shipment, notification),
//! fetched when the saga has finished.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::OrderView;

use crate::api;
use crate::format::money;

#[component]
pub fn ServiceState(order_id: Memo<Option<String>>, finished: Signal<bool>) -> impl IntoView {
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
    let row = |label: &'static str, value: Option<String>| {
        view! {
            <div class="svc">
                <dt>{label}</dt>
                <dd>{value.unwrap_or_else(|| "nothing".into())}</dd>
            </div>
        }
    };
    view! {
        <h3>"What the services hold"</h3>
        <div data-testid="service-state">
            {move || match view_of.get() {
                None => view! { <p class="muted">"Shown when the saga has finished."</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error">{e}</p> }.into_any(),
                Some(Ok(o)) => view! {
                    <dl class="services">
                        {row("orders", Some(format!("{} · {}", o.status, money(o.total_cents))))}
                        {row("billing", o.invoice.map(|i| format!("invoice {} · {}", i.status, money(i.total_cents))))}
                        {row("payments", o.payment.map(|p| format!(
                            "{} · {} · refunded {}{}", p.status, money(p.amount_cents), money(p.refunded_cents),
                            p.card_last4.map(|l| format!(" · card …{l}")).unwrap_or_default()
                        )))}
                        {row("shipping", o.shipment.map(|s| format!("{} · {} · expected {}", s.status, s.tracking_number, s.estimated_delivery)))}
                        {row("notification", o.notification.map(|n| format!("to {}: {}", n.email, n.message)))}
                    </dl>
                }.into_any(),
            }}
        </div>
    }
}
