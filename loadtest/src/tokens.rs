//! HS256 tokens for servers with auth on: `--secret` mints them, `--token` is used as-is.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Shortest secret the server accepts (`JWT_SECRET_KEY`, docs/protocol.md §4).
pub const MIN_SECRET_LEN: usize = 32;
/// `sub` of every minted token.
pub const SUBJECT: &str = "bistream-loadtest";

/// A secret that cannot sign (usage error, exit 2).
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("--secret is {0} bytes; the server requires at least {MIN_SECRET_LEN}")]
    TooShort(usize),
    #[error("cannot sign a token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The tokens a run sends: one for subscribers (query `token=`), one for the publisher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub subscriber: Option<String>,
    pub publisher: Option<String>,
}

#[derive(Serialize)]
struct SubscriberClaims<'a> {
    sub: &'a str,
    locations: [&'a str; 1],
    iat: u64,
    exp: u64,
}

#[derive(Serialize)]
struct PublisherClaims<'a> {
    sub: &'a str,
    scope: &'a str,
    iat: u64,
    exp: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints both tokens with `secret`, valid for `ttl` from now.
pub fn mint(secret: &[u8], ttl: Duration) -> Result<Tokens, TokenError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(TokenError::TooShort(secret.len()));
    }
    let key = EncodingKey::from_secret(secret)?;
    let iat = now_secs();
    let exp = iat + ttl.as_secs().max(60);
    let header = Header::default(); // HS256
    let subscriber = encode(
        &header,
        &SubscriberClaims {
            sub: SUBJECT,
            locations: ["*"],
            iat,
            exp,
        },
        &key,
    )?;
    let publisher = encode(
        &header,
        &PublisherClaims {
            sub: SUBJECT,
            scope: "publish",
            iat,
            exp,
        },
        &key,
    )?;
    Ok(Tokens {
        subscriber: Some(subscriber),
        publisher: Some(publisher),
    })
}

/// `--token`: the same token for both roles.
pub fn given(token: &str) -> Tokens {
    Tokens {
        subscriber: Some(token.to_owned()),
        publisher: Some(token.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_tokens_carry_the_contract_claims() {
        let t = mint(SECRET, Duration::from_secs(600)).unwrap();
        let key = DecodingKey::from_secret(SECRET).unwrap();
        let v = Validation::new(Algorithm::HS256);
        let sub = decode::<serde_json::Value>(t.subscriber.as_deref().unwrap(), &key, &v).unwrap();
        assert_eq!(sub.header.alg, Algorithm::HS256);
        assert_eq!(sub.claims["locations"], serde_json::json!(["*"]));
        assert_eq!(sub.claims["sub"], SUBJECT);
        assert!(sub.claims["exp"].as_u64().unwrap() > now_secs() + 500);
        let publ = decode::<serde_json::Value>(t.publisher.as_deref().unwrap(), &key, &v).unwrap();
        assert_eq!(publ.claims["scope"], "publish");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            mint(b"short", Duration::from_secs(60)),
            Err(TokenError::TooShort(5))
        ));
    }
}
