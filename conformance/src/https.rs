//! A minimal HTTPS/1.1 client for the member API: one request per connection
//! (`Connection: close`), the response read to its end.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::endpoint::{Endpoint, EndpointError};
use crate::wire;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The member API of the deployment.
pub struct Api {
    endpoint: Endpoint,
    host: String,
    config: Arc<ClientConfig>,
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Fails unless the status is `status`.
    pub fn expect_status(&self, status: u16, what: &str) -> Result<(), String> {
        if self.status == status {
            Ok(())
        } else {
            Err(format!(
                "{what}: expected HTTP {status}, got {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        }
    }
}

impl Api {
    /// The API at `url` (`https://HOST[:PORT]`, no path).
    pub async fn new(
        url: &str,
        tls_name: Option<&str>,
        config: Arc<ClientConfig>,
    ) -> Result<Self, EndpointError> {
        let authority = url
            .strip_prefix("https://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.contains('/'))
            .ok_or_else(|| EndpointError::Syntax(url.to_owned()))?;
        let host_port = if authority
            .rsplit_once(':')
            .is_some_and(|(h, _)| !h.ends_with(':'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:443")
        };
        let endpoint = Endpoint::resolve(&host_port, tls_name).await?;
        Ok(Api {
            endpoint,
            host: authority.to_owned(),
            config,
        })
    }

    /// Where the API listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request; `token` goes into `Authorization: Bearer`, `body` as JSON.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, String> {
        let exchange = async {
            let tcp = wire::connect(&self.endpoint).await?;
            let mut tls = wire::handshake(tcp, &self.endpoint, self.config.clone()).await?;
            let body = body.map(serde_json::Value::to_string).unwrap_or_default();
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: */*\r\nContent-Length: {}\r\n",
                self.host,
                body.len()
            );
            if !body.is_empty() {
                head.push_str("Content-Type: application/json\r\n");
            }
            if let Some(token) = token {
                head.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
            head.push_str("\r\n");
            let io = |e: std::io::Error| format!("{method} {path}: {e}");
            tls.write_all(head.as_bytes()).await.map_err(io)?;
            tls.write_all(body.as_bytes()).await.map_err(io)?;
            tls.flush().await.map_err(io)?;
            let mut raw = Vec::new();
            // A peer that closes without close_notify after a complete response is tolerated.
            if let Err(e) = tls.read_to_end(&mut raw).await
                && raw.is_empty()
            {
                return Err(io(e));
            }
            parse(&raw).map_err(|e| format!("{method} {path}: {e}"))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{method} {path}: no response within 20 s"))?
    }
}

/// Parses a whole HTTP/1.1 response.
fn parse(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response has no end of header")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("the response has no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body (RFC 9112 §7.1); trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line has no end")?;
        let size = String::from_utf8_lossy(&rest[..end]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk is cut short")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk is cut short")?;
    }
}
