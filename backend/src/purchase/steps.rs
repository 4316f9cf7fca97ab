//! The four steps and their compensations, each one HTTP call (two for the payment).

use std::sync::Arc;
use std::time::Duration;

use saga_engine::{RetryPolicy, SagaDefinition, Step, StepContext, StepError};
use serde_json::{Value, json};
use shared::{Fault, InvoiceView, PaymentView, ShipmentView};

use super::client::ServiceClient;
use super::input::PurchaseInput;
use crate::services::ServiceName;
use crate::services::orders::PlacedOrder;

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

impl Participants {
    fn call(&self, ctx: StepContext) -> Result<Call, StepError> {
        let input: PurchaseInput = ctx.input()?;
        let fault = input.faults.get(&*ctx.step).copied();
        Ok(Call { ctx, input, fault })
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
        let body = json!({
            "order_id": c.input.order_id, "saga_id": c.ctx.saga_id.to_string(), "customer": c.input.customer,
            "address": c.input.address, "delivery": c.input.delivery, "items": c.input.items, "fault": c.fault,
        });
        let placed = self
            .client
            .step_call(
                &c.ctx,
                ServiceName::Orders,
                "place_order",
                &c.ctx.idempotency_key,
                &body,
            )
            .await?;
        self.maybe_crash(&c);
        Ok(placed)
    }

    async fn create_invoice(&self, ctx: StepContext) -> Result<InvoiceView, StepError> {
        let c = self.call(ctx)?;
        let placed = placed_order(&c.ctx)?;
        let body = json!({
            "order_id": c.input.order_id, "lines": placed.lines,
            "delivery_fee_cents": placed.delivery_fee_cents, "fault": c.fault,
        });
        let invoice = self
            .client
            .step_call(
                &c.ctx,
                ServiceName::Billing,
                "create_invoice",
                &c.ctx.idempotency_key,
                &body,
            )
            .await?;
        self.maybe_crash(&c);
        Ok(invoice)
    }

    async fn process_payment(&self, ctx: StepContext) -> Result<PaymentView, StepError> {
        let c = self.call(ctx)?;
        let placed = placed_order(&c.ctx)?;
        let body = json!({
            "order_id": c.input.order_id, "amount_cents": placed.total_cents,
            "payment": c.input.payment, "fault": c.fault,
        });
        let payment: PaymentView = self
            .client
            .step_call(
                &c.ctx,
                ServiceName::Payments,
                "process_payment",
                &c.ctx.idempotency_key,
                &body,
            )
            .await?;
        // On success the order is confirmed; its own key, so a retry confirms once.
        let confirm_key = format!("{}:confirm", c.ctx.idempotency_key);
        let _: Value = self
            .client
            .step_call(
                &c.ctx,
                ServiceName::Orders,
                "confirm_order",
                &confirm_key,
                &json!({ "order_id": c.input.order_id }),
            )
            .await
            .map_err(|e| StepError::Retryable(e.message().to_string()))?;
        self.maybe_crash(&c);
        Ok(payment)
    }

    async fn ship_order(&self, ctx: StepContext) -> Result<ShipmentView, StepError> {
        let c = self.call(ctx)?;
        let body = json!({
            "order_id": c.input.order_id, "address": c.input.address, "delivery": c.input.delivery,
            "email": c.input.customer.email, "fault": c.fault,
        });
        let shipment = self
            .client
            .step_call(
                &c.ctx,
                ServiceName::Shipping,
                "ship_order",
                &c.ctx.idempotency_key,
                &body,
            )
            .await?;
        self.maybe_crash(&c);
        Ok(shipment)
    }

    async fn compensate(
        &self,
        ctx: StepContext,
        service: ServiceName,
        path: &str,
    ) -> Result<(), StepError> {
        let c = self.call(ctx)?;
        let body = json!({ "order_id": c.input.order_id, "fault": c.fault });
        // Whatever the service says, a compensation must eventually succeed: retry it all.
        let _: Value = self
            .client
            .step_call(&c.ctx, service, path, &c.ctx.idempotency_key, &body)
            .await
            .map_err(|e| StepError::Retryable(e.message().to_string()))?;
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
        ($name:literal, $action:ident, $service:expr, $compensation:literal) => {{
            let (a, b) = (p.clone(), p.clone());
            policies(
                Step::new($name)
                    .action(move |ctx| {
                        let p = a.clone();
                        async move { p.$action(ctx).await }
                    })
                    .compensation(move |ctx| {
                        let p = b.clone();
                        async move { p.compensate(ctx, $service, $compensation).await }
                    }),
            )
        }};
    }
    let steps = vec![
        step!(
            "place_order",
            place_order,
            ServiceName::Orders,
            "cancel_order"
        ),
        step!(
            "create_invoice",
            create_invoice,
            ServiceName::Billing,
            "void_invoice"
        ),
        step!(
            "process_payment",
            process_payment,
            ServiceName::Payments,
            "refund_payment"
        ),
        step!(
            "ship_order",
            ship_order,
            ServiceName::Shipping,
            "cancel_shipment"
        ),
    ];
    match SagaDefinition::new(SAGA_NAME, steps) {
        Ok(d) => d,
        // The four names above are distinct and the list is not empty.
        Err(e) => unreachable!("the purchase saga is well formed: {e}"),
    }
}
