//! A trip booked as a saga: a flight, then a hotel, then a car. Each booking is an action whose
//! compensation cancels it. The car rental refuses (every car is taken), so the saga unwinds:
//! the hotel is cancelled, then the flight, newest first, and nobody is left paying for half a
//! trip.
//!
//! The travel agency here is a stand-in for three remote services. It is told each call's
//! idempotency key, as a real service would be, so that a retried booking is not booked twice.
//!
//! Run it with `cargo run -p saga-engine --example trip`. It prints the saga's records as the
//! engine commits them, then checks the end state and exits with a failure status if it is
//! not "compensated, hotel and flight cancelled in that order" (so it doubles as a test).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use saga_engine::{
    Engine, MemoryStore, RecordKind, SagaDefinition, SagaStatus, Step, StepContext, StepError,
};
use serde::{Deserialize, Serialize};

/// The saga's input: logged with its start, read by every step.
#[derive(Debug, Serialize, Deserialize)]
struct Trip {
    traveller: String,
    city: String,
}

/// Three booking services in one: what each has booked, by idempotency key, and a journal of
/// every change, for the check at the end.
#[derive(Default)]
struct Agency {
    bookings: Mutex<HashMap<String, String>>,
    journal: Mutex<Vec<String>>,
}

impl Agency {
    /// Book `what`; the same key books once, however often it is asked.
    fn book(&self, key: &str, what: &str, trip: &Trip) -> String {
        let mut bookings = self.bookings.lock().unwrap();
        if let Some(reference) = bookings.get(key) {
            return reference.clone();
        }
        let reference = format!("{}-{}", what.to_uppercase(), bookings.len() + 1);
        let line = format!("booked {what} {reference} in {}", trip.city);
        self.journal.lock().unwrap().push(line);
        bookings.insert(key.to_string(), reference.clone());
        reference
    }

    fn cancel(&self, what: &str, reference: &str) {
        let line = format!("cancelled {what} {reference}");
        self.journal.lock().unwrap().push(line);
    }
}

/// A step that books `what` and whose compensation cancels what it booked.
fn booking(name: &str, what: &'static str, agency: &Arc<Agency>) -> Step {
    let (books, cancels) = (agency.clone(), agency.clone());
    let step = name.to_string();
    Step::new(name)
        .action(move |ctx: StepContext| {
            let agency = books.clone();
            async move {
                let trip: Trip = ctx.input()?;
                Ok::<_, StepError>(agency.book(&ctx.idempotency_key, what, &trip))
            }
        })
        .compensation(move |ctx: StepContext| {
            let (agency, step) = (cancels.clone(), step.clone());
            async move {
                // The action's output is the booking to cancel. None if the action's outcome
                // was never known (it timed out): then there is nothing we know of to cancel.
                if let Some(reference) = ctx.output_of::<String>(&step)? {
                    agency.cancel(what, &reference);
                }
                Ok(())
            }
        })
}

fn trip_saga(agency: &Arc<Agency>) -> SagaDefinition {
    let rent_car = Step::new("rent_car").action(|ctx: StepContext| async move {
        let trip: Trip = ctx.input()?;
        // A refusal, not an outage: retrying would not help, so the saga unwinds at once.
        Err::<String, _>(StepError::Business(format!("no car left in {}", trip.city)))
    });
    SagaDefinition::new(
        "trip",
        vec![
            booking("book_flight", "flight", agency),
            booking("book_hotel", "hotel", agency),
            rent_car,
        ],
    )
    .expect("three steps with distinct names")
}

#[tokio::main]
async fn main() -> ExitCode {
    let agency = Arc::new(Agency::default());
    let engine = Engine::new(MemoryStore::new());
    engine.register(trip_saga(&agency));

    let trip = Trip {
        traveller: "Ada".into(),
        city: "Lisbon".into(),
    };
    let id = match engine.start("trip", &trip).await {
        Ok(id) => id,
        Err(e) => return failed(&format!("the trip did not start: {e}")),
    };
    println!("trip {id}: {} to {}", trip.traveller, trip.city);

    // Its records from the first: history, then live, ending with the saga's last record.
    let mut records = Vec::new();
    let mut events = engine.subscribe(id, 0);
    while let Some(record) = events.next().await {
        let record = match record {
            Ok(record) => record,
            Err(e) => return failed(&format!("following the saga: {e}")),
        };
        let step = record.step.as_deref().unwrap_or("");
        let attempt = record
            .attempt
            .map_or(String::new(), |a| format!(" (try {a})"));
        let kind = record.kind.to_string();
        let line = format!("  {:>2}  {kind:<23} {step}{attempt}", record.seq);
        println!("{}", line.trim_end());
        records.push(record);
    }

    let journal = agency.journal.lock().unwrap().clone();
    println!("agency:");
    for line in &journal {
        println!("  {line}");
    }

    // What must hold: the saga compensated, and the two bookings undone newest first.
    let status = engine
        .store()
        .saga(id)
        .await
        .ok()
        .flatten()
        .map(|s| s.status);
    if status != Some(SagaStatus::Compensated) {
        return failed(&format!("the saga ended {status:?}, not compensated"));
    }
    let undone: Vec<&str> = records
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::CompensationSucceeded { .. }))
        .filter_map(|r| r.step.as_deref())
        .collect();
    if undone != ["book_hotel", "book_flight"] {
        return failed(&format!(
            "compensated {undone:?}, not the hotel then the flight"
        ));
    }
    let expected = [
        "booked flight FLIGHT-1 in Lisbon",
        "booked hotel HOTEL-2 in Lisbon",
        "cancelled hotel HOTEL-2",
        "cancelled flight FLIGHT-1",
    ];
    if journal != expected {
        return failed("the agency's bookings are not what the saga says");
    }
    println!("ok: no car, so the hotel and then the flight were cancelled");
    ExitCode::SUCCESS
}

fn failed(why: &str) -> ExitCode {
    eprintln!("FAILED: {why}");
    ExitCode::FAILURE
}
