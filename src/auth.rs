//! Token checks for the WebSocket handshake and the publish API (docs/protocol.md §4).
//!
//! Pure: no I/O, no logging, no state of its own. The only process-wide effect is
//! that [`Verifier::new`] and [`mint`] make sure jsonwebtoken has a crypto backend
//! (see `ensure_crypto_provider`); the clock is read by jsonwebtoken itself when it
//! checks `exp` / `nbf`.
//!
//! What the caller does with each outcome:
//! - [`Verifier::verify`] fails: HTTP 401 with `{"error": code(), "message": message()}`.
//! - The token verifies but [`Claims::grants_subscription`] / [`Claims::may_publish`]
//!   say no: HTTP 403.
//! - [`SecretError`] from [`Verifier::new`]: refuse to start.

use std::time::Duration;

use base64::Engine as _;

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest accepted HMAC secret, in bytes (docs/protocol.md §4). HS256 keys shorter than
/// the 32-byte hash output are brute-forceable offline from a single token.
pub const MIN_SECRET_LEN: usize = 32;

/// Largest accepted clock-skew leeway. Beyond this the `exp` check is close to
/// meaningless, and jsonwebtoken computes `now - leeway` in plain `u64`, which a
/// huge leeway would underflow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(3600);

/// Longest token we hand to the JWT library. The whole request head is limited to
/// 8 KiB, so anything longer cannot be legitimate; refusing early bounds the work an
/// unauthenticated client can cause.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a secret (or the verifier configuration) was refused. The server refuses to
/// start on any of these. Messages name lengths only, never key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `JWT_SECRET_KEY` is shorter than [`MIN_SECRET_LEN`]; an empty value lands here too.
    #[error(
        "the JWT secret (JWT_SECRET_KEY) is {len} bytes; at least {MIN_SECRET_LEN} are required"
    )]
    TooShort {
        /// Length of the refused secret.
        len: usize,
    },
    /// `JWT_SECRET_KEY_PREVIOUS` is set but shorter than [`MIN_SECRET_LEN`].
    #[error(
        "the previous JWT secret (JWT_SECRET_KEY_PREVIOUS) is {len} bytes; at least {MIN_SECRET_LEN} are required"
    )]
    PreviousTooShort {
        /// Length of the refused secret.
        len: usize,
    },
    /// The leeway is larger than [`MAX_LEEWAY`].
    #[error("JWT leeway of {secs}s is larger than the maximum of {}s", MAX_LEEWAY.as_secs())]
    LeewayTooLarge {
        /// The refused leeway, in whole seconds.
        secs: u64,
    },
    /// jsonwebtoken has no usable crypto backend (a build problem, not a config one).
    #[error("no jsonwebtoken crypto provider is available")]
    NoCryptoProvider,
    /// jsonwebtoken refused the key; not expected for a key of valid length.
    #[error("the JWT library refused the secret")]
    KeyRejected,
}

/// Why a token was refused. Every variant maps to HTTP 401; neither [`AuthError::code`]
/// nor [`AuthError::message`] (nor `Display` / `Debug`) ever contains any part of the
/// token, so they are safe to send to the client and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token at all (no header, no `token=`, or an empty value).
    #[error("{}", self.message())]
    Missing,
    /// Not a JWT: wrong shape, bad base64, bad JSON, unsupported `crit` header, too long.
    #[error("{}", self.message())]
    Malformed,
    /// Signed with neither the current nor the previous secret.
    #[error("{}", self.message())]
    BadSignature,
    /// `alg` is not HS256 (including `none`).
    #[error("{}", self.message())]
    WrongAlgorithm,
    /// `exp` + leeway is in the past.
    #[error("{}", self.message())]
    Expired,
    /// `nbf` - leeway is in the future.
    #[error("{}", self.message())]
    NotYetValid,
    /// The token has no `exp`.
    #[error("{}", self.message())]
    MissingExp,
    /// A claim has the wrong type (`exp` as a string or float, `locations` not a list of
    /// strings, ...) or an `aud` / `iss` we cannot accept.
    #[error("{}", self.message())]
    InvalidClaims,
}

impl AuthError {
    /// Machine-readable code for the `error` field of the 401 body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Malformed => "invalid_token",
            Self::BadSignature => "invalid_signature",
            Self::WrongAlgorithm => "unsupported_algorithm",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::MissingExp => "token_missing_exp",
            Self::InvalidClaims => "invalid_claims",
        }
    }

    /// Human sentence for the `message` field of the 401 body.
    #[must_use]
    pub fn message(&self) -> &'static str {
        match self {
            Self::Missing => {
                "a token is required (Authorization: Bearer header or token query parameter)"
            }
            Self::Malformed => "the token is not a well-formed JWT",
            Self::BadSignature => "the token signature is not valid",
            Self::WrongAlgorithm => "the token must be signed with HS256",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet (nbf)",
            Self::MissingExp => "the token has no exp claim",
            Self::InvalidClaims => "the token claims are invalid",
        }
    }
}

/// The claims bistream reads. Unknown claims (`iat`, `jti`, ...) are ignored.
/// A claim set to JSON `null` counts as absent.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Claims {
    /// Who the token was issued to; informational only (logs, connection info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Location ids the token grants, or `["*"]` for all. Subscribers need it; on a
    /// publisher token it restricts where it may publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<String>>,
    /// Channel ids the token grants; absent means all six.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Space-separated scopes; `publish` makes a publisher token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Expiry, Unix seconds. Integers only: floats and strings are refused.
    pub exp: u64,
    /// Not-before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

const WILDCARD: &str = "*";

/// `list` absent: everything. Present: `item` or `*` must be in it. A wildcard request
/// (`item == "*"`) is only covered by a wildcard grant, never by a list of names.
fn list_allows(list: Option<&[String]>, item: &str) -> bool {
    match list {
        None => true,
        Some(list) => list.iter().any(|g| g == WILDCARD || g == item),
    }
}

impl Claims {
    /// Subscriber grant: `locations` must be present and contain `location` or `"*"`;
    /// `channels` absent grants all six, otherwise it must contain `channel` (or `"*"`,
    /// for symmetry with `locations` and with [`Claims::may_publish`]).
    #[must_use]
    pub fn grants_subscription(&self, channel: &str, location: &str) -> bool {
        // Unlike channels, an absent `locations` grants nothing: a token that forgot to
        // name its tenant must not see every tenant.
        self.locations.is_some()
            && list_allows(self.locations.as_deref(), location)
            && list_allows(self.channels.as_deref(), channel)
    }

    /// `scope` is a space-separated list containing `publish`.
    #[must_use]
    pub fn is_publisher(&self) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_ascii_whitespace().any(|s| s == "publish"))
    }

    /// Whether this token may publish to (`channel`, `location`); either may be `"*"`.
    /// False unless [`Claims::is_publisher`], so a forgotten scope check cannot turn a
    /// subscriber token into a publisher. `locations` / `channels`, when present,
    /// restrict the target; a `"*"` target needs the claim absent or containing `"*"`.
    #[must_use]
    pub fn may_publish(&self, channel: &str, location: &str) -> bool {
        self.is_publisher()
            && list_allows(self.locations.as_deref(), location)
            && list_allows(self.channels.as_deref(), channel)
    }

    /// `exp`, Unix seconds. Close the connection at `exp + leeway`; use
    /// `saturating_add`, since `exp` may be as large as `u64::MAX`.
    #[must_use]
    pub fn expires_at(&self) -> u64 {
        self.exp
    }
}

/// Make sure jsonwebtoken has a crypto provider, so that `decode` / `encode` can never
/// hit its "no provider" panic. With only `rust_crypto` enabled, jsonwebtoken picks it
/// by itself and this is a no-op; if feature unification ever enables `aws_lc_rs` too,
/// jsonwebtoken picks nothing and we install the RustCrypto one. jsonwebtoken keeps
/// the provider in a `OnceLock`, so concurrent callers are safe without our own `Once`.
fn ensure_crypto_provider() -> Result<(), SecretError> {
    if CryptoProvider::try_get_default().is_some() {
        return Ok(());
    }
    // An Err means another thread installed one first, which is just as good.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    CryptoProvider::try_get_default()
        .map(|_| ())
        .ok_or(SecretError::NoCryptoProvider)
}

/// Holds the HMAC keys and the validation rules. Build one at start-up and share it
/// (it is `Send + Sync`); `Debug` never prints key bytes.
#[derive(Clone)]
pub struct Verifier {
    /// `JWT_SECRET_KEY`: tried first.
    current: DecodingKey,
    /// `JWT_SECRET_KEY_PREVIOUS`: still accepted during a key rotation, tried only when
    /// the current key's signature check fails.
    previous: Option<DecodingKey>,
    /// Pinned to HS256, `exp` required, `nbf` checked; built once, not per token.
    validation: Validation,
    /// Effective leeway (whole seconds), returned to the caller for its expiry timer so
    /// the handshake check and the close timer agree.
    leeway: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &"HS256")
            .field("has_previous_key", &self.previous.is_some())
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// `current`: `JWT_SECRET_KEY` bytes; `previous`: `JWT_SECRET_KEY_PREVIOUS`
    /// (verification only, for rotation). Both must be at least [`MIN_SECRET_LEN`].
    /// JWT times are whole seconds, so the sub-second part of `leeway` is dropped;
    /// [`Verifier::leeway`] returns what is actually applied.
    ///
    /// # Errors
    /// A [`SecretError`] when a secret is too short, the leeway exceeds [`MAX_LEEWAY`],
    /// or jsonwebtoken has no crypto backend. The server must not start.
    pub fn new(
        current: &[u8],
        previous: Option<&[u8]>,
        leeway: Duration,
    ) -> Result<Self, SecretError> {
        if current.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: current.len() });
        }
        if let Some(len) = previous
            .map(<[u8]>::len)
            .filter(|&len| len < MIN_SECRET_LEN)
        {
            return Err(SecretError::PreviousTooShort { len });
        }
        if leeway > MAX_LEEWAY {
            return Err(SecretError::LeewayTooLarge {
                secs: leeway.as_secs(),
            });
        }
        ensure_crypto_provider()?;

        let key =
            |secret: &[u8]| DecodingKey::from_secret(secret).map_err(|_| SecretError::KeyRejected);
        let current = key(current)?;
        let previous = previous.map(key).transpose()?;

        let leeway_secs = leeway.as_secs();
        // Validation::new already requires `exp`, validates it and pins the algorithm
        // list; `nbf` is off by default in jsonwebtoken and the contract wants it.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);

        Ok(Self {
            current,
            previous,
            validation,
            leeway: Duration::from_secs(leeway_secs),
        })
    }

    /// Verify `token` (HS256 only, `exp` required, `nbf` checked when present, leeway
    /// applied to both), trying the current key and then the previous one.
    ///
    /// # Errors
    /// An [`AuthError`] (always HTTP 401) saying why the token was refused. A token that
    /// verifies may still not grant the request: check the returned [`Claims`] (403).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        // jsonwebtoken reports `alg: none` (not a variant of its Algorithm enum) as a
        // JSON error, indistinguishable from garbage; read `alg` ourselves first so
        // every non-HS256 token gets the same, precise answer.
        check_algorithm(token)?;

        let claims = match self.decode(token, &self.current) {
            Ok(claims) => claims,
            // Claims are only validated after the signature has verified, so only a
            // signature failure can mean "signed with the previous key"; an expired
            // token signed with the current key must stay `Expired`.
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => match &self.previous {
                Some(previous) => self
                    .decode(token, previous)
                    .map_err(|e| map_jwt_error(e.kind(), token))?,
                None => return Err(AuthError::BadSignature),
            },
            Err(e) => return Err(map_jwt_error(e.kind(), token)),
        };
        serde_json::from_value(claims).map_err(|_| AuthError::InvalidClaims)
    }

    /// Claims are decoded as a JSON value first: decoding straight into `Claims` would
    /// fail on a missing or odd `exp` before jsonwebtoken's own checks run, and every
    /// such token would look merely "malformed".
    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
    ) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation).map(|d| d.claims)
    }

    /// The leeway applied to `exp` and `nbf`, in whole seconds.
    #[must_use]
    pub fn leeway(&self) -> Duration {
        self.leeway
    }
}

fn map_jwt_error(kind: &ErrorKind, token: &str) -> AuthError {
    match kind {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => exp_problem(token),
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidSubject => AuthError::InvalidClaims,
        // Key and provider errors cannot come from a token once the key passed
        // `Verifier::new`; `ErrorKind` is non_exhaustive. Either way the token was not
        // verified, and "bad signature" is the honest answer.
        _ => AuthError::BadSignature,
    }
}

/// jsonwebtoken's required-claim check counts an `exp` it cannot parse (a string, a
/// negative number, `true`) as absent, so "missing" may really be "wrong type". Claims
/// are only validated after the signature verified, so this reads authenticated data;
/// and it runs on the error path only.
fn exp_problem(token: &str) -> AuthError {
    #[derive(Deserialize)]
    struct ExpOnly {
        #[serde(default)]
        exp: Option<serde_json::Value>,
    }
    match jsonwebtoken::dangerous::insecure_decode_claims::<ExpOnly>(token) {
        Ok(ExpOnly { exp: None }) => AuthError::MissingExp,
        _ => AuthError::InvalidClaims,
    }
}

/// Only the field we need; `alg` given twice is a serde error, as in jsonwebtoken's
/// own header type, so the two parsers cannot disagree about which `alg` counts.
#[derive(Deserialize)]
struct AlgOnly {
    alg: String,
}

fn check_algorithm(token: &str) -> Result<(), AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    // Unpadded base64url (RFC 7515 §2). Only the `alg` pre-check: the real
    // decode is jsonwebtoken's, so this may only ever refuse, never accept.
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: AlgOnly = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.alg == "HS256" {
        Ok(())
    } else {
        Err(AuthError::WrongAlgorithm)
    }
}

/// What `bistream token` asks for.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// `sub` claim.
    pub sub: String,
    /// Locations granted. Required (non-empty) for a subscriber token; on a publisher
    /// token an empty list means "publish anywhere" and writes no `locations` claim.
    pub locations: Vec<String>,
    /// Channels granted; `None` writes no claim (all six).
    pub channels: Option<Vec<String>>,
    /// Adds `"scope":"publish"`.
    pub publisher: bool,
    /// Lifetime; `exp = now_unix + ttl` (whole seconds, at least one).
    pub ttl: Duration,
    /// Issue time, Unix seconds; a parameter so that minting stays pure and testable.
    pub now_unix: u64,
}

/// Why [`mint`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The secret (or the crypto backend) is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// `ttl` is under one second, or `now_unix + ttl` overflows.
    #[error("the token lifetime must be at least 1s, and now + lifetime must fit in u64 seconds")]
    InvalidTtl,
    /// The token would grant nothing: a subscriber token without locations, or an
    /// empty channel list.
    #[error("the token would grant nothing: give at least one location (and channel, if any are listed)")]
    GrantsNothing,
    /// jsonwebtoken failed to sign (not expected with a valid key).
    #[error("signing the token failed")]
    Signing,
}

/// What a minted token carries; `iat` is not read by bistream but helps whoever
/// audits a token later.
#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    locations: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    iat: u64,
    exp: u64,
}

/// Mint an HS256 token for the `bistream token` subcommand.
///
/// # Errors
/// A [`MintError`] for a short secret, a lifetime under one second, or a token that
/// would grant nothing.
pub fn mint(secret: &[u8], req: &MintRequest) -> Result<String, MintError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort { len: secret.len() }.into());
    }
    let ttl = req.ttl.as_secs();
    if ttl == 0 {
        return Err(MintError::InvalidTtl);
    }
    let exp = req.now_unix.checked_add(ttl).ok_or(MintError::InvalidTtl)?;
    if (!req.publisher && req.locations.is_empty())
        || req.channels.as_ref().is_some_and(Vec::is_empty)
    {
        return Err(MintError::GrantsNothing);
    }
    ensure_crypto_provider()?;

    let claims = MintClaims {
        sub: &req.sub,
        locations: (!req.locations.is_empty()).then_some(req.locations.as_slice()),
        channels: req.channels.as_deref(),
        scope: req.publisher.then_some("publish"),
        iat: req.now_unix,
        exp,
    };
    let key = EncodingKey::from_secret(secret).map_err(|_| SecretError::KeyRejected)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|_| MintError::Signing)
}

/// The token of an `Authorization` header value: `Bearer <token>`, scheme matched
/// case-insensitively (RFC 7235), surrounding whitespace ignored. `None` when the value
/// is not a bearer credential (other scheme, no separator, not UTF-8). `Bearer` with
/// nothing after it gives `Some("")`, which [`Verifier::verify`] answers with
/// `Missing`: the header was sent, so it wins over any `token=` parameter.
#[must_use]
pub fn bearer_token(header_value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(header_value)
        .ok()?
        .trim_matches([' ', '\t']);
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let rest = value.get(6..)?;
    // "Bearerxyz" is a different scheme name, not "Bearer" + "xyz".
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some(rest.trim_matches([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::get_current_timestamp;
    use serde_json::{json, Value};

    const SECRET: &[u8] = b"kX9vQ2mL8pR4tW6yB1nC3dF5gH7jK0sZ-cur";
    const PREVIOUS: &[u8] = b"Pa8sDf3gHj6kLz1xCv4bNm7qWe0rTy5u-old";
    const OTHER: &[u8] = b"Gt5yHu8iJo2pKl4zXc6vBn9mQw1eRt3y-oth";
    const LEEWAY: Duration = Duration::from_secs(5);

    fn verifier() -> Verifier {
        Verifier::new(SECRET, None, LEEWAY).expect("valid test secret")
    }

    fn now() -> u64 {
        get_current_timestamp()
    }

    fn sign_with(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
        let key = EncodingKey::from_secret(secret).expect("non-empty secret");
        jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("encodes")
    }

    fn sign(claims: &Value) -> String {
        sign_with(Algorithm::HS256, SECRET, claims)
    }

    fn b64url_encode(data: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    /// A token with an arbitrary header and payload and a made-up signature.
    fn handmade(header: &Value, claims: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes()),
            signature
        )
    }

    fn subscriber_claims() -> Value {
        json!({
            "sub": "user-1",
            "locations": ["loc-1", "loc-2"],
            "channels": ["dashboard", "ai-concierge"],
            "exp": now() + 600,
        })
    }

    #[test]
    fn good_token_verifies() {
        let claims = verifier()
            .verify(&sign(&subscriber_claims()))
            .expect("valid");
        assert_eq!(claims.sub.as_deref(), Some("user-1"));
        assert!(claims.grants_subscription("dashboard", "loc-1"));
        assert!(claims.grants_subscription("ai-concierge", "loc-2"));
        assert!(!claims.is_publisher());
    }

    #[test]
    fn wrong_location_is_not_granted() {
        let claims = verifier()
            .verify(&sign(&subscriber_claims()))
            .expect("valid");
        assert!(!claims.grants_subscription("dashboard", "loc-3"));
        assert!(!claims.grants_subscription("dashboard", "LOC-1"));
        assert!(!claims.grants_subscription("dashboard", "*"));
    }

    #[test]
    fn wrong_channel_is_not_granted() {
        let claims = verifier()
            .verify(&sign(&subscriber_claims()))
            .expect("valid");
        assert!(!claims.grants_subscription("bot-performance", "loc-1"));
    }

    #[test]
    fn absent_channels_grant_all_six() {
        let token = sign(&json!({"locations": ["loc-1"], "exp": now() + 600}));
        let claims = verifier().verify(&token).expect("valid");
        for channel in [
            "dashboard",
            "revenue-intelligence",
            "bot-performance",
            "business-intelligence",
            "ai-concierge",
            "analytics-advanced",
        ] {
            assert!(claims.grants_subscription(channel, "loc-1"), "{channel}");
        }
        assert!(!claims.grants_subscription("dashboard", "loc-2"));
    }

    #[test]
    fn empty_or_null_grants() {
        let v = verifier();
        let no_locations = v
            .verify(&sign(&json!({"exp": now() + 600})))
            .expect("valid");
        assert!(!no_locations.grants_subscription("dashboard", "loc-1"));
        let null_locations = v
            .verify(&sign(&json!({"locations": null, "exp": now() + 600})))
            .expect("valid");
        assert!(!null_locations.grants_subscription("dashboard", "loc-1"));
        let empty_channels = v
            .verify(&sign(
                &json!({"locations": ["*"], "channels": [], "exp": now() + 600}),
            ))
            .expect("valid");
        assert!(!empty_channels.grants_subscription("dashboard", "loc-1"));
    }

    #[test]
    fn wildcard_locations_grant_every_location() {
        let token =
            sign(&json!({"locations": ["*"], "channels": ["dashboard"], "exp": now() + 600}));
        let claims = verifier().verify(&token).expect("valid");
        assert!(claims.grants_subscription("dashboard", "loc-1"));
        assert!(claims.grants_subscription("dashboard", "anything"));
        assert!(!claims.grants_subscription("bot-performance", "loc-1"));
        let all_channels =
            sign(&json!({"locations": ["loc-1"], "channels": ["*"], "exp": now() + 600}));
        let claims = verifier().verify(&all_channels).expect("valid");
        assert!(claims.grants_subscription("analytics-advanced", "loc-1"));
    }

    #[test]
    fn wrong_secret_is_refused() {
        let token = sign_with(Algorithm::HS256, OTHER, &subscriber_claims());
        assert_eq!(
            verifier().verify(&token).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let token = sign(&subscriber_claims());
        let sig = token.rsplit('.').next().expect("three parts");
        let header = token.split('.').next().expect("three parts");
        let mut claims = subscriber_claims();
        claims["locations"] = json!(["*"]);
        let forged = format!(
            "{header}.{}.{sig}",
            b64url_encode(claims.to_string().as_bytes())
        );
        assert_eq!(
            verifier().verify(&forged).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = json!({"alg": "none", "typ": "JWT"});
        for sig in ["", "c2ln"] {
            let token = handmade(&header, &subscriber_claims(), sig);
            assert_eq!(
                verifier().verify(&token).unwrap_err(),
                AuthError::WrongAlgorithm
            );
        }
        // The attacker's variant: capitalisation tricks.
        let token = handmade(&json!({"alg": "None"}), &subscriber_claims(), "");
        assert_eq!(
            verifier().verify(&token).unwrap_err(),
            AuthError::WrongAlgorithm
        );
        let token = handmade(&json!({"alg": "hs256"}), &subscriber_claims(), "");
        assert_eq!(
            verifier().verify(&token).unwrap_err(),
            AuthError::WrongAlgorithm
        );
    }

    #[test]
    fn other_hmac_algorithms_with_the_right_secret_are_refused() {
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign_with(alg, SECRET, &subscriber_claims());
            assert_eq!(
                verifier().verify(&token).unwrap_err(),
                AuthError::WrongAlgorithm
            );
        }
    }

    #[test]
    fn asymmetric_algorithms_are_refused() {
        for alg in ["RS256", "ES256", "PS256", "EdDSA"] {
            let token = handmade(
                &json!({"alg": alg, "typ": "JWT"}),
                &subscriber_claims(),
                "c2ln",
            );
            assert_eq!(
                verifier().verify(&token).unwrap_err(),
                AuthError::WrongAlgorithm,
                "{alg}"
            );
        }
    }

    #[test]
    fn header_without_alg_is_malformed() {
        let token = handmade(&json!({"typ": "JWT"}), &subscriber_claims(), "c2ln");
        assert_eq!(verifier().verify(&token).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn expiry_respects_leeway() {
        let v = verifier();
        let beyond = sign(&json!({"locations": ["*"], "exp": now() - 60}));
        assert_eq!(v.verify(&beyond).unwrap_err(), AuthError::Expired);
        let within = sign(&json!({"locations": ["*"], "exp": now() - 2}));
        assert!(v.verify(&within).is_ok());
    }

    #[test]
    fn not_before_respects_leeway() {
        let v = verifier();
        let beyond = sign(&json!({"locations": ["*"], "exp": now() + 600, "nbf": now() + 60}));
        assert_eq!(v.verify(&beyond).unwrap_err(), AuthError::NotYetValid);
        let within = sign(&json!({"locations": ["*"], "exp": now() + 600, "nbf": now() + 2}));
        let claims = v.verify(&within).expect("within leeway");
        assert!(claims.nbf.is_some());
        let past = sign(&json!({"locations": ["*"], "exp": now() + 600, "nbf": now() - 60}));
        assert!(v.verify(&past).is_ok());
    }

    #[test]
    fn zero_leeway_is_strict() {
        let v = Verifier::new(SECRET, None, Duration::ZERO).expect("valid");
        let token = sign(&json!({"locations": ["*"], "exp": now() - 2}));
        assert_eq!(v.verify(&token).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn missing_exp_is_refused() {
        let token = sign(&json!({"locations": ["*"]}));
        assert_eq!(
            verifier().verify(&token).unwrap_err(),
            AuthError::MissingExp
        );
        let token = sign(&json!({"locations": ["*"], "exp": null}));
        assert_eq!(
            verifier().verify(&token).unwrap_err(),
            AuthError::MissingExp
        );
    }

    #[test]
    fn odd_exp_and_nbf_types_are_refused_without_panic() {
        let exp = now() + 600;
        let cases = [
            json!({"exp": exp.to_string()}),
            json!({"exp": exp as f64 + 0.5}),
            json!({"exp": exp as f64}),
            json!({"exp": -1}),
            json!({"exp": true}),
            json!({"exp": 1e300}),
            json!({"exp": exp, "nbf": "0"}),
            json!({"exp": exp, "nbf": 0.5}),
        ];
        for claims in cases {
            let err = verifier().verify(&sign(&claims)).unwrap_err();
            assert_eq!(err, AuthError::InvalidClaims, "{claims}");
        }
        // A container-valued `exp` derails jsonwebtoken's own claim parser, which then
        // reports a JSON error; still a 401, just a less precise one.
        for claims in [json!({"exp": [exp]}), json!({"exp": {"at": exp}})] {
            let err = verifier().verify(&sign(&claims)).unwrap_err();
            assert!(
                matches!(err, AuthError::Malformed | AuthError::InvalidClaims),
                "{claims}: {err:?}"
            );
        }
    }

    #[test]
    fn huge_exp_is_accepted_and_exposed() {
        let token = sign(&json!({"locations": ["*"], "exp": u64::MAX}));
        let claims = verifier().verify(&token).expect("valid");
        assert_eq!(claims.expires_at(), u64::MAX);
    }

    #[test]
    fn odd_claim_types_are_invalid_claims() {
        let exp = now() + 600;
        let cases = [
            json!({"exp": exp, "locations": "loc-1"}),
            json!({"exp": exp, "locations": [1, 2]}),
            json!({"exp": exp, "channels": "dashboard"}),
            json!({"exp": exp, "scope": ["publish"]}),
            json!({"exp": exp, "sub": 42}),
        ];
        for claims in cases {
            let err = verifier().verify(&sign(&claims)).unwrap_err();
            assert_eq!(err, AuthError::InvalidClaims, "{claims}");
        }
    }

    #[test]
    fn audience_we_cannot_check_is_refused() {
        let token = sign(&json!({"locations": ["*"], "exp": now() + 600, "aud": "someone"}));
        assert_eq!(
            verifier().verify(&token).unwrap_err(),
            AuthError::InvalidClaims
        );
    }

    #[test]
    fn extra_claims_are_tolerated() {
        let token = sign(&json!({
            "locations": ["loc-1"], "exp": now() + 600, "iat": now(), "jti": "x",
            "iss": "backend", "custom": {"nested": [1, 2, 3]},
        }));
        assert!(verifier().verify(&token).is_ok());
    }

    #[test]
    fn garbage_is_malformed() {
        let v = verifier();
        let valid = sign(&subscriber_claims());
        let four_parts = format!("{valid}.extra");
        // Padding is not part of JWT base64url; only the signature is decoded before
        // the HMAC check, so that is where padding shows up as malformed.
        let padded = format!("{valid}=");
        let cases = [
            "garbage",
            "a.b",
            "a.b.c",
            "..",
            "...",
            " ",
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9.!!!.c2ln!",
            "\u{0}\u{1}.\u{2}.\u{3}",
            "é.é.é",
            four_parts.as_str(),
            padded.as_str(),
        ];
        for token in cases {
            assert_eq!(
                v.verify(token).unwrap_err(),
                AuthError::Malformed,
                "{token:?}"
            );
        }
        // The payload must be a JSON object.
        for payload in [json!([1]), json!("x"), json!(null)] {
            let key = EncodingKey::from_secret(SECRET).expect("key");
            let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &payload, &key)
                .expect("encodes");
            assert_eq!(
                v.verify(&token).unwrap_err(),
                AuthError::Malformed,
                "{payload}"
            );
        }
    }

    #[test]
    fn junk_payload_behind_a_good_header_fails_the_signature_first() {
        // jsonwebtoken checks the HMAC before it decodes the payload, so unauthenticated
        // payload bytes never reach the JSON parser.
        for token in ["eyJhbGciOiJIUzI1NiJ9..", "eyJhbGciOiJIUzI1NiJ9.!!!.c2ln"] {
            assert_eq!(
                verifier().verify(token).unwrap_err(),
                AuthError::BadSignature
            );
        }
    }

    #[test]
    fn duplicated_claims_cannot_smuggle_an_exp() {
        // Signed by us, so only the claim parsing is under test: two `exp` keys must not
        // let one parser see the expired value and another the live one.
        let header = b64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = format!(
            r#"{{"locations":["*"],"exp":{},"exp":{}}}"#,
            now() - 600,
            now() + 600
        );
        let message = format!("{header}.{}", b64url_encode(payload.as_bytes()));
        let key = EncodingKey::from_secret(SECRET).expect("key");
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("signs");
        let token = format!("{message}.{sig}");
        assert_eq!(verifier().verify(&token).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn oversized_token_is_malformed() {
        let mut claims = subscriber_claims();
        claims["pad"] = json!("x".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            verifier().verify(&sign(&claims)).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn unsupported_crit_header_is_malformed() {
        let key = EncodingKey::from_secret(SECRET).expect("key");
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-ext".to_owned()]);
        let token = jsonwebtoken::encode(&header, &subscriber_claims(), &key).expect("encodes");
        assert_eq!(verifier().verify(&token).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn empty_token_is_missing() {
        assert_eq!(verifier().verify("").unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn previous_secret_is_accepted_during_rotation() {
        let v = Verifier::new(SECRET, Some(PREVIOUS), LEEWAY).expect("valid");
        let claims = subscriber_claims();
        assert!(v
            .verify(&sign_with(Algorithm::HS256, SECRET, &claims))
            .is_ok());
        assert!(v
            .verify(&sign_with(Algorithm::HS256, PREVIOUS, &claims))
            .is_ok());
        assert_eq!(
            v.verify(&sign_with(Algorithm::HS256, OTHER, &claims))
                .unwrap_err(),
            AuthError::BadSignature
        );
        // The previous key is not accepted once it is no longer configured.
        assert_eq!(
            verifier()
                .verify(&sign_with(Algorithm::HS256, PREVIOUS, &claims))
                .unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn rotation_keeps_the_precise_error() {
        let v = Verifier::new(SECRET, Some(PREVIOUS), LEEWAY).expect("valid");
        let expired = json!({"locations": ["*"], "exp": now() - 60});
        for secret in [SECRET, PREVIOUS] {
            let token = sign_with(Algorithm::HS256, secret, &expired);
            assert_eq!(v.verify(&token).unwrap_err(), AuthError::Expired);
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        let short = [b'k'; MIN_SECRET_LEN - 1];
        let exact = [b'k'; MIN_SECRET_LEN];
        assert_eq!(
            Verifier::new(&short, None, LEEWAY).unwrap_err(),
            SecretError::TooShort { len: 31 }
        );
        assert_eq!(
            Verifier::new(b"", None, LEEWAY).unwrap_err(),
            SecretError::TooShort { len: 0 }
        );
        assert_eq!(
            Verifier::new(SECRET, Some(&short), LEEWAY).unwrap_err(),
            SecretError::PreviousTooShort { len: 31 }
        );
        assert_eq!(
            Verifier::new(SECRET, Some(b""), LEEWAY).unwrap_err(),
            SecretError::PreviousTooShort { len: 0 }
        );
        assert!(Verifier::new(&exact, Some(&exact), LEEWAY).is_ok());
    }

    #[test]
    fn leeway_is_bounded_and_whole_seconds() {
        assert_eq!(
            Verifier::new(SECRET, None, MAX_LEEWAY + Duration::from_secs(1)).unwrap_err(),
            SecretError::LeewayTooLarge { secs: 3601 }
        );
        assert!(Verifier::new(SECRET, None, MAX_LEEWAY).is_ok());
        let v = Verifier::new(SECRET, None, Duration::from_millis(5900)).expect("valid");
        assert_eq!(v.leeway(), Duration::from_secs(5));
        assert_eq!(verifier().leeway(), LEEWAY);
    }

    #[test]
    fn publisher_scope() {
        let v = verifier();
        let scoped = |scope: &str| {
            v.verify(&sign(&json!({"scope": scope, "exp": now() + 600})))
                .expect("valid")
                .is_publisher()
        };
        assert!(scoped("publish"));
        assert!(scoped("read publish"));
        assert!(scoped("publish read"));
        assert!(scoped("  read   publish  "));
        assert!(!scoped("publisher"));
        assert!(!scoped("read"));
        assert!(!scoped(""));
        assert!(!scoped("PUBLISH"));
        assert!(!scoped("read,publish"));
        let none = v
            .verify(&sign(&json!({"exp": now() + 600})))
            .expect("valid");
        assert!(!none.is_publisher());
    }

    fn claims(locations: Option<&[&str]>, channels: Option<&[&str]>, scope: &str) -> Claims {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Claims {
            sub: None,
            locations: locations.map(list),
            channels: channels.map(list),
            scope: Some(scope.to_owned()),
            exp: 0,
            nbf: None,
        }
    }

    #[test]
    fn may_publish_unrestricted() {
        let c = claims(None, None, "publish");
        assert!(c.may_publish("dashboard", "loc-1"));
        assert!(c.may_publish("*", "loc-1"));
        assert!(c.may_publish("dashboard", "*"));
        assert!(c.may_publish("*", "*"));
    }

    #[test]
    fn may_publish_restricted() {
        let c = claims(Some(&["loc-1"]), Some(&["dashboard"]), "publish");
        assert!(c.may_publish("dashboard", "loc-1"));
        assert!(!c.may_publish("dashboard", "loc-2"));
        assert!(!c.may_publish("ai-concierge", "loc-1"));
        assert!(!c.may_publish("*", "loc-1"));
        assert!(!c.may_publish("dashboard", "*"));

        let only_locations = claims(Some(&["loc-1", "loc-2"]), None, "publish");
        assert!(only_locations.may_publish("*", "loc-2"));
        assert!(!only_locations.may_publish("dashboard", "*"));

        let only_channels = claims(None, Some(&["dashboard"]), "publish");
        assert!(only_channels.may_publish("dashboard", "*"));
        assert!(!only_channels.may_publish("*", "loc-1"));

        let wildcards = claims(Some(&["*"]), Some(&["*"]), "publish");
        assert!(wildcards.may_publish("*", "*"));
        assert!(wildcards.may_publish("dashboard", "loc-9"));

        let empty = claims(Some(&[]), Some(&[]), "publish");
        assert!(!empty.may_publish("dashboard", "loc-1"));
    }

    #[test]
    fn may_publish_needs_the_publish_scope() {
        assert!(!claims(None, None, "read").may_publish("dashboard", "loc-1"));
        assert!(!claims(None, None, "publisher").may_publish("dashboard", "loc-1"));
        let mut c = claims(None, None, "publish");
        c.scope = None;
        assert!(!c.may_publish("dashboard", "loc-1"));
    }

    #[test]
    fn bearer_token_parsing() {
        assert_eq!(bearer_token(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token(b"bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"BEARER abc"), Some("abc"));
        assert_eq!(bearer_token(b"BeArEr    abc  "), Some("abc"));
        assert_eq!(bearer_token(b"  Bearer\tabc"), Some("abc"));
        assert_eq!(bearer_token(b"Bearer"), Some(""));
        assert_eq!(bearer_token(b"Bearer   "), Some(""));
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token(b"Token abc"), None);
        assert_eq!(bearer_token(b""), None);
        assert_eq!(bearer_token(b"Bear"), None);
        assert_eq!(bearer_token(b"Bearer \xff\xfe"), None);
        assert_eq!(bearer_token("Beärer abc".as_bytes()), None);
        assert_eq!(
            verifier()
                .verify(bearer_token(b"Bearer ").unwrap_or("x"))
                .unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn errors_never_echo_the_token() {
        let v = verifier();
        let cases = [
            sign_with(Algorithm::HS256, OTHER, &subscriber_claims()),
            sign_with(Algorithm::HS512, SECRET, &subscriber_claims()),
            handmade(&json!({"alg": "none"}), &subscriber_claims(), ""),
            sign(&json!({"locations": ["*"], "exp": now() - 60, "sub": "leaky-sub"})),
            sign(&json!({"locations": ["*"], "exp": now() + 600, "nbf": now() + 600})),
            sign(&json!({"locations": ["*"], "sub": "leaky-sub"})),
            sign(&json!({"exp": "leaky-exp"})),
            "leaky-garbage-token-xyzzy".to_owned(),
            "leakyAAA.garbageBBB.tokenCCC".to_owned(),
        ];
        for token in &cases {
            let err = v.verify(token).unwrap_err();
            let rendered = format!("{err} {err:?} {} {}", err.code(), err.message());
            for part in token.split('.').filter(|p| p.len() >= 8) {
                assert!(!rendered.contains(part), "{err:?} echoes {part}");
            }
            assert!(!rendered.contains("leaky"), "{err:?} echoes a claim");
        }
    }

    #[test]
    fn error_codes_are_distinct_and_401() {
        let all = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::BadSignature,
            AuthError::WrongAlgorithm,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::MissingExp,
            AuthError::InvalidClaims,
        ];
        let mut codes: Vec<_> = all.iter().map(AuthError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for e in &all {
            assert_eq!(e.to_string(), e.message());
            assert!(e
                .code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(AuthError::Expired.code(), "token_expired");
        assert_eq!(AuthError::Malformed.code(), "invalid_token");
        assert_eq!(AuthError::Missing.code(), "token_missing");
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let v = Verifier::new(SECRET, Some(PREVIOUS), LEEWAY).expect("valid");
        let debug = format!("{v:?} {v:#?}");
        for secret in [SECRET, PREVIOUS] {
            // No 8-byte run of the secret, as text or as `Vec<u8>`-style numbers.
            for window in secret.windows(8) {
                let text = std::str::from_utf8(window).expect("ascii");
                assert!(!debug.contains(text), "{debug}");
                let numbers = format!("{window:?}");
                assert!(!debug.contains(numbers.trim_matches(['[', ']'])), "{debug}");
            }
        }
        let err = Verifier::new(b"tiny-secret", None, LEEWAY).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("tiny"));
    }

    #[test]
    fn verifier_is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Verifier>();
    }

    fn mint_request() -> MintRequest {
        MintRequest {
            sub: "user-7".to_owned(),
            locations: vec!["loc-1".to_owned()],
            channels: Some(vec!["dashboard".to_owned()]),
            publisher: false,
            ttl: Duration::from_secs(3600),
            now_unix: now(),
        }
    }

    #[test]
    fn minted_subscriber_token_verifies() {
        let req = mint_request();
        let token = mint(SECRET, &req).expect("mints");
        let claims = verifier().verify(&token).expect("valid");
        assert_eq!(claims.sub.as_deref(), Some("user-7"));
        assert_eq!(claims.expires_at(), req.now_unix + 3600);
        assert!(claims.grants_subscription("dashboard", "loc-1"));
        assert!(!claims.grants_subscription("ai-concierge", "loc-1"));
        assert!(!claims.is_publisher());
        assert!(!claims.may_publish("dashboard", "loc-1"));
    }

    #[test]
    fn minted_publisher_token_verifies() {
        let req = MintRequest {
            locations: Vec::new(),
            channels: None,
            publisher: true,
            ..mint_request()
        };
        let claims = verifier()
            .verify(&mint(SECRET, &req).expect("mints"))
            .expect("valid");
        assert!(claims.is_publisher());
        assert!(claims.locations.is_none());
        assert!(claims.may_publish("*", "*"));

        let restricted = MintRequest {
            publisher: true,
            ..mint_request()
        };
        let claims = verifier()
            .verify(&mint(SECRET, &restricted).expect("mints"))
            .expect("valid");
        assert!(claims.may_publish("dashboard", "loc-1"));
        assert!(!claims.may_publish("dashboard", "*"));
    }

    #[test]
    fn minted_token_expires() {
        let req = MintRequest {
            ttl: Duration::from_secs(10),
            now_unix: now() - 100,
            ..mint_request()
        };
        let token = mint(SECRET, &req).expect("mints");
        assert_eq!(verifier().verify(&token).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn mint_refusals() {
        assert_eq!(
            mint(&SECRET[..31], &mint_request()).unwrap_err(),
            MintError::Secret(SecretError::TooShort { len: 31 })
        );
        assert_eq!(
            mint(b"", &mint_request()).unwrap_err(),
            MintError::Secret(SecretError::TooShort { len: 0 })
        );
        let zero_ttl = MintRequest {
            ttl: Duration::from_millis(999),
            ..mint_request()
        };
        assert_eq!(mint(SECRET, &zero_ttl).unwrap_err(), MintError::InvalidTtl);
        let overflow = MintRequest {
            now_unix: u64::MAX,
            ..mint_request()
        };
        assert_eq!(mint(SECRET, &overflow).unwrap_err(), MintError::InvalidTtl);
        let nowhere = MintRequest {
            locations: Vec::new(),
            ..mint_request()
        };
        assert_eq!(
            mint(SECRET, &nowhere).unwrap_err(),
            MintError::GrantsNothing
        );
        let no_channel = MintRequest {
            channels: Some(Vec::new()),
            ..mint_request()
        };
        assert_eq!(
            mint(SECRET, &no_channel).unwrap_err(),
            MintError::GrantsNothing
        );
    }

    #[test]
    fn minted_token_is_hs256_with_iat() {
        let req = mint_request();
        let token = mint(SECRET, &req).expect("mints");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::HS256);
        let payload = token.split('.').nth(1).expect("payload");
        let payload: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(payload["iat"], json!(req.now_unix));
        assert!(payload.get("scope").is_none());
    }
}
