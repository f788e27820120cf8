//! OpenTelemetry traces from a real run: condenser exports OTLP/HTTP (JSON) to a test receiver
//! on loopback; the request span joins the client's W3C trace, carries the GenAI and condenser
//! attributes, has compression and upstream children, and the upstream request carries the
//! upstream span's `traceparent`. With tracing off, the client's `traceparent` passes through
//! untouched.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use common::{config, long_document, Condenser, MockUpstream};
use serde_json::{json, Value};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// An OTLP/HTTP receiver: keeps every span it is sent.
async fn receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let export: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                    let service = attribute(&resource["resource"], "service.name");
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        for span in scope["spans"].as_array().into_iter().flatten() {
                            let mut span = span.clone();
                            span["service"] = service.clone();
                            kept.lock().expect("spans").push(span);
                        }
                    }
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

/// An attribute's value (string, bool or integer) from an OTLP JSON attribute list.
fn attribute(item: &Value, key: &str) -> Value {
    let found = item["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
        .unwrap_or(Value::Null);
    for kind in ["stringValue", "boolValue"] {
        if !found[kind].is_null() {
            return found[kind].clone();
        }
    }
    match &found["intValue"] {
        Value::String(s) => s.parse::<i64>().map_or(Value::Null, Value::from),
        other => other.clone(),
    }
}

fn traced_request() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": format!("{}\n\nWho lit the lighthouse lamp first?", long_document())}
    ]})
}

async fn send(proxy: &Condenser) -> u16 {
    reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&traced_request())
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_request_is_one_trace_with_genai_attributes_and_propagates_upstream() {
    let mock = MockUpstream::start().await;
    let (port, spans) = receiver().await;
    let cfg = config(&mock.base_url(), "", "enabled = true\nmin_tokens = 100")
        + &format!("\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n");
    let proxy = Condenser::start_with_env(&cfg, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    assert_eq!(send(&proxy).await, 200);

    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans.lock().expect("spans").clone();
        if got.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let named = |name: &str| {
        got.iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span `{name}` in {got:?}"))
    };
    let request = named("chat gpt-4o-mini");
    assert_eq!(request["traceId"], TRACE_ID, "joins the client's trace");
    assert_eq!(request["parentSpanId"], CLIENT_SPAN);
    assert_eq!(request["service"], "condenser");
    for (key, value) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.request.model", json!("gpt-4o-mini")),
        ("gen_ai.provider.name", json!("openai")),
        ("condenser.route", json!("main")),
        ("condenser.compressor", json!("extractive")),
        ("condenser.fail_open", json!(false)),
        ("http.response.status_code", json!(200)),
    ] {
        assert_eq!(attribute(request, key), value, "{key}: {request}");
    }
    let before = attribute(request, "condenser.tokens_before")
        .as_i64()
        .expect("before");
    let billed = attribute(request, "gen_ai.usage.input_tokens")
        .as_i64()
        .expect("input");
    assert!(billed < before / 2, "{before} → {billed}");

    let span_id = request["spanId"].as_str().expect("span id");
    let compress = named("compress");
    let upstream = named("upstream mock");
    for child in [compress, upstream] {
        assert_eq!(child["traceId"], TRACE_ID);
        assert_eq!(child["parentSpanId"], span_id);
    }
    let sent = mock
        .last()
        .header("traceparent")
        .expect("traceparent upstream");
    assert_eq!(
        sent,
        format!(
            "00-{TRACE_ID}-{}-01",
            upstream["spanId"].as_str().expect("id")
        ),
        "the upstream request is the upstream span's child"
    );
}

#[tokio::test]
async fn with_tracing_off_the_clients_traceparent_passes_through() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(&mock.base_url(), "", "enabled = true"));
    assert_eq!(send(&proxy).await, 200);
    assert_eq!(
        mock.last().header("traceparent"),
        Some(format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
    );
}
