//! A minimal HTTP/1.1 client for the admin API: one request per connection,
//! `Connection: close`, the status code and body back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request waits for the whole response.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// `method path` with an empty body; returns the status code and body.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    request_as(addr, method, path, None).await
}

/// [`request`] with `Authorization: Bearer <token>` when `token` is given.
pub async fn request_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("malformed HTTP response {resp:?}")))?;
        let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP reply"))?
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path).await
}

/// `POST path` with an empty body.
pub async fn post(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, "POST", path).await
}
