//! A minimal HTTP/1.0 client for revocation data: CRLs (GET) and OCSP (POST)
//! over plain `http://`, as RFC 5280 and RFC 6960 publish them. The objects
//! fetched are signed, so transport security is not what protects them.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest response accepted (a CRL of a big CA is a few MiB).
const MAX_RESPONSE: u64 = 32 * 1024 * 1024;

/// `GET url`, returning the body of a 200 answer.
pub(crate) fn get(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    exchange(url, None, timeout)
}

/// `POST url` with `body` of `content_type`, returning the body of a 200 answer.
pub(crate) fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    exchange(url, Some((content_type, body)), timeout)
}

/// One request and its answer; `post` selects POST with a body, else GET.
fn exchange(url: &str, post: Option<(&str, &[u8])>, timeout: Duration) -> Result<Vec<u8>, String> {
    let (authority, path) =
        split_url(url).ok_or("only http://host[:port]/path addresses are supported")?;
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let socket = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    let io = |e: std::io::Error| e.to_string();
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut request = match post {
        Some((content_type, body)) => format!(
            "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        None => format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    };
    if let Some((_, body)) = post {
        request.extend_from_slice(body);
    }
    stream.write_all(&request).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut answer)
        .map_err(io)?;
    if answer.len() as u64 > MAX_RESPONSE {
        return Err("the answer exceeds 32 MiB".to_owned());
    }
    body_of(&answer)
}

/// Splits `http://authority/path` into authority and path (`/` when absent).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let valid = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .bytes()
            .chain(path.bytes())
            .all(|b| b.is_ascii_graphic());
    valid.then_some((authority, path))
}

/// The body of an HTTP answer with status 200 (honouring Content-Length).
fn body_of(answer: &[u8]) -> Result<Vec<u8>, String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete header")?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let body = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("the server answered \"{status}\""));
    }
    let length = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(n) if n > body.len() => Err(format!(
            "the answer ended after {} of {n} octets",
            body.len()
        )),
        Some(n) => Ok(body[..n].to_vec()),
        None => Ok(body.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_http_urls_only() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/ca.crl"),
            Some(("127.0.0.1:8080", "/ca.crl"))
        );
        assert_eq!(
            split_url("http://ocsp.example"),
            Some(("ocsp.example", "/"))
        );
        assert_eq!(split_url("https://ocsp.example/"), None);
        assert_eq!(split_url("http://user@host/"), None);
        assert_eq!(split_url("http://host/a b"), None);
        assert_eq!(split_url("http://host\r\nX: y/"), None);
        assert_eq!(split_url("ldap://host/cn=x"), None);
    }

    #[test]
    fn reads_bodies_of_200_answers() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(body_of(ok).unwrap(), b"abc");
        let unbounded = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nabc";
        assert_eq!(body_of(unbounded).unwrap(), b"abc");
        let missing = b"HTTP/1.0 404 Not Found\r\n\r\n";
        assert_eq!(
            body_of(missing).unwrap_err(),
            "the server answered \"HTTP/1.0 404 Not Found\""
        );
        let short = b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        assert_eq!(
            body_of(short).unwrap_err(),
            "the answer ended after 3 of 9 octets"
        );
        assert!(body_of(b"HTTP/1.0 200 OK\r\n").is_err());
    }
}
