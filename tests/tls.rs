//! TLS both ways through the real binary, with a certificate authority made in the test: an
//! HTTPS upstream (the recording mock behind a TLS terminator) trusted through `ca_file`, and
//! condenser's own HTTPS listener (`server.tls`) reached by a client that trusts the test CA.
//! Chat, streaming chat and pass-through all cross both. Verification is on: without the CA,
//! the upstream is refused (502) and so is a client.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{Condenser, MockUpstream};
use serde_json::{json, Value};

/// A CA and a certificate it issued for `localhost`, as PEM files in `dir`.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "condenser test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write pem");
        path.display().to_string()
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        cert: write("cert.pem", leaf.pem()),
        key: write("key.pem", leaf_key.serialize_pem()),
    }
}

/// Terminates TLS with `pki`'s certificate and forwards the bytes to `plain`; returns its port.
async fn tls_terminator(pki: &Pki, plain: SocketAddr) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_file(&pki.cert).expect("cert")];
    let key = PrivateKeyDer::from_pem_file(&pki.key).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // a client that refused the certificate
                };
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(plain).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    port
}

fn config(upstream_port: u16, ca_file: Option<&str>, tls: &Pki) -> String {
    let ca = ca_file.map_or(String::new(), |f| format!("ca_file = \"{f}\""));
    format!(
        r#"
[server]
threads = 1
grace_period_seconds = 0
tls = {{ cert = "{cert}", key = "{key}" }}

[[upstreams]]
name = "secure"
kind = "openai"
base_url = "https://localhost:{upstream_port}/v1"
timeout_ms = 5000
{ca}

[[routes]]
name = "main"
models = ["*"]
upstream = "secure"
"#,
        cert = tls.cert,
        key = tls.key,
    )
}

fn client(ca: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("ca");
        builder = builder.tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("pem")]);
    }
    builder.build().expect("client")
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream,
           "messages": [{"role": "user", "content": "Say hi"}]})
}

#[tokio::test]
async fn chat_streams_and_pass_through_cross_tls_both_ways() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let upstream_port = tls_terminator(&pki, mock.addr).await;
    let proxy = Condenser::start(&config(upstream_port, Some(&pki.ca), &pki));
    let base = format!("https://localhost:{}", proxy.addr.port());
    let trusting = client(Some(&pki.ca));

    let answer: Value = trusting
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .expect("chat over TLS")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["object"], "chat.completion", "{answer}");

    let streamed = trusting
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat(true))
        .send()
        .await
        .expect("stream over TLS");
    assert_eq!(streamed.status(), 200);
    assert!(streamed
        .text()
        .await
        .expect("body")
        .contains("data: [DONE]"));

    let embeddings: Value = trusting
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await
        .expect("pass-through over TLS")
        .json()
        .await
        .expect("json");
    assert_eq!(embeddings["path"], "/v1/embeddings");
    assert_eq!(mock.received().len(), 3, "all three reached the upstream");

    // A client that does not trust the test CA refuses condenser's certificate.
    let refused = client(None)
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await;
    assert!(refused.is_err(), "an unknown certificate must be refused");
}

#[tokio::test]
async fn an_upstream_signed_by_an_untrusted_ca_is_refused() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let upstream_port = tls_terminator(&pki, mock.addr).await;
    // No ca_file: the platform's roots do not include the test CA.
    let proxy = Condenser::start(&config(upstream_port, None, &pki));
    let resp = client(Some(&pki.ca))
        .post(format!(
            "https://localhost:{}/v1/chat/completions",
            proxy.addr.port()
        ))
        .json(&chat(false))
        .send()
        .await
        .expect("condenser answers");
    assert_eq!(resp.status(), 502);
    let error: Value = resp.json().await.expect("json");
    assert_eq!(error["error"]["code"], "upstream_unreachable", "{error}");
    assert!(mock.received().is_empty(), "nothing reached the upstream");
}
