//! How the page reaches a browser, against the real binary and the built `frontend/dist`:
//! the bundle brotli- or gzip-encoded as the client accepts (the build's precompressed files,
//! decoding to the file itself), as it is to a client that accepts neither; `Cache-Control:
//! no-cache` with validators, since the bundle's names do not change with its content; the
//! page preloading its bundle, and showing a frame of itself from its HTML alone while the
//! bundle loads; a missing file is a 404 while a route of the page is
//! `index.html`; and the event streams, which are never compressed, still stream to a client
//! that accepts compression.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LINK, VARY,
};
use saga_shop_tests::server::{ShopServer, static_dir};
use saga_shop_tests::shop::{Shop, order};
use serde_json::json;

const WASM: &str = "pkg/saga_shop_frontend_bg.wasm";
const JS: &str = "pkg/saga_shop_frontend.js";

fn start() -> (ShopServer, Shop) {
    let server = ShopServer::start(&[]).expect("start saga-shop");
    let shop = Shop::new(&server.url);
    (server, shop)
}

/// A file of the built page, as the server has it on disk.
fn on_disk(name: &str) -> Vec<u8> {
    let path: PathBuf = static_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the page first: cargo xtask build)",
            path.display()
        )
    })
}

/// `GET path` with these request headers: status, response headers, body.
async fn get(
    shop: &Shop,
    path: &str,
    headers: &[(reqwest::header::HeaderName, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = shop.http.get(format!("{}{path}", shop.url));
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

fn header<'a>(
    headers: &'a reqwest::header::HeaderMap,
    name: &reqwest::header::HeaderName,
) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip stream");
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli_decompressor::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .expect("a brotli stream");
    out
}

#[tokio::test]
async fn the_bundle_is_sent_in_the_encoding_the_client_accepts() {
    let (_server, shop) = start();
    for file in [WASM, JS] {
        let original = on_disk(file);
        for (accepted, encoding, extension, decode) in [
            ("br", "br", "br", unbrotli as fn(&[u8]) -> Vec<u8>),
            ("gzip", "gzip", "gz", gunzip),
            // As a browser asks: brotli is the smaller, so it is the one sent.
            ("gzip, deflate, br, zstd", "br", "br", unbrotli),
        ] {
            let (status, headers, body) =
                get(&shop, &format!("/{file}"), &[(ACCEPT_ENCODING, accepted)]).await;
            assert_eq!(status, 200, "{file} with Accept-Encoding: {accepted}");
            assert_eq!(
                header(&headers, &CONTENT_ENCODING),
                encoding,
                "{file} with Accept-Encoding: {accepted}"
            );
            assert_eq!(header(&headers, &VARY), "accept-encoding", "{file}");
            assert!(
                body.len() < original.len(),
                "{file} in {encoding}: {} bytes, not smaller than {}",
                body.len(),
                original.len()
            );
            assert!(
                body == on_disk(&format!("{file}.{extension}")),
                "{file} in {encoding} is the build's precompressed file"
            );
            assert!(
                decode(&body) == original,
                "{file} in {encoding} decodes to the file"
            );
        }
    }
}

#[tokio::test]
async fn a_client_that_accepts_no_encoding_gets_the_bundle_as_it_is() {
    let (_server, shop) = start();
    for (file, media_type) in [(WASM, "application/wasm"), (JS, "text/javascript")] {
        for accepted in [None, Some("identity")] {
            let headers: Vec<_> = accepted.map(|a| (ACCEPT_ENCODING, a)).into_iter().collect();
            let (status, headers, body) = get(&shop, &format!("/{file}"), &headers).await;
            assert_eq!(status, 200, "{file}");
            assert!(
                headers.get(CONTENT_ENCODING).is_none(),
                "{file}: {headers:?}"
            );
            assert_eq!(header(&headers, &CONTENT_TYPE), media_type, "{file}");
            assert!(body == on_disk(file), "{file} as it is on disk");
        }
    }
}

#[tokio::test]
async fn the_page_and_its_bundle_are_revalidated_not_kept() {
    let (_server, shop) = start();
    let gzip_br = [(ACCEPT_ENCODING, "gzip, br")];
    for path in [
        "/",
        "/index.html",
        "/sagas/anything",
        "/style.css",
        &format!("/{WASM}"),
        &format!("/{JS}"),
    ] {
        let (status, headers, _) = get(&shop, path, &gzip_br).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, &CACHE_CONTROL), "no-cache", "{path}");
        // What a browser revalidates with: an unchanged file is a 304, with no body.
        let etag = header(&headers, &ETAG).to_string();
        assert!(!etag.is_empty(), "{path} has an ETag");
        let (status, headers, body) = get(
            &shop,
            path,
            &[(ACCEPT_ENCODING, "gzip, br"), (IF_NONE_MATCH, &etag)],
        )
        .await;
        assert_eq!(status, 304, "{path} revalidated");
        assert_eq!(header(&headers, &CACHE_CONTROL), "no-cache", "{path}");
        assert!(body.is_empty(), "{path}: a 304 has no body");
    }
}

#[tokio::test]
async fn a_missing_file_is_a_404_and_a_route_of_the_page_is_the_page() {
    let (_server, shop) = start();
    let index = on_disk("index.html");
    for path in [
        "/favicon.ico",
        "/pkg/missing.js",
        "/robots.txt",
        "/sagas/x/logo.png",
    ] {
        let (status, headers, body) = get(&shop, path, &[]).await;
        assert_eq!(status, 404, "{path}");
        assert!(body != index, "{path} is not the page");
        assert!(
            !header(&headers, &CONTENT_TYPE).starts_with("text/html"),
            "{path}: {headers:?}"
        );
    }
    for path in [
        "/",
        "/sagas/anything",
        "/sagas/0190f5c4-3c2b-7d4e-9a1b-2c3d4e5f6a7b",
    ] {
        let (status, headers, body) = get(&shop, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, &CONTENT_TYPE), "text/html", "{path}");
        assert!(body == index, "{path} is index.html");
    }
    // The page's icon, which it links, so a browser does not ask for /favicon.ico.
    let (status, headers, body) = get(&shop, "/favicon.svg", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, &CONTENT_TYPE), "image/svg+xml");
    assert!(body == on_disk("favicon.svg"));
    let index = String::from_utf8_lossy(&index);
    assert!(
        index.contains(r#"<link rel="icon" href="/favicon.svg""#),
        "index.html links the icon: {index}"
    );
}

#[tokio::test]
async fn the_page_sends_the_browser_for_its_bundle_at_once() {
    let (_server, shop) = start();
    for path in ["/", "/sagas/anything"] {
        let (_, headers, _) = get(&shop, path, &[]).await;
        let link = header(&headers, &LINK);
        assert_eq!(
            link,
            format!("</{WASM}>; rel=preload; as=fetch; crossorigin, </{JS}>; rel=modulepreload"),
            "{path}"
        );
    }
    // The preloads are what the page itself asks for, or the browser would fetch twice.
    let index = String::from_utf8_lossy(&on_disk("index.html")).into_owned();
    for file in [WASM, JS] {
        assert!(
            index.contains(&format!("\"/{file}\"")),
            "index.html loads /{file}"
        );
    }
    // Only the page: not the files, nor a 404.
    for path in [
        format!("/{WASM}"),
        "/style.css".into(),
        "/favicon.ico".into(),
    ] {
        let (_, headers, _) = get(&shop, &path, &[]).await;
        assert!(headers.get(LINK).is_none(), "{path}: {headers:?}");
    }
}

/// A slow link shows the page's frame (its header, "Loading the shop…") as soon as the HTML is
/// in: the frame's style is in the page, and no stylesheet before it holds the first paint back
/// (`style.css` is linked after it, which also keeps the bundle's script from running unstyled).
#[tokio::test]
async fn the_page_shows_its_frame_from_its_html_alone() {
    let (_server, shop) = start();
    let (status, _, body) = get(&shop, "/", &[]).await;
    assert_eq!(status, 200);
    let html = String::from_utf8_lossy(&body);
    let at = |text: &str| {
        html.find(text)
            .unwrap_or_else(|| panic!("index.html has no {text}: {html}"))
    };
    let head = &html[..at("</head>")];
    assert!(head.contains("<style>"), "the frame's style is in the page");
    assert!(
        !head.contains("rel=\"stylesheet\""),
        "a stylesheet in the head holds the first paint back: {head}"
    );
    let header = at(r#"<a href="/" class="brand">Saga shop</a>"#);
    let frame = at("Loading the shop…");
    let stylesheet = at(r#"<link rel="stylesheet" href="/style.css">"#);
    assert!(header < frame && frame < stylesheet, "{html}");
    // The frame costs the first load next to nothing.
    assert!(body.len() < 4096, "index.html is {} bytes", body.len());
}

/// Read `response` until its first SSE event, which must come within `patience` and before
/// the stream ends: a stream held back (buffered by a compressor) fails here.
async fn first_event(mut response: reqwest::Response, patience: Duration) -> String {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get(CONTENT_ENCODING).is_none(),
        "an event stream is never compressed: {:?}",
        response.headers()
    );
    assert_eq!(
        header(response.headers(), &CONTENT_TYPE),
        "text/event-stream"
    );
    let mut seen = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.expect("the stream") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(end) = seen.find("\n\n")
                && seen[..end].lines().any(|l| l.starts_with("event:"))
            {
                return seen[..end].to_string();
            }
        }
        panic!("the stream ended before its first event arrived: {seen:?}");
    };
    tokio::time::timeout(patience, read)
        .await
        .expect("the first event arrived while the stream was open")
}

#[tokio::test]
async fn the_event_streams_still_stream_to_a_client_that_accepts_compression() {
    let (_server, shop) = start();
    // A saga that stays running for a while, so its stream is open long after its first event.
    let placed = shop
        .buy(&order(
            "KB-01",
            1,
            json!({"ship_order": {"kind": "delay", "ms": 4000}}),
        ))
        .await
        .expect("order accepted");
    let accepts = |path: String| {
        shop.http
            .get(format!("{}{path}", shop.url))
            .header(ACCEPT_ENCODING, "gzip, br")
            .header("Accept", "text/event-stream")
            .send()
    };
    let saga = accepts(format!("/api/sagas/{}/events", placed.saga_id))
        .await
        .expect("the saga's stream");
    let frame = first_event(saga, Duration::from_secs(3)).await;
    assert!(frame.contains("event: saga_started"), "{frame}");
    // The whole log's stream never ends by itself: its first event must come on its own.
    let all = accepts("/api/events?after=0".into())
        .await
        .expect("the log's stream");
    let frame = first_event(all, Duration::from_secs(3)).await;
    assert!(frame.contains("event: saga_started"), "{frame}");
}
