//! The checkout form, with the fault panel and the Buy button. Fields are checked as you type
//! with the server's own rules (`shared::rules`); if the server still refuses, its sentence is
//! shown next to the field it names. A Buy that cannot go says why beside the button (how many
//! fields need fixing, an empty cart) and puts the focus in the first field to fix. Every
//! message is derived from what it is about, so it goes as soon as its cause does.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::{Address, Customer, Delivery, Fault, OrderItem, OrderRequest, PaymentInput, rules};

use crate::api::{self, ApiFailure};
use crate::app::ShopState;
use crate::components::alert_while;
use crate::components::fault_panel::{self, FaultPanel};
use crate::format::now_ms;
use crate::reactive::{dynamic, text};
use crate::route::{Route, navigate};

#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutForm {
    pub name: String,
    pub email: String,
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    pub delivery: String,
    pub method: String,
    pub card_number: String,
    pub expiry: String,
    pub cvc: String,
    pub wallet_id: String,
}

impl Default for CheckoutForm {
    fn default() -> Self {
        CheckoutForm {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            line1: "12 Analytical Row".into(),
            city: "London".into(),
            postal_code: "N1 9GU".into(),
            country: "GB".into(),
            delivery: "standard".into(),
            method: "card".into(),
            card_number: "4242 4242 4242 4242".into(),
            expiry: "12/30".into(),
            cvc: "123".into(),
            wallet_id: String::new(),
        }
    }
}

impl CheckoutForm {
    fn get(&self, field: &str) -> String {
        match field {
            "name" => &self.name,
            "email" => &self.email,
            "line1" => &self.line1,
            "city" => &self.city,
            "postal_code" => &self.postal_code,
            "country" => &self.country,
            "card_number" => &self.card_number,
            "expiry" => &self.expiry,
            "cvc" => &self.cvc,
            "wallet_id" => &self.wallet_id,
            _ => "",
        }
        .to_string()
    }

    fn set(&mut self, field: &str, value: String) {
        let slot = match field {
            "name" => &mut self.name,
            "email" => &mut self.email,
            "line1" => &mut self.line1,
            "city" => &mut self.city,
            "postal_code" => &mut self.postal_code,
            "country" => &mut self.country,
            "card_number" => &mut self.card_number,
            "expiry" => &mut self.expiry,
            "cvc" => &mut self.cvc,
            "wallet_id" => &mut self.wallet_id,
            _ => return,
        };
        *slot = value;
    }

    /// The rule the server applies to this field, with the same sentence.
    fn check(&self, field: &str) -> Result<(), String> {
        let v = self.get(field);
        match field {
            "name" => rules::name(&v),
            "email" => rules::email(&v),
            "line1" => rules::line1(&v),
            "city" => rules::city(&v),
            "postal_code" => rules::postal_code(&v),
            "country" => rules::country(&v),
            "card_number" => rules::card_number(&v),
            "expiry" => rules::expiry(&v, rules::year_month(now_ms() as i64)),
            "cvc" => rules::cvc(&v),
            "wallet_id" => rules::wallet_id(&v),
            _ => Ok(()),
        }
    }

    /// The fields shown for the payment method picked, in the form's order (the tables below).
    fn fields(&self) -> Vec<FieldSpec> {
        let payment: &[&[FieldSpec]] = if self.method == "card" {
            &[&CARD, &CARD_CHECKS]
        } else {
            &[&WALLET]
        };
        [&CUSTOMER[..], &ADDRESS[..]]
            .iter()
            .chain(payment)
            .flat_map(|specs| specs.iter().copied())
            .collect()
    }

    /// The fields shown that break their rule, in the form's order.
    fn invalid(&self) -> Vec<FieldSpec> {
        self.fields()
            .into_iter()
            .filter(|&(field, _, _)| self.check(field).is_err())
            .collect()
    }

    fn shows(&self, field: &str) -> bool {
        self.fields().iter().any(|&(name, _, _)| name == field)
    }
}

/// What stops a Buy, said beside the button: "2 fields need fixing: Email, Card number."
/// Empty when nothing does.
fn problems(invalid: &[&str], empty_cart: bool) -> String {
    let fields = match invalid {
        [] => String::new(),
        [one] => format!("1 field needs fixing: {one}."),
        many => format!("{} fields need fixing: {}.", many.len(), many.join(", ")),
    };
    let cart = if empty_cart {
        "The cart is empty: add a product first."
    } else {
        ""
    };
    match (fields.is_empty(), cart.is_empty()) {
        (false, false) => format!("{fields} {cart}"),
        (false, true) => fields,
        _ => cart.to_string(),
    }
}

/// Put the focus in a field of the form (which scrolls it into view).
fn focus_field(field: &str) {
    use leptos::wasm_bindgen::JsCast;
    if let Some(input) = document()
        .get_element_by_id(&format!("field-{field}"))
        .and_then(|el| el.dyn_into::<web_sys::HtmlElement>().ok())
    {
        let _ = input.focus();
    }
}

/// The server names fields by their JSON path; the form by their input.
fn form_field(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn order_request(state: ShopState) -> OrderRequest {
    let f = state.form.get_untracked();
    OrderRequest {
        customer: Customer {
            name: f.name.trim().into(),
            email: f.email.trim().into(),
        },
        address: Address {
            line1: f.line1.trim().into(),
            city: f.city.trim().into(),
            postal_code: f.postal_code.trim().into(),
            // Already capitals (`rules::country` passed); ASCII case mapping keeps Unicode's
            // case tables (7 KiB gzipped) out of the page.
            country: f.country.trim().to_ascii_uppercase(),
        },
        delivery: if f.delivery == "express" {
            Delivery::Express
        } else {
            Delivery::Standard
        },
        items: state
            .cart
            .get_untracked()
            .into_iter()
            .map(|(sku, qty)| OrderItem { sku, qty })
            .collect(),
        payment: if f.method == "card" {
            PaymentInput::Card {
                card_number: f.card_number,
                expiry: f.expiry.trim().into(),
                cvc: f.cvc.trim().into(),
            }
        } else {
            PaymentInput::Wallet {
                wallet_id: f.wallet_id.trim().into(),
            }
        },
        faults: faults(state),
    }
}

/// The faults picked, by step. Inserted one by one rather than collected: collecting into a
/// map sorts first, and that brings a sort into the page for a handful of entries.
fn faults(state: ShopState) -> BTreeMap<String, Fault> {
    let mut faults = BTreeMap::new();
    state.faults.with_untracked(|picked| {
        for (step, choice) in picked {
            if let Some(fault) = choice.to_fault() {
                faults.insert(step.clone(), fault);
            }
        }
    });
    faults
}

/// A form field: its name (as the server names it), its label and a hint (may be empty).
type FieldSpec = (&'static str, &'static str, &'static str);

const CUSTOMER: [FieldSpec; 2] = [("name", "Name", ""), ("email", "Email", "")];
const ADDRESS: [FieldSpec; 4] = [
    ("line1", "Street", ""),
    ("city", "City", ""),
    ("postal_code", "Postal code", ""),
    (
        "country",
        "Country",
        "Two letters. We do not ship to AQ: try it to see shipping refuse.",
    ),
];
const CARD: [FieldSpec; 1] = [(
    "card_number",
    "Card number",
    "Test cards: 4242 4242 4242 4242 pays; 4000 0000 0000 0002 is declined; 4000 0000 0000 9995 has insufficient funds.",
)];
const CARD_CHECKS: [FieldSpec; 2] = [("expiry", "Expiry (MM/YY)", ""), ("cvc", "CVC", "")];
const WALLET: [FieldSpec; 1] = [(
    "wallet_id",
    "Wallet id",
    "Wallet empty-wallet has insufficient funds.",
)];

/// What every input of the form reads and writes.
#[derive(Clone, Copy)]
struct Inputs {
    state: ShopState,
    show_errors: RwSignal<bool>,
    server_error: RwSignal<Option<ApiFailure>>,
}

impl Inputs {
    /// Fields from a table: one place builds them all, so the page carries one copy.
    fn render(self, specs: &'static [FieldSpec]) -> impl IntoView {
        specs.iter().map(|&spec| self.field(spec)).collect_view()
    }

    fn field(self, (field, label, hint): FieldSpec) -> impl IntoView {
        let Inputs {
            state,
            show_errors,
            server_error,
        } = self;
        let error = move || {
            let local = state
                .form
                .with(|f| f.check(field).err())
                .filter(|_| show_errors.get());
            let server = server_error
                .get()
                .filter(|e| e.field.as_deref().map(form_field) == Some(field))
                .map(|e| e.message);
            local.or(server)
        };
        let id = format!("field-{field}");
        let error_id = format!("{id}-error");
        view! {
            <div class=text(move || if error().is_some() { "field invalid".into() } else { "field".into() })>
                <label for=id.clone()>{label}</label>
                <input
                    id=id.clone()
                    data-testid=id.clone()
                    name=field
                    aria-describedby=error_id.clone()
                    aria-invalid=text(move || if error().is_some() { "true".into() } else { "false".into() })
                    prop:value=text(move || state.form.with(|f| f.get(field)))
                    on:input=move |ev| {
                        state.form.update(|f| f.set(field, event_target_value(&ev)));
                        server_error.update(|e| {
                            if e.as_ref().and_then(|e| e.field.as_deref()).map(form_field) == Some(field) {
                                *e = None;
                            }
                        });
                    }
                    on:blur=move |_| show_errors.set(true)
                />
                {(!hint.is_empty()).then(|| view! { <small class="hint">{hint}</small> })}
                // Read with the field (`aria-describedby`); the count beside Buy is the alert.
                <small id=error_id class="field-error">{text(move || error().unwrap_or_default())}</small>
            </div>
        }
    }
}

#[component]
pub fn Checkout(state: ShopState) -> impl IntoView {
    let show_errors = RwSignal::new(false);
    let server_error = RwSignal::new(None::<ApiFailure>);
    let busy = RwSignal::new(false);
    // Set by a Buy that could not go, until one goes: meanwhile what stops it is read afresh
    // from the form and the cart, so a problem fixed is no longer listed.
    let attempted = RwSignal::new(false);
    // The order the last Buy placed and its saga: said by the button while that saga is shown.
    let placed = RwSignal::new(None::<(String, String)>);
    // Whether the armed faults stay for the purchase after the next one.
    let pinned = RwSignal::new(false);
    let inputs = Inputs {
        state,
        show_errors,
        server_error,
    };
    let by_card = Memo::new(move |_| state.form.with(|f| f.method == "card"));
    // A refusal not about a field shown in the form: it goes above the Buy button.
    let order_error = move || {
        server_error.get().and_then(|e| {
            let shown = e
                .field
                .as_deref()
                .is_some_and(|path| state.form.with(|f| f.shows(form_field(path))));
            (!shown).then_some(e.message)
        })
    };
    // That refusal was about the purchase as it was: another cart or other faults make
    // another purchase.
    Effect::new(move |first_run: Option<()>| {
        state.cart.track();
        state.faults.track();
        if first_run.is_some() && untrack(order_error).is_some() {
            server_error.set(None);
        }
    });
    let blocking = move || {
        if !attempted.get() {
            return None;
        }
        let invalid = state.form.with(|f| f.invalid());
        let labels: Vec<&str> = invalid.iter().map(|&(_, label, _)| label).collect();
        Some(problems(&labels, state.cart.with(Vec::is_empty))).filter(|m| !m.is_empty())
    };
    let armed = Memo::new(move |_| fault_panel::armed(state));
    let any_armed = Memo::new(move |_| armed.with(|a| !a.is_empty()));
    let buy = move |_| {
        placed.set(None);
        server_error.set(None);
        show_errors.set(true);
        let first_invalid = state
            .form
            .with_untracked(|f| f.invalid().first().map(|&(field, _, _)| field));
        if first_invalid.is_some() || state.cart.with_untracked(Vec::is_empty) {
            attempted.set(true);
            if let Some(field) = first_invalid {
                focus_field(field);
            }
            return;
        }
        attempted.set(false);
        let request = order_request(state);
        busy.set(true);
        spawn_local(async move {
            match api::place_order(&request).await {
                Ok(accepted) => {
                    state.cart.set(Vec::new());
                    if !pinned.get_untracked() {
                        state.faults.set(BTreeMap::new());
                    }
                    navigate(state.route, Route::Saga(accepted.saga_id.clone()));
                    placed.set(Some((accepted.order_id, accepted.saga_id)));
                    // Once the page has drawn the new saga and emptied the cart above it.
                    set_timeout(bring_saga_into_view, std::time::Duration::ZERO);
                }
                Err(e) => {
                    // A refusal naming a field of the form is shown there: go to it.
                    let field = e.field.as_deref().map(form_field).map(str::to_owned);
                    server_error.set(Some(e));
                    if let Some(field) =
                        field.filter(|f| state.form.with_untracked(|form| form.shows(f)))
                    {
                        focus_field(&field);
                    }
                }
            }
            busy.set(false);
        });
    };
    let placed_text = move || {
        placed
            .get()
            .filter(|(_, saga)| state.route.with(|r| *r == Route::Saga(saga.clone())))
            .map(|(order, _)| format!("Order {order} placed: its saga runs in the timeline."))
            .unwrap_or_default()
    };
    let set = move |field: &'static str| {
        move |ev| {
            state.form.update(|f| {
                let v = event_target_value(&ev);
                match field {
                    "delivery" => f.delivery = v,
                    _ => f.method = v,
                }
            })
        }
    };
    view! {
        <form class="panel checkout" on:submit=move |ev| ev.prevent_default() novalidate>
            <h2>"Checkout"</h2>
            <fieldset>
                <legend>"Customer"</legend>
                {inputs.render(&CUSTOMER)}
            </fieldset>
            <fieldset>
                <legend>"Delivery address"</legend>
                {inputs.render(&ADDRESS)}
                <label class="inline">
                    "Delivery "
                    <select data-testid="field-delivery" on:change=set("delivery")>
                        <option value="standard">"Standard (5 days, €4.99)"</option>
                        <option value="express">"Express (2 days, €14.99)"</option>
                    </select>
                </label>
            </fieldset>
            <fieldset>
                <legend>"Payment"</legend>
                <label class="inline">
                    "Pay by "
                    <select data-testid="field-method" on:change=set("method")>
                        <option value="card">"card"</option>
                        <option value="wallet">"wallet"</option>
                    </select>
                </label>
                {dynamic(move || if by_card.get() {
                    view! {
                        {inputs.render(&CARD)}
                        <div class="row">{inputs.render(&CARD_CHECKS)}</div>
                    }.into_any()
                } else {
                    inputs.render(&WALLET).into_any()
                })}
            </fieldset>
            <FaultPanel state=state />
            {dynamic(move || if any_armed.get() {
                view! {
                    <div class="armed">
                        <p data-testid="faults-armed">{text(move || armed.get())}</p>
                        <label>
                            <input
                                type="checkbox"
                                data-testid="faults-pin"
                                checked=pinned.get_untracked()
                                on:change=move |ev| pinned.set(event_target_checked(&ev))
                            />
                            " Keep these faults for the next purchase"
                        </label>
                    </div>
                }.into_any()
            } else {
                ().into_any()
            })}
            {alert_while("form-problems", blocking)}
            {alert_while("order-error", order_error)}
            // Above the button, so it is in view wherever the button is.
            <p class="placed" role="status" data-testid="order-placed">{text(placed_text)}</p>
            <button type="submit" class="buy" data-testid="buy" on:click=buy disabled=busy>
                {text(move || if busy.get() { "Placing the order…".into() } else { "Buy".into() })}
            </button>
        </form>
    }
}

/// Where the page is one column (a phone), the timeline is far below the Buy button: scroll it
/// into view. Side by side, the timeline's column stays in view by itself (`position: sticky`).
fn bring_saga_into_view() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let one_column = window
        .match_media("(max-width: 900px)")
        .ok()
        .flatten()
        .is_some_and(|m| m.matches());
    if !one_column {
        return;
    }
    if let Some(watch) = window
        .document()
        .and_then(|d| d.query_selector("section.watch").ok().flatten())
    {
        watch.scroll_into_view();
    }
}
