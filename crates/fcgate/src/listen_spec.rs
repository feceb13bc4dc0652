//! One `listen` entry as written in the config file or on the command line:
//! `ADDR [tls] [proxy_protocol]`, e.g. `"0.0.0.0:443 tls"` or `"10.0.0.5:8081 proxy_protocol"`.
//! Its own module because both the command line (`cli.rs`) and the config (`config.rs`) parse
//! it, and the config already depends on the command line.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where fcgate accepts client connections, and what those connections start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenSpec {
    /// The address to bind: IPv4:PORT or bracketed IPv6, `[::]:443`.
    pub address: SocketAddr,
    /// Connections speak TLS (`[tls]` has the certificates); ALPN offers h2 and http/1.1.
    pub tls: bool,
    /// Connections start with a PROXY protocol header (v1 or v2) from a load balancer, which
    /// names the real client.
    pub proxy_protocol: bool,
}

impl ListenSpec {
    /// A plain HTTP listener on `address`.
    pub fn plain(address: SocketAddr) -> ListenSpec {
        ListenSpec {
            address,
            tls: false,
            proxy_protocol: false,
        }
    }
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut words = text.split_whitespace();
        let Some(address) = words.next() else {
            return Err("empty: expected an address such as \"127.0.0.1:8080\"".to_owned());
        };
        let address: SocketAddr = address.parse().map_err(|_| {
            format!(
                "`{address}` is not IPv4:PORT or [IPv6]:PORT (a host name is not accepted: \
                 bind to the address it stands for)"
            )
        })?;
        let mut spec = ListenSpec::plain(address);
        for word in words {
            let flag = match word {
                "tls" | "ssl" => &mut spec.tls,
                "proxy_protocol" => &mut spec.proxy_protocol,
                other => {
                    return Err(format!(
                        "`{other}` after the address is not `tls` or `proxy_protocol`"
                    ))
                }
            };
            if *flag {
                return Err(format!("`{word}` is given twice"));
            }
            *flag = true;
        }
        Ok(spec)
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.address)?;
        if self.tls {
            formatter.write_str(" tls")?;
        }
        if self.proxy_protocol {
            formatter.write_str(" proxy_protocol")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_address_alone_is_a_plain_listener() {
        let spec: ListenSpec = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(spec, ListenSpec::plain("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(spec.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn flags_follow_the_address_in_any_order() {
        let spec: ListenSpec = "[::]:443  proxy_protocol tls".parse().unwrap();
        assert!(spec.tls && spec.proxy_protocol);
        assert_eq!(spec.address, "[::]:443".parse().unwrap());
        assert_eq!(spec.to_string(), "[::]:443 tls proxy_protocol");
        // nginx spells it `ssl`.
        assert!("0.0.0.0:443 ssl".parse::<ListenSpec>().unwrap().tls);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            ("", "empty"),
            ("localhost:80", "`localhost:80` is not"),
            ("0.0.0.0:443 http2", "`http2` after the address"),
            ("0.0.0.0:443 tls tls", "`tls` is given twice"),
        ] {
            let error = text.parse::<ListenSpec>().unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
