//! Pieces of the command line kept out of `main.rs`.

pub mod dev;
pub mod ops;

use std::net::SocketAddr;

/// `--listen`: an IP address and a port. A host name is refused by name,
/// with the address to use instead: the server binds one address, and a
/// name may resolve to several, or to another one tomorrow.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match text.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => {
            let instead = match host {
                "localhost" => format!("127.0.0.1:{port} (or [::1]:{port})"),
                _ => format!("0.0.0.0:{port} for every interface, or 127.0.0.1:{port} for this machine only"),
            };
            Err(format!("`{host}` is a host name; --listen takes an IP address and a port: use {instead}"))
        }
        _ => Err("expected an IP address and a port, such as 127.0.0.1:8080 or 0.0.0.0:8080".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_addresses_and_names_a_host_name_as_such() {
        assert_eq!(parse_listen("127.0.0.1:8080").map(|a| a.port()), Ok(8080));
        assert!(parse_listen("[::1]:9000").is_ok());
        let err = parse_listen("localhost:8080").expect_err("a host name");
        assert!(err.contains("`localhost` is a host name") && err.contains("127.0.0.1:8080"), "{err}");
        let err = parse_listen("api.example.com:443").expect_err("a host name");
        assert!(err.contains("host name") && err.contains("0.0.0.0:443"), "{err}");
        assert!(parse_listen("8080").expect_err("no host").contains("127.0.0.1:8080"));
    }
}
