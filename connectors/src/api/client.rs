//! The client of a request: its address, and the key rate limits count it under.

use std::net::{IpAddr, Ipv6Addr};

/// The address of the client that sent a request (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The key rate limits count this client under: an IPv4 address as it is, an
    /// IPv6 address by its /64 (one subscriber's network: a host picks any address in
    /// it), an IPv4-mapped IPv6 address as the IPv4 address it maps.
    pub(crate) fn limit_key(self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let network = u128::from(v6) & !(u128::from(u64::MAX));
                    format!("{}/64", Ipv6Addr::from(network))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> String {
        ClientAddr(ip.parse().unwrap()).limit_key()
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.8"), "192.0.2.8");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::/64");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::1"), "::/64");
    }
}
