//! TLS termination over real sockets: a self-signed certificate made in the test, configured
//! with `[server] tls_cert` / `tls_key`, served with ALPN `http/1.1`, replaced on disk and
//! picked up without a restart; a silent client is closed at the handshake timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::write;
use echelon_infrastructure::metrics::ConnectionTimeout;
use echelon_interfaces::app::{self, BuildOptions};
use echelon_interfaces::http::{self, RunningServer, ServerOptions};
use tokio::io::AsyncReadExt;

const HOST: &str = "gateway.test";
const WAIT: Duration = Duration::from_secs(30);

struct Pair {
    cert: String,
    key: String,
}

fn generate() -> Pair {
    let generated = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
    Pair {
        cert: generated.cert.pem(),
        key: generated.signing_key.serialize_pem(),
    }
}

async fn start(root: &std::path::Path, pair: &Pair) -> RunningServer {
    write(root, "tls/cert.pem", &pair.cert);
    write(root, "tls/key.pem", &pair.key);
    write(
        root,
        "gateway.toml",
        "[server]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\nheader_read_timeout = \"700ms\"\n",
    );
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n",
    );
    write(
        root,
        "llms/providers/mock.toml",
        "kind = \"mock\"\n\n[models.small]\n",
    );
    let config = app::load(root).unwrap_or_else(|report| panic!("{report}"));
    let options = ServerOptions::from_settings(&config.gateway.server);
    let components = app::build(root, config, BuildOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    http::start(listener, &components, options, std::future::pending()).unwrap()
}

/// A client that trusts `pair` alone and opens a new connection for every request.
fn client(pair: &Pair, addr: SocketAddr) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(WAIT)
        .tls_certs_only([reqwest::Certificate::from_pem(pair.cert.as_bytes()).unwrap()])
        .resolve(HOST, addr)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The protocol ALPN settles on for a client that offers `h2` and `http/1.1`.
async fn alpn(pair: &Pair, addr: SocketAddr) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    stream.get_ref().1.alpn_protocol().unwrap().to_vec()
}

async fn healthz(client: &reqwest::Client, addr: SocketAddr) -> reqwest::Result<reqwest::Response> {
    client
        .get(format!("https://{HOST}:{}/healthz", addr.port()))
        .send()
        .await
}

#[tokio::test]
async fn serves_https_with_alpn_http11_and_follows_a_replaced_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = generate();
    let server = start(dir.path(), &first).await;
    let addr = server.addr;

    let response = healthz(&client(&first, addr), addr).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.text().await.unwrap(), "ok\n");

    // A client offering h2 first is given http/1.1 by ALPN.
    assert_eq!(alpn(&first, addr).await, b"http/1.1");

    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    assert!(
        plain
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );

    // Renew: the key first, then the certificate, as a renewal tool would.
    let second = generate();
    write(dir.path(), "tls/key.pem", &second.key);
    write(dir.path(), "tls/cert.pem", &second.cert);
    let renewed = client(&second, addr);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(response) = healthz(&renewed, addr).await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        healthz(&client(&first, addr), addr).await.is_err(),
        "new connections no longer get the old certificate"
    );

    // A broken renewal leaves the current certificate serving.
    write(
        dir.path(),
        "tls/cert.pem",
        "-----BEGIN CERTIFICATE-----\ntruncated",
    );
    let response = healthz(&renewed, addr).await.unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &generate()).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0_u8; 64];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let connections = server.state.metrics.connections();
    assert_eq!(connections.timed_out_total(ConnectionTimeout::Handshake), 1);
    server.shutdown().await.unwrap();
}

#[test]
fn tls_cert_without_tls_key_and_a_missing_file_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n",
    );
    write(
        root,
        "llms/providers/mock.toml",
        "kind = \"mock\"\n\n[models.small]\n",
    );
    write(root, "gateway.toml", "[server]\ntls_cert = \"cert.pem\"\n");
    let report = app::load(root).unwrap_err().to_string();
    assert!(
        report.contains("`tls_cert` and `tls_key` go together"),
        "{report}"
    );
    assert!(report.contains("gateway.toml:2"), "{report}");

    write(
        root,
        "gateway.toml",
        "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    );
    let report = app::load(root).unwrap_err().to_string();
    assert!(report.contains("error[io]: cannot read"), "{report}");
    assert!(report.contains("cert.pem"), "{report}");
}

#[test]
fn a_file_without_pem_of_its_kind_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pair = generate();
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n",
    );
    write(
        root,
        "llms/providers/mock.toml",
        "kind = \"mock\"\n\n[models.small]\n",
    );
    write(
        root,
        "gateway.toml",
        "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    );
    // The key where the certificate goes, and the certificate where the key goes.
    write(root, "cert.pem", &pair.key);
    write(root, "key.pem", &pair.cert);
    let report = app::load(root).unwrap_err().to_string();
    assert!(report.contains("gateway.toml:2"), "{report}");
    assert!(
        report.contains("holds no `BEGIN CERTIFICATE` block"),
        "{report}"
    );
    assert!(report.contains("gateway.toml:3"), "{report}");
    assert!(report.contains("holds no private key block"), "{report}");
    assert!(
        !report.contains("PRIVATE KEY-----"),
        "no key material in the report: {report}"
    );

    write(root, "cert.pem", "-----BEGIN CERTIFICATE-----\ntruncated\n");
    write(root, "key.pem", &pair.key);
    let report = app::load(root).unwrap_err().to_string();
    assert!(report.contains("gateway.toml:2"), "{report}");
    assert!(report.contains("is not valid PEM"), "{report}");
}
