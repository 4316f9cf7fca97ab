//! A client for the shop API as a test (or a person with curl) uses it: place an order, follow
//! its saga's event stream to the end, read what the services hold.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shared::{CatalogItem, OrderAccepted, OrderView, SagaDetail, SagaEvent, SagaListItem};

/// A valid order for `sku`, with `faults` (a JSON object, possibly empty).
pub fn order(sku: &str, qty: i64, faults: Value) -> Value {
    json!({
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "address": {"line1": "12 Analytical Row", "city": "London", "postal_code": "N1 9GU", "country": "GB"},
        "delivery": "standard",
        "items": [{"sku": sku, "qty": qty}],
        "payment": {"method": "card", "card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"},
        "faults": faults,
    })
}

pub struct Shop {
    pub http: reqwest::Client,
    pub url: String,
}

impl Shop {
    pub fn new(url: &str) -> Self {
        Shop {
            http: reqwest::Client::new(),
            url: url.to_string(),
        }
    }

    pub async fn post_order(
        &self,
        body: &Value,
        key: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .post(format!("{}/api/orders", self.url))
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        Ok(req.send().await?)
    }

    /// Place an order that must be accepted.
    pub async fn buy(&self, body: &Value) -> anyhow::Result<OrderAccepted> {
        let response = self.post_order(body, None).await?;
        let status = response.status();
        if status != 202 {
            bail!(
                "order refused with {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response.json().await?)
    }

    /// `GET path`: the response as it came, whatever its status.
    pub async fn request(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self.http.get(format!("{}{path}", self.url)).send().await?)
    }

    /// `GET path`, its body read as JSON.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self.request(path).await?.json().await?)
    }

    pub async fn catalog(&self) -> anyhow::Result<Vec<CatalogItem>> {
        self.get("/api/catalog").await
    }

    pub async fn stock(&self, sku: &str) -> anyhow::Result<i64> {
        self.catalog()
            .await?
            .into_iter()
            .find(|c| c.sku == sku)
            .map(|c| c.stock)
            .context("sku in catalog")
    }

    /// `GET /api/sagas/{id}`: the saga's state, steps and history.
    pub async fn saga(&self, saga_id: &str) -> anyhow::Result<SagaDetail> {
        self.get(&format!("/api/sagas/{saga_id}")).await
    }

    pub async fn order_view(&self, order_id: &str) -> anyhow::Result<OrderView> {
        self.get(&format!("/api/orders/{order_id}")).await
    }

    /// Every saga, newest first, read page by page (`limit` at a time, each page `before` the
    /// last saga of the one before).
    pub async fn all_sagas(&self, limit: u32) -> anyhow::Result<Vec<SagaListItem>> {
        let mut all: Vec<SagaListItem> = Vec::new();
        loop {
            let path = match all.last() {
                None => format!("/api/sagas?limit={limit}"),
                Some(last) => format!("/api/sagas?limit={limit}&before={}", last.saga_id),
            };
            let response = self.request(&path).await?;
            if response.status() != 200 {
                bail!("{path} answered {}", response.status());
            }
            let page: Vec<SagaListItem> = response.json().await?;
            let done = page.len() < limit as usize;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    pub async fn saga_count(&self) -> anyhow::Result<usize> {
        Ok(self.all_sagas(500).await?.len())
    }

    /// Read a saga's event stream (after `last_event_id`) until it ends, at most `limit` events.
    pub async fn events(
        &self,
        saga_id: &str,
        last_event_id: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, SagaEvent)>> {
        let mut stream = self
            .open_stream(&format!("/api/sagas/{saga_id}/events"), last_event_id)
            .await?;
        let mut out = Vec::new();
        let read = async {
            while out.len() < limit {
                match stream.next().await? {
                    Some(e) => out.push(e),
                    None => break,
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .context("the event stream did not end within 60 s")??;
        Ok(out)
    }

    /// `GET /api/events`, the whole log as it grows, resumed after `last_event_id` (a log
    /// position) when given, as a reconnecting `EventSource` would.
    pub async fn log_stream(&self, last_event_id: Option<u64>) -> anyhow::Result<EventStream> {
        self.open_stream("/api/events", last_event_id).await
    }

    async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> anyhow::Result<EventStream> {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let response = req.send().await?;
        if response.status() != 200 {
            bail!("{path} answered {}", response.status());
        }
        Ok(EventStream {
            response,
            buf: Vec::new(),
        })
    }

    /// Follow a saga to its end; returns its events.
    pub async fn finish(&self, saga_id: &str) -> anyhow::Result<Vec<SagaEvent>> {
        Ok(self
            .events(saga_id, None, usize::MAX)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }
}

/// An open server-sent event stream, read one event at a time.
pub struct EventStream {
    response: reqwest::Response,
    /// Bytes received and not yet part of a whole block (a chunk may end inside a character).
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event with its SSE `id`; `None` once the server ended the stream. Keep-alive
    /// comments are skipped. Waits as long as the server sends nothing: callers set deadlines.
    pub async fn next(&mut self) -> anyhow::Result<Option<(u64, SagaEvent)>> {
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                if let Some(e) = parse_block(&String::from_utf8(block)?)? {
                    return Ok(Some(e));
                }
            }
            match self.response.chunk().await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// One SSE block: `id`, `event`, `data` lines. Comments (keep-alives) give `None`.
fn parse_block(block: &str) -> anyhow::Result<Option<(u64, SagaEvent)>> {
    let mut id = None;
    let mut kind = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse::<u64>()?);
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    let event: SagaEvent = serde_json::from_str(&data)?;
    anyhow::ensure!(
        kind.as_deref() == Some(event.event.kind().as_str()),
        "SSE event name {kind:?} differs from type {}",
        event.event.kind()
    );
    Ok(Some((id.context("an event without id")?, event)))
}

/// `"step_started place_order"`-style lines, to compare event sequences readably.
pub fn kinds(events: &[SagaEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.step {
            Some(s) => format!("{} {s}", e.event.kind()),
            None => e.event.kind().to_string(),
        })
        .collect()
}
