//! The counting of `llm-ratelimit` (see `main.rs`), a library so that its tests can run it against a
//! real Redis.

pub mod counting;

/// A Redis client for `url` (`redis://`, or `rediss://` for TLS, with `user:password@` for AUTH). With
/// `ca_pem`, TLS trusts that CA (a private CA, as managed Redis services and self-run TLS use) instead
/// of the system's roots. Errors name what is wrong without repeating the URL (it may hold a password).
pub fn client(url: &str, ca_pem: Option<Vec<u8>>) -> Result<redis::Client, String> {
    // rustls needs one process-wide crypto provider; ring builds without cmake. A second install
    // (tests build several clients) is refused and harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let built = match ca_pem {
        Some(root_cert) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => redis::Client::open(url),
    };
    built.map_err(|err| format!("not a usable Redis URL ({:?})", err.kind()))
}

/// `redis://:secret@host:6379/0?x=y` as `redis://host:6379/0`: a log line carries neither the
/// user-info nor the query (`redis+unix:///sock?pass=...` puts the password there).
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.split(['?', '#']).next().unwrap_or("");
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{host}")
        }
        None => "(not a redis:// URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_a_log_line() {
        assert_eq!(
            redacted("rediss://user:s3cret@cache.example:6380/2"),
            "rediss://cache.example:6380/2"
        );
        assert_eq!(
            redacted("redis://:p@ss@host:6379"),
            "redis://host:6379",
            "an @ inside the password"
        );
        assert_eq!(redacted("redis://host"), "redis://host");
        assert_eq!(
            redacted("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(redacted("host:6379"), "(not a redis:// URL)");
    }
}
