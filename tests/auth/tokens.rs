//! Tokens as the tests sign them: the server's secrets and HS256 helpers.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The server's current secret in most tests.
pub const SECRET: &str = "current-secret-0123456789abcdef-0123456789";
/// The previous secret of a rotation.
pub const PREVIOUS: &str = "previous-secret-0123456789abcdef-012345678";
/// A secret the server never knows.
pub const OTHER: &str = "unrelated-secret-0123456789abcdef-01234567";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn sign_with(alg: Algorithm, secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("sign")
}

/// HS256 with the server's current secret.
pub fn sign(claims: &Value) -> String {
    sign_with(Algorithm::HS256, SECRET, claims)
}

/// A subscriber token for `locations`, valid for ten minutes.
pub fn sub_token(locations: &[&str]) -> String {
    sign(&json!({"sub": "test", "locations": locations, "exp": now() + 600}))
}

pub fn pub_token(extra: Value) -> String {
    let mut claims = json!({"sub": "backend", "scope": "publish", "exp": now() + 600});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    sign(&claims)
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// `alg: none`: a header and payload with an empty signature, as an attacker writes it.
pub fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}
