//! A minimal HTTP/1.1 client of a host's API: the CLI reaching the host running on a data
//! folder, and hosts forwarding to each other.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};

/// The file in the data folder naming the running host's API address.
pub const ADDRESS_FILE: &str = "api.address";
/// The file in the data folder holding a generated token (owner-only).
pub const TOKEN_FILE: &str = "api.token";

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
    /// Its `Content-Type`, if the server named one.
    pub content_type: Option<String>,
}

/// The running host's API base URL (`http://host:port`), if it wrote one.
pub fn address(data: &Path) -> Option<String> {
    std::fs::read_to_string(data.join(ADDRESS_FILE))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The token a host generated into the data folder, or `PROJECTOR_TOKEN`.
pub fn token(data: &Path) -> Option<String> {
    std::env::var("PROJECTOR_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| std::fs::read_to_string(data.join(TOKEN_FILE)).ok())
        .map(|t| t.trim().to_string())
}

/// Send one request to `base` (`http://host:port`) and read the whole answer.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Response> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    request_with(base, method, path, &headers, body.unwrap_or("").as_bytes())
}

/// Send one request with extra headers (connecting for at most 2 s) and read the answer.
pub fn request_with(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    use std::net::ToSocketAddrs as _;
    let host = base.strip_prefix("http://").unwrap_or(base);
    let host = host.trim_end_matches('/');
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("resolving {base}"))?
        .next()
        .with_context(|| format!("no address for {base}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {base}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(130)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("a malformed answer from {base}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in the answer from {base}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        unchunk(rest)
    } else {
        rest.to_string()
    };
    let content_type = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_string())
    });
    Ok(Response {
        status,
        body,
        content_type,
    })
}

/// Join a chunked body.
fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
