//! The benchmark's floor: a minimal pass-through HTTP/1.1 proxy on hyper (`xtask-bench proxy`).
//!
//! It forwards every request, unchanged, to one upstream over pooled keep-alive connections, and
//! streams the answer back frame by frame. `TCP_NODELAY` is set on both sides. It runs on a
//! `current_thread` runtime, the fastest shape on one core. What it costs per request is the
//! least any gateway can cost for one HTTP hop; Echelon's figures are read against it.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The answer body: the upstream's, or empty for a 502 when the upstream could not be reached.
type ProxyBody = Either<Incoming, Empty<Bytes>>;

/// `xtask-bench proxy --listen ADDR --upstream ADDR`: serves until killed.
pub fn main(args: &[String]) -> Result<()> {
    let mut listen = None;
    let mut upstream = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("`{arg}` needs a value"))?;
        let addr: SocketAddr = value
            .parse()
            .with_context(|| format!("`{arg} {value}`: not an address like 127.0.0.1:9000"))?;
        match arg.as_str() {
            "--listen" => listen = Some(addr),
            "--upstream" => upstream = Some(addr),
            other => bail!("unknown bench-proxy option `{other}`"),
        }
    }
    let listen = listen.context("bench-proxy needs --listen ADDR")?;
    let upstream = upstream.context("bench-proxy needs --upstream ADDR")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        serve(listener, upstream).await
    })
}

/// Accepts connections on `listener` and forwards their requests to `upstream`, until the
/// listener fails.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) -> Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let authority = Authority::try_from(upstream.to_string())?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let client = client.clone();
        let authority = authority.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(client.clone(), authority.clone(), request));
            // A client that goes away mid-request is not the proxy's problem.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    let mut uri = Uri::builder().scheme(Scheme::HTTP).authority(authority);
    if let Some(path) = parts.uri.path_and_query() {
        uri = uri.path_and_query(path.clone());
    }
    let Ok(uri) = uri.build() else {
        return Ok(bad_gateway());
    };
    parts.uri = uri;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(Either::Left)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;

    use super::*;

    /// An upstream that answers `POST` with the path and body it received, upper-cased.
    async fn echo_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let text = format!("{path} {}", String::from_utf8_lossy(&body));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                            text.to_uppercase(),
                        ))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    async fn post(
        client: &Client<HttpConnector, Full<Bytes>>,
        proxy: SocketAddr,
    ) -> (StatusCode, String) {
        let request = Request::post(format!("http://{proxy}/v1/chat/completions?x=1"))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn forwards_requests_and_answers_over_kept_alive_connections() {
        let upstream = echo_upstream().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, upstream));
        let client = Client::builder(TokioExecutor::new()).build_http();
        for _ in 0..3 {
            let (status, body) = post(&client, proxy).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, "/V1/CHAT/COMPLETIONS HELLO");
        }
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_bad_gateway() {
        // Bind and drop to find a port nothing listens on.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, closed));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let (status, body) = post(&client, proxy).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, "");
        server.abort();
    }

    #[test]
    fn options_are_checked() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let error = main(&args(&["--listen", "127.0.0.1:1"])).unwrap_err();
        assert_eq!(error.to_string(), "bench-proxy needs --upstream ADDR");
        let error = main(&args(&["--listen", "nowhere"])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`--listen nowhere`: not an address like 127.0.0.1:9000"
        );
        let error = main(&args(&["--port", "127.0.0.1:1"])).unwrap_err();
        assert_eq!(error.to_string(), "unknown bench-proxy option `--port`");
    }
}
