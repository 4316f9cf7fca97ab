//! The chaos panel: pick a fault (DESIGN.md §4) for any step before pressing Buy; and the
//! faults armed, in words, for the line beside the Buy button.

use leptos::prelude::*;
use shared::{Fault, STEPS};

use crate::app::ShopState;
use crate::reactive::{dynamic, text};

/// A fault as picked in the panel: its kind (`none` for no fault) and its number.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultChoice {
    pub kind: String,
    pub number: u64,
}

impl FaultChoice {
    pub fn to_fault(&self) -> Option<Fault> {
        let times = self.number.clamp(1, 10) as u32;
        Some(match self.kind.as_str() {
            "fail" => Fault::Fail,
            "transient" => Fault::Transient { times },
            "delay" => Fault::Delay {
                ms: self.number.min(60_000),
            },
            "timeout" => Fault::Timeout,
            "compensation_transient" => Fault::CompensationTransient { times },
            "compensation_fail" => Fault::CompensationFail,
            "crash" => Fault::Crash,
            _ => return None,
        })
    }

    fn default_number(kind: &str) -> u64 {
        if kind == "delay" { 2000 } else { 2 }
    }
}

fn describe(kind: &str) -> &'static str {
    match kind {
        "fail" => "the action refuses: the saga compensates",
        "transient" => "fails N times, then succeeds (watch the retries)",
        "delay" => "takes N ms",
        "timeout" => "never answers: times out, outcome unknown",
        "compensation_transient" => "its compensation fails N times first",
        "compensation_fail" => "its compensation never succeeds: stuck",
        "crash" => "the server dies right after the action (needs --allow-crash-faults)",
        _ => "",
    }
}

/// How the armed-faults line speaks of a step: as the subject of its action, and its
/// compensation under way. In the order of [`STEPS`].
const SUBJECTS: [(&str, &str, &str); 4] = [
    ("place_order", "the order", "cancelling the order"),
    ("create_invoice", "the invoice", "voiding the invoice"),
    ("process_payment", "payment", "refunding the payment"),
    ("ship_order", "shipping", "cancelling the shipment"),
];

/// One armed fault in words: "payment declines", "shipping times out".
fn armed_fault(step: &str, choice: &FaultChoice) -> String {
    let (subject, undoing) = SUBJECTS
        .iter()
        .find(|(s, _, _)| *s == step)
        .map(|&(_, subject, undoing)| (subject, undoing))
        .unwrap_or((step, step));
    match choice.to_fault() {
        Some(Fault::Fail) => match step {
            "process_payment" => "payment declines".into(),
            "ship_order" => "shipping refuses".into(),
            _ => format!("{subject} is refused"),
        },
        Some(Fault::Transient { times }) => {
            format!(
                "{subject} fails {times} {}, then succeeds",
                times_word(times)
            )
        }
        Some(Fault::Delay { ms }) => format!("{subject} takes {ms} ms"),
        Some(Fault::Timeout) => format!("{subject} times out"),
        Some(Fault::CompensationTransient { times }) => {
            format!("{undoing} fails {times} {} first", times_word(times))
        }
        Some(Fault::CompensationFail) => format!("{undoing} never succeeds"),
        Some(Fault::Crash) => format!("the server crashes after {subject}"),
        None => String::new(),
    }
}

fn times_word(n: u32) -> &'static str {
    if n == 1 { "time" } else { "times" }
}

/// The faults the next Buy sends, in the order of the steps: "Faults armed: payment
/// declines; shipping times out". Empty when none is armed.
pub fn armed(state: ShopState) -> String {
    let parts: Vec<String> = state.faults.with(|picked| {
        STEPS
            .iter()
            .filter_map(|&step| picked.get(step).map(|c| armed_fault(step, c)))
            .filter(|p| !p.is_empty())
            .collect()
    });
    if parts.is_empty() {
        String::new()
    } else {
        format!("Faults armed: {}", parts.join("; "))
    }
}

#[component]
pub fn FaultPanel(state: ShopState) -> impl IntoView {
    view! {
        <fieldset class="faults">
            <legend>"Fault injection"</legend>
            <p class="muted">"Pick what goes wrong, then press Buy."</p>
            {STEPS.iter().map(|&step| fault_row(state, step)).collect_view()}
        </fieldset>
    }
}

/// One step's picker. Its value follows the state: a purchase disarms the faults (unless
/// they are pinned), and the picker must then say `none` again.
fn fault_row(state: ShopState, step: &'static str) -> impl IntoView {
    let kind = Memo::new(move |_| {
        state
            .faults
            .with(|f| f.get(step).map(|c| c.kind.clone()))
            .unwrap_or_else(|| "none".into())
    });
    let needs_number = Memo::new(move |_| {
        kind.with(|k| matches!(k.as_str(), "transient" | "delay" | "compensation_transient"))
    });
    view! {
        <div class="fault-row">
            <label>
                // Named as its lane is: the service and its action, the code name second.
                <span class="step-words">
                    {shared::story::words_of(step).map(|w| format!("{} · {}", w.service, w.action)).unwrap_or_default()}
                    " "<code class="step-name">{step}</code>
                </span>
                <select
                    data-testid=format!("fault-{step}")
                    prop:value=text(move || kind.get())
                    on:change=move |ev| {
                        let k = event_target_value(&ev);
                        state.faults.update(|f| {
                            if k == "none" {
                                f.remove(step);
                            } else {
                                let number = FaultChoice::default_number(&k);
                                f.insert(step.to_string(), FaultChoice { kind: k, number });
                            }
                        });
                    }
                >
                    <option value="none">"none"</option>
                    {Fault::KINDS
                        .iter()
                        .map(|&k| view! { <option value=k>{k.replace('_', " ")}</option> })
                        .collect_view()}
                </select>
            </label>
            {dynamic(move || if needs_number.get() { number(state, step, kind) } else { ().into_any() })}
            <span class="hint">{text(move || describe(&kind.read()).to_string())}</span>
        </div>
    }
}

fn number(state: ShopState, step: &'static str, kind: Memo<String>) -> AnyView {
    view! {
        <label class="number">
            <span>{text(move || if *kind.read() == "delay" { "ms".into() } else { "times".into() })}</span>
            <input
                type="number"
                min="1"
                data-testid=format!("fault-number-{step}")
                prop:value=text(move || state.faults.with(|f| f.get(step).map(|c| c.number.to_string())).unwrap_or_default())
                on:change=move |ev| {
                    let n = event_target_value(&ev).parse::<u64>().unwrap_or(1);
                    state.faults.update(|f| {
                        if let Some(c) = f.get_mut(step) {
                            c.number = n;
                        }
                    });
                }
            />
        </label>
    }
    .into_any()
}
