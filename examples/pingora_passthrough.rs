//! A plain pingora reverse proxy, the baseline of the overhead benchmark: every request goes to
//! one upstream through pingora's own proxy state machine, nothing read, parsed or counted. What
//! condenser adds over this is condenser's; what this adds over the upstream served directly is
//! pingora's and the machine's.
//!
//! `cargo run --release --example pingora_passthrough -- LISTEN UPSTREAM THREADS`

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, Server};
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

struct Passthrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18004".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:18001".into());
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, Passthrough { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    println!("pingora passthrough on {listen}");
    server.run_forever();
}
