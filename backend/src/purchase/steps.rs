//! The four steps and their compensations, each one HTTP call (two for the payment).

use std::sync::Arc;
use std::time::Duration;

use saga_engine::{RetryPolicy, SagaDefinition, Step, StepContext, StepError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::{Fault, InvoiceView, PaymentView, ShipmentView};

use super::client::{ClientError, ServiceClient};
use super::input::PurchaseInput;
use crate::services::protocol::{
    CANCEL_ORDER, CANCEL_SHIPMENT, CONFIRM_ORDER, CREATE_INVOICE, Charge, Compensate, Endpoint,
    IssueInvoice, OrderRef, PLACE_ORDER, PROCESS_PAYMENT, PlaceOrder, PlacedOrder, REFUND_PAYMENT,
    SHIP_ORDER, Ship, Updated, VOID_INVOICE,
};

pub const SAGA_NAME: &str = "purchase";

/// How long one attempt may take: long enough for a slow service, short enough that a
/// `timeout` fault (three attempts) unwinds within ten seconds.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

struct Participants {
    client: ServiceClient,
    allow_crash_faults: bool,
}

struct Call {
    ctx: StepContext,
    input: PurchaseInput,
    fault: Option<Fault>,
}

/// What a call is to its step, which decides what a refusal means.
#[derive(Clone, Copy)]
enum Stakes {
    /// The step's action: a refusal is the business saying no, and the saga unwinds.
    Action,
    /// A compensation, or the order's confirmation once the payment is taken: it must
    /// eventually succeed, so whatever went wrong is tried again.
    MustSucceed,
}

/// The one place where a service call's failure becomes the engine's: a refusal (4xx) of an
/// action is a business failure; everything else (a 5xx such as an unreadable row, no answer,
/// an unexpected answer) is worth another attempt.
fn step_error(e: ClientError, stakes: Stakes) -> StepError {
    match stakes {
        Stakes::Action if e.is_refusal() => StepError::Business(e.to_string()),
        Stakes::Action | Stakes::MustSucceed => StepError::Retryable(e.to_string()),
    }
}

impl Participants {
    fn call(&self, ctx: StepContext) -> Result<Call, StepError> {
        let input: PurchaseInput = ctx.input()?;
        let fault = input.faults.get(&*ctx.step).copied();
        // `compensation_fail` models an outage: over once a person resumed the stuck saga.
        let fault = fault.filter(|f| !(*f == Fault::CompensationFail && ctx.resumed > 0));
        Ok(Call { ctx, input, fault })
    }

    /// Send `body` to `endpoint` as this attempt of the step, under `key`.
    async fn send<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        c: &Call,
        endpoint: Endpoint<Req, Resp>,
        key: &str,
        body: &Req,
        stakes: Stakes,
    ) -> Result<Resp, StepError> {
        self.client
            .call(endpoint, key, c.ctx.attempt, body)
            .await
            .map_err(|e| step_error(e, stakes))
    }

    /// The `crash` fault: die right after the action took effect, before the engine can log it.
    fn maybe_crash(&self, call: &Call) {
        if self.allow_crash_faults && call.fault == Some(Fault::Crash) && call.ctx.attempt == 1 {
            tracing::warn!(saga_id = %call.ctx.saga_id, step = %call.ctx.step, "injected crash fault: aborting the process");
            std::process::abort();
        }
    }

    async fn place_order(&self, ctx: StepContext) -> Result<PlacedOrder, StepError> {
        let c = self.call(ctx)?;
        let body = PlaceOrder {
            order_id: c.input.order_id.clone(),
            saga_id: c.ctx.saga_id.to_string(),
            customer: c.input.customer.clone(),
            address: c.input.address.clone(),
            delivery: c.input.delivery,
            items: c.input.items.clone(),
            fault: c.fault,
        };
        let key = &c.ctx.idempotency_key;
        let placed = self
            .send(&c, PLACE_ORDER, key, &body, Stakes::Action)
            .await?;
        self.maybe_crash(&c);
        Ok(placed)
    }

    async fn create_invoice(&self, ctx: StepContext) -> Result<InvoiceView, StepError> {
        let c = self.call(ctx)?;
        let placed = placed_order(&c.ctx)?;
        let body = IssueInvoice {
            order_id: c.input.order_id.clone(),
            lines: placed.lines,
            delivery_fee_cents: placed.delivery_fee_cents,
            fault: c.fault,
        };
        let key = &c.ctx.idempotency_key;
        let invoice = self
            .send(&c, CREATE_INVOICE, key, &body, Stakes::Action)
            .await?;
        self.maybe_crash(&c);
        Ok(invoice)
    }

    async fn process_payment(&self, ctx: StepContext) -> Result<PaymentView, StepError> {
        let c = self.call(ctx)?;
        let placed = placed_order(&c.ctx)?;
        let body = Charge {
            order_id: c.input.order_id.clone(),
            amount_cents: placed.total_cents,
            payment: c.input.payment.clone(),
            fault: c.fault,
        };
        let key = &c.ctx.idempotency_key;
        let payment = self
            .send(&c, PROCESS_PAYMENT, key, &body, Stakes::Action)
            .await?;
        // On success the order is confirmed; its own key, so a retry confirms once.
        let confirm_key = format!("{key}:confirm");
        let order = OrderRef {
            order_id: c.input.order_id.clone(),
        };
        let _: Updated = self
            .send(&c, CONFIRM_ORDER, &confirm_key, &order, Stakes::MustSucceed)
            .await?;
        self.maybe_crash(&c);
        Ok(payment)
    }

    async fn ship_order(&self, ctx: StepContext) -> Result<ShipmentView, StepError> {
        let c = self.call(ctx)?;
        let body = Ship {
            order_id: c.input.order_id.clone(),
            address: c.input.address.clone(),
            delivery: c.input.delivery,
            email: c.input.customer.email.clone(),
            fault: c.fault,
        };
        let key = &c.ctx.idempotency_key;
        let shipment = self
            .send(&c, SHIP_ORDER, key, &body, Stakes::Action)
            .await?;
        self.maybe_crash(&c);
        Ok(shipment)
    }

    async fn compensate(
        &self,
        ctx: StepContext,
        endpoint: Endpoint<Compensate, Updated>,
    ) -> Result<(), StepError> {
        let c = self.call(ctx)?;
        let body = Compensate {
            order_id: c.input.order_id.clone(),
            fault: c.fault,
        };
        let key = &c.ctx.idempotency_key;
        self.send(&c, endpoint, key, &body, Stakes::MustSucceed)
            .await?;
        Ok(())
    }
}

fn placed_order(ctx: &StepContext) -> Result<PlacedOrder, StepError> {
    ctx.output_of("place_order")?
        .ok_or_else(|| StepError::Business("place_order has no output".into()))
}

fn policies(step: Step) -> Step {
    step.timeout(STEP_TIMEOUT)
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        })
        .compensation_retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        })
}

/// The purchase saga over `client`. `allow_crash_faults` arms the `crash` fault.
pub fn purchase_saga(client: ServiceClient, allow_crash_faults: bool) -> SagaDefinition {
    let p = Arc::new(Participants {
        client,
        allow_crash_faults,
    });
    macro_rules! step {
        ($name:literal, $action:ident, $compensation:expr) => {{
            let (a, b) = (p.clone(), p.clone());
            policies(
                Step::new($name)
                    .action(move |ctx| {
                        let p = a.clone();
                        async move { p.$action(ctx).await }
                    })
                    .compensation(move |ctx| {
                        let p = b.clone();
                        async move { p.compensate(ctx, $compensation).await }
                    }),
            )
        }};
    }
    let steps = vec![
        step!("place_order", place_order, CANCEL_ORDER),
        step!("create_invoice", create_invoice, VOID_INVOICE),
        step!("process_payment", process_payment, REFUND_PAYMENT),
        step!("ship_order", ship_order, CANCEL_SHIPMENT),
    ];
    match SagaDefinition::new(SAGA_NAME, steps) {
        Ok(d) => d,
        // The four names above are distinct and the list is not empty.
        Err(e) => unreachable!("the purchase saga is well formed: {e}"),
    }
}
