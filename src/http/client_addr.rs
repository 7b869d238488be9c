//! Who the client is: the direct peer, or — only when the peer is a trusted
//! proxy — the address the proxy names in X-Forwarded-For / X-Real-IP. A client
//! that sends these headers itself, from an untrusted address, gains nothing.

use std::net::IpAddr;

use ipnet::IpNet;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// `peer`: the TCP peer, `None` for a Unix-socket peer (a local proxy such as
/// nginx; the socket file's mode decides who may connect, so it is trusted).
pub fn client_ip(
    peer: Option<IpAddr>,
    x_forwarded_for: Option<&str>,
    x_real_ip: Option<&str>,
    proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer_trusted = match peer {
        Some(ip) => trusted(ip, proxies),
        None => true,
    };
    if !peer_trusted {
        return peer;
    }
    if let Some(xff) = x_forwarded_for {
        // Walk from the right: each hop appends the address it saw; the first
        // address not of a trusted proxy is the client.
        let mut candidate = peer;
        for part in xff.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                break;
            };
            candidate = Some(ip);
            if !trusted(ip, proxies) {
                break;
            }
        }
        return candidate;
    }
    if let Some(ip) = x_real_ip.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
        return Some(ip);
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peers_cannot_forge() {
        let p = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(
                Some(ip("203.0.113.9")),
                Some("1.2.3.4"),
                Some("5.6.7.8"),
                &p
            ),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(Some(ip("127.0.0.1")), Some("1.2.3.4"), None, &[]),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn trusted_proxies_name_the_client() {
        let p = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        assert_eq!(
            client_ip(Some(ip("127.0.0.1")), Some("198.51.100.7"), None, &p),
            Some(ip("198.51.100.7"))
        );
        // A forged leftmost entry is skipped: the rightmost untrusted hop wins.
        assert_eq!(
            client_ip(
                Some(ip("10.1.1.1")),
                Some("6.6.6.6, 198.51.100.7, 10.2.2.2"),
                None,
                &p
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(Some(ip("10.1.1.1")), None, Some(" 198.51.100.8 "), &p),
            Some(ip("198.51.100.8"))
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(Some(ip("10.1.1.1")), Some("junk, 10.3.3.3"), None, &p),
            Some(ip("10.3.3.3"))
        );
        assert_eq!(
            client_ip(Some(ip("10.1.1.1")), Some("junk"), None, &p),
            Some(ip("10.1.1.1"))
        );
    }

    #[test]
    fn unix_socket_peers_are_local_proxies() {
        assert_eq!(
            client_ip(None, Some("198.51.100.7"), None, &[]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client_ip(None, None, None, &[]), None);
    }
}
