//! Calling the shop services over real HTTP, with the step's idempotency key and attempt.
//!
//! A call's failure is a [`ClientError`] that keeps what the saga must tell apart: the
//! service saying no (a 4xx: nothing was applied) from the service failing or not answering
//! (worth trying again). `steps.rs` maps it to the engine's `StepError` in one place.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::services::ServiceName;
use crate::services::protocol::Endpoint;

/// How a call to a service went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service said no (a 4xx): a business refusal, and nothing was applied. `message` is
    /// its sentence, or says which status it answered when it gave none.
    #[error("{message}")]
    Refused {
        service: ServiceName,
        status: StatusCode,
        message: String,
    },
    /// The service failed (a 5xx, or a status no endpoint answers): the request may be sent
    /// again.
    #[error("{message}")]
    Server {
        service: ServiceName,
        status: StatusCode,
        message: String,
    },
    /// No answer: the connection could not be made, or broke before the answer was read
    /// (reqwest's connect timeout included; how long a step may wait is the engine's timeout).
    #[error("{service} did not answer: {source}")]
    Transport {
        service: ServiceName,
        #[source]
        source: reqwest::Error,
    },
    /// A success whose body is not what the endpoint answers.
    #[error("{service} sent an unexpected answer: {source}")]
    Unreadable {
        service: ServiceName,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether the service refused: a business outcome, not a failure to retry.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

/// Where each service is: by default this process's own `/svc/{name}`; `--service-url`
/// points one elsewhere.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    urls: BTreeMap<ServiceName, String>,
}

impl ServiceUrls {
    /// Every service hosted at `base` (`http://127.0.0.1:3000`), under `/svc/{name}`.
    pub fn local(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        ServiceUrls {
            urls: ServiceName::ALL
                .into_iter()
                .map(|s| (s, format!("{base}/svc/{s}")))
                .collect(),
        }
    }

    pub fn set(&mut self, service: ServiceName, url: &str) {
        self.urls
            .insert(service, url.trim_end_matches('/').to_string());
    }

    pub fn get(&self, service: ServiceName) -> &str {
        self.urls.get(&service).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    urls: ServiceUrls,
}

impl ServiceClient {
    pub fn new(urls: ServiceUrls) -> Self {
        let http = reqwest::Client::builder()
            // As many kept-alive connections as sagas call the services at once under load
            // (hundreds): with fewer, every burst closes and reopens connections (measured:
            // ~8 % of the server's time in connect/accept/close at saturation with 64).
            .pool_max_idle_per_host(1024)
            // Below a server's request-head timeout (20 s by default), which also closes idle
            // kept-alive connections: the client lets go first, instead of finding a pooled
            // connection closed under it.
            .pool_idle_timeout(std::time::Duration::from_secs(15))
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        ServiceClient { http, urls }
    }

    pub fn urls(&self) -> &ServiceUrls {
        &self.urls
    }

    /// POST an action or compensation to `endpoint`, as attempt `attempt` of the step, under
    /// the step's idempotency `key`. 2xx is success; anything else is a [`ClientError`].
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: Endpoint<Req, Resp>,
        key: &str,
        attempt: u32,
        body: &Req,
    ) -> Result<Resp, ClientError> {
        let service = endpoint.service;
        let url = format!("{}{}", self.urls.get(service), endpoint.path);
        let request = self
            .http
            .post(&url)
            .header("Idempotency-Key", key)
            .header("X-Saga-Attempt", attempt.to_string())
            .json(body);
        answer(service, request.send().await).await
    }

    /// GET from a service; `None` for 404.
    pub async fn get<T: DeserializeOwned>(
        &self,
        service: ServiceName,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let url = format!("{}/{path}", self.urls.get(service));
        match answer(service, self.http.get(&url).send().await).await {
            Ok(found) => Ok(Some(found)),
            Err(ClientError::Refused {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POST outside a saga (card tokenisation).
    pub async fn post<T: DeserializeOwned>(
        &self,
        service: ServiceName,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let url = format!("{}/{path}", self.urls.get(service));
        answer(service, self.http.post(&url).json(body).send().await).await
    }
}

/// A service's answer: its body for 2xx, an error for anything else.
async fn answer<T: DeserializeOwned>(
    service: ServiceName,
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T, ClientError> {
    let transport = |source| ClientError::Transport { service, source };
    let response = sent.map_err(transport)?;
    let status = response.status();
    let body = response.bytes().await;
    if status.is_success() {
        return serde_json::from_slice(&body.map_err(transport)?)
            .map_err(|source| ClientError::Unreadable { service, source });
    }
    // The status is the answer; the body only gives its sentence (`{"error": …}`), when there
    // is one to read.
    #[derive(serde::Deserialize)]
    struct Sentence {
        error: String,
    }
    let sentence = body
        .ok()
        .and_then(|body| serde_json::from_slice::<Sentence>(&body).ok());
    let message = match sentence {
        Some(sentence) => sentence.error,
        None => format!("{service} answered {status}"),
    };
    if status.is_client_error() {
        Err(ClientError::Refused {
            service,
            status,
            message,
        })
    } else {
        Err(ClientError::Server {
            service,
            status,
            message,
        })
    }
}
