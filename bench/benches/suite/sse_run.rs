//! Driving benchmark 7: the two servers and how events are made to happen on each.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, Sse};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::http::{binary, post, start};
use crate::report::Report;
use crate::sqlite::scratch;
use crate::sse::{Target, bars, measure};

#[derive(serde::Deserialize)]
struct Publish {
    count: usize,
    over_ms: u64,
}

/// The baseline: axum's SSE example with a `broadcast` channel, nothing else. Events carry the
/// same kind of JSON as ours (with `at`), numbered for the loss check.
pub fn serve_baseline() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (tx, _) = broadcast::channel::<(u64, String)>(1024);
        let app = axum::Router::new()
            .route(
                "/events",
                axum::routing::get(|State(tx): State<broadcast::Sender<(u64, String)>>| async move {
                    let stream = tokio_stream::wrappers::BroadcastStream::new(tx.subscribe())
                        .filter_map(|m| std::future::ready(m.ok()))
                        .map(|(id, data)| Ok::<_, std::convert::Infallible>(Event::default().id(id.to_string()).event("step_succeeded").data(data)));
                    Sse::new(stream)
                }),
            )
            .route(
                "/publish",
                axum::routing::post(|State(tx): State<broadcast::Sender<(u64, String)>>, Query(p): Query<Publish>| async move {
                    let gap = Duration::from_millis(p.over_ms) / p.count.max(1) as u32;
                    for i in 0..p.count {
                        let at = shared_like_now();
                        let data = format!(r#"{{"saga_id":"00000000-0000-0000-0000-000000000000","seq":{i},"type":"step_succeeded","at":"{at}","step":"ship_order","attempt":1,"detail":{{"duration_ms":1}}}}"#);
                        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = tx.send((id, data));
                        if !gap.is_zero() {
                            tokio::time::sleep(gap).await;
                        }
                    }
                    "ok"
                }),
            )
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("saga-shop listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Now, in the API's timestamp format.
fn shared_like_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    shared::rfc3339_millis(ms)
}

pub async fn run(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    eprintln!("==> 7. the event stream");
    if !binary().exists() {
        report
            .note("SSE benchmark skipped: build saga-shop first (`cargo xtask bench` does)".into());
        return Ok(());
    }
    let (subscribers, paced, burst) = if quick {
        (300, 20, 100)
    } else {
        (10_000, 100, 500)
    };

    // Every subscriber is a connection, and the shop's own service calls need some besides.
    let cap = [
        "--max-connections".to_string(),
        (subscribers * 2).to_string(),
    ];
    let shop = start(&format!("sqlite://{}", scratch("sse").display()), &cap)?;
    let url = shop.url.clone();
    let http = reqwest::Client::new();
    let target = Target {
        name: "saga-shop",
        addr: url.trim_start_matches("http://").to_string(),
        path: "/api/events",
        pid: shop.child.id(),
        // A successful purchase is 10 events on /api/events.
        produce: Box::new(move |events, over| {
            let (http, url) = (http.clone(), url.clone());
            Box::pin(async move {
                let sagas = events / 10;
                let gap = over / sagas.max(1) as u32;
                let mut posts = Vec::with_capacity(sagas);
                for _ in 0..sagas {
                    let (http, url) = (http.clone(), url.clone());
                    posts.push(tokio::spawn(async move { post(&http, &url).await }));
                    if !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                }
                let placed = futures_util::future::join_all(posts)
                    .await
                    .into_iter()
                    .filter(|p| matches!(p, Ok(Some(_))))
                    .count();
                placed * 10
            })
        }),
    };
    let ours = measure(report, target, subscribers, paced, burst).await?;
    drop(shop);

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-baseline")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut line)?;
    let url = line
        .trim()
        .trim_start_matches("saga-shop listening on ")
        .to_string();
    let http = reqwest::Client::new();
    let target = Target {
        name: "axum broadcast baseline",
        addr: url.trim_start_matches("http://").to_string(),
        path: "/events",
        pid: child.id(),
        produce: Box::new(move |events, over| {
            let (http, url) = (http.clone(), url.clone());
            Box::pin(async move {
                let sent = http
                    .post(format!(
                        "{url}/publish?count={events}&over_ms={}",
                        over.as_millis()
                    ))
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    events
                } else {
                    0
                }
            })
        }),
    };
    let example = measure(report, target, subscribers, paced, burst).await;
    let _ = child.kill();
    let _ = child.wait();
    bars(report, &ours, &example?);
    Ok(())
}
