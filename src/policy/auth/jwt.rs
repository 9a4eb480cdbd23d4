//! JWT authentication (RFC 7519, compact JWS): the token from `Authorization: Bearer`, a
//! header or a cookie; the signature checked with the route's keys; `iss`, `aud`, `exp` and
//! `nbf` checked (with `leeway` on the times); chosen claims passed upstream as headers; the
//! token itself not passed on unless `forward_token`.
//!
//! Verified tokens are cached ([`super::cache`]): on the usual path (a client reusing its
//! token) a call costs a map lookup and a clock read, not a signature check.

use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::cache::TokenCache;
use super::jwk::{Alg, Key};
use super::jwks::{KeySet, Keys};
use crate::config::{Jwt, TokenSource};
use crate::protocol::grpc::{Code, Status};

/// Tokens longer than this are refused unread.
const MAX_TOKEN: usize = 16 * 1024;

/// A route's JWT verification.
#[derive(Debug)]
pub(crate) struct JwtAuth {
    config: Jwt,
    keys: Arc<KeySet>,
    cache: TokenCache,
    /// The claim the route's rate limit is keyed by.
    rate_claim: Option<String>,
}

/// What a verified token grants, kept in the cache.
#[derive(Debug)]
pub(crate) struct Verified {
    exp: Option<i64>,
    nbf: Option<i64>,
    /// `claims_to_headers`, ready to insert.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The value of the rate limit's claim.
    rate_key: Option<Bytes>,
}

impl Verified {
    /// Whether the token expired before `now` (no leeway; for cache housekeeping).
    pub(crate) fn expired(&self, now: i64) -> bool {
        self.exp.is_some_and(|exp| exp < now)
    }

    #[cfg(test)]
    pub(crate) fn for_tests(exp: Option<i64>) -> Verified {
        Verified {
            exp,
            nbf: None,
            headers: Vec::new(),
            rate_key: None,
        }
    }

    fn check_time(&self, now: i64, leeway: i64) -> Result<(), Status> {
        if self.exp.is_some_and(|exp| now > exp.saturating_add(leeway)) {
            return Err(invalid("token expired"));
        }
        if self.nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(invalid("token not valid yet (nbf)"));
        }
        Ok(())
    }
}

fn invalid(why: &str) -> Status {
    Status::new(Code::Unauthenticated, format!("invalid token: {why}"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl JwtAuth {
    /// Builds the verification of a route; keys from an unchanged JWKS URL carry over from
    /// `previous`.
    pub(crate) fn new(
        config: &Jwt,
        rate_claim: Option<&str>,
        previous: Option<&JwtAuth>,
    ) -> Result<JwtAuth, String> {
        let keys = match previous.filter(|p| p.keys.serves(config)) {
            Some(p) => p.keys.clone(),
            None => KeySet::new(config)?,
        };
        Ok(JwtAuth {
            config: config.clone(),
            keys,
            cache: TokenCache::default(),
            rate_claim: rate_claim.map(str::to_owned),
        })
    }

    /// Verifies the call's token and rewrites the headers for upstream.
    pub(crate) async fn authenticate(
        &self,
        headers: &mut HeaderMap,
    ) -> Result<Option<Bytes>, Status> {
        let (value, range) = self.find_token(headers)?;
        let token = &value.as_bytes()[range];
        let now = unix_now();
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(i64::MAX);
        let verified = match self.cache.get(token, self.keys.generation()) {
            Some(v) => v,
            None => {
                let (v, generation) = self.verify(token).await?;
                let v = Arc::new(v);
                self.cache.insert(token, generation, v.clone(), now);
                v
            }
        };
        verified.check_time(now, leeway)?;
        if !self.config.forward_token {
            self.remove_token(headers);
        }
        for (name, value) in &verified.headers {
            headers.insert(name.clone(), value.clone());
        }
        Ok(verified.rate_key.clone())
    }

    /// The token's header value and where the token lies in it.
    fn find_token(&self, headers: &HeaderMap) -> Result<(HeaderValue, Range<usize>), Status> {
        let missing = || Status::new(Code::Unauthenticated, "missing token");
        let found = match &self.config.token {
            TokenSource::Bearer => single(headers, &header::AUTHORIZATION)?
                .and_then(|v| bearer(v, true).map(|r| (v.clone(), r))),
            TokenSource::Header(name) => {
                single(headers, name)?.and_then(|v| bearer(v, false).map(|r| (v.clone(), r)))
            }
            TokenSource::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .find_map(|v| cookie(v.as_bytes(), name.as_bytes()).map(|r| (v.clone(), r))),
        };
        let (value, range) = found.ok_or_else(missing)?;
        if range.is_empty() {
            return Err(missing());
        }
        Ok((value, range))
    }

    fn remove_token(&self, headers: &mut HeaderMap) {
        match &self.config.token {
            TokenSource::Bearer => {
                headers.remove(header::AUTHORIZATION);
            }
            TokenSource::Header(name) => {
                headers.remove(name);
            }
            TokenSource::Cookie(name) => {
                let kept: Vec<HeaderValue> = headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| without_cookie(v, name.as_bytes()))
                    .collect();
                headers.remove(header::COOKIE);
                for v in kept {
                    headers.append(header::COOKIE, v);
                }
            }
        }
    }

    /// Checks a token from scratch: the shape, the algorithm, the signature, then the claims.
    /// Returns the grant and the key generation it was verified with.
    async fn verify(&self, token: &[u8]) -> Result<(Verified, u64), Status> {
        if token.len() > MAX_TOKEN {
            return Err(invalid("too long"));
        }
        let mut parts = token.split(|b| *b == b'.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a signed JWT (three dot-separated parts)"));
        };
        let decode = |part: &[u8], what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| invalid(&format!("{what} is not base64url")))
        };
        let header: JoseHeader = serde_json::from_slice(&decode(h64, "header")?)
            .map_err(|_| invalid("header is not a JOSE header"))?;
        // Only the three asymmetric algorithms: `none` and HMAC never verify anything here.
        let alg = Alg::from_name(&header.alg)
            .ok_or_else(|| invalid(&format!("algorithm {:?} is not accepted", header.alg)))?;
        if header.crit.is_some() {
            return Err(invalid("critical header extensions are not supported"));
        }
        let sig = decode(s64, "signature")?;
        let signed = &token[..h64.len() + 1 + p64.len()];
        let mut keys = self.keys.keys().await?;
        let mut refetched = false;
        loop {
            match check_signature(&keys, header.kid.as_deref(), alg, signed, &sig) {
                Checked::Valid => break,
                Checked::Invalid(why) => return Err(invalid(why)),
                Checked::UnknownKid if !refetched => {
                    refetched = true;
                    match self.keys.refetch_for_unknown_kid(&keys).await {
                        Some(newer) => keys = newer,
                        None => return Err(invalid("unknown key id")),
                    }
                }
                Checked::UnknownKid => return Err(invalid("unknown key id")),
            }
        }
        let claims: Map<String, Value> = serde_json::from_slice(&decode(p64, "payload")?)
            .map_err(|_| invalid("payload is not a JSON object"))?;
        Ok((self.grant(&claims)?, keys.generation))
    }

    /// Checks the claims and prepares what the token grants.
    fn grant(&self, claims: &Map<String, Value>) -> Result<Verified, Status> {
        if let Some(want) = &self.config.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(invalid("wrong issuer"));
            }
        }
        if !self.config.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.config.audiences.contains(a),
                Some(Value::Array(list)) => list.iter().any(|a| {
                    a.as_str()
                        .is_some_and(|a| self.config.audiences.iter().any(|w| w == a))
                }),
                _ => false,
            };
            if !ok {
                return Err(invalid("wrong audience"));
            }
        }
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite())
                        .map(|f| f.floor() as i64)
                })
                .map(Some)
                .ok_or_else(|| invalid(&format!("{name} is not a number"))),
        };
        let exp = time("exp")?;
        let nbf = time("nbf")?;
        let headers = self
            .config
            .claims_to_headers
            .iter()
            .filter_map(|c| {
                let v = claims.get(&c.claim).and_then(claim_text)?;
                HeaderValue::from_bytes(v.as_bytes())
                    .ok()
                    .map(|v| (c.header.clone(), v))
            })
            .collect();
        let rate_key = self
            .rate_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(claim_text)
            .map(Bytes::from);
        Ok(Verified {
            exp,
            nbf,
            headers,
            rate_key,
        })
    }
}

enum Checked {
    Valid,
    Invalid(&'static str),
    UnknownKid,
}

/// Checks the signature with the key the token names (or, without a `kid`, with each key of
/// its algorithm).
fn check_signature(keys: &Keys, kid: Option<&str>, alg: Alg, signed: &[u8], sig: &[u8]) -> Checked {
    let fits = |k: &&Key| k.alg == alg;
    match kid {
        Some(kid) => {
            let mut named = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .peekable();
            if named.peek().is_none() {
                return Checked::UnknownKid;
            }
            let mut usable = named.filter(fits).peekable();
            if usable.peek().is_none() {
                return Checked::Invalid("the named key is not for this algorithm");
            }
            if usable.any(|k| k.verify(signed, sig)) {
                Checked::Valid
            } else {
                Checked::Invalid("bad signature")
            }
        }
        None => {
            if keys.keys.iter().filter(fits).any(|k| k.verify(signed, sig)) {
                Checked::Valid
            } else {
                Checked::Invalid("bad signature")
            }
        }
    }
}

/// A claim as header text: strings as they are, other values as JSON; nothing for null.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => serde_json::to_string(other).ok(),
    }
}

/// The one value of `name`; more than one is refused (which would the backend read?).
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, Status> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(Status::new(
            Code::Unauthenticated,
            format!("more than one {name} header"),
        ));
    }
    Ok(first)
}

/// The token in `Bearer <token>` (the scheme is case-insensitive); a header configured for
/// tokens may also carry the bare token.
fn bearer(v: &HeaderValue, required: bool) -> Option<Range<usize>> {
    let b = v.as_bytes();
    let start = if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
        7
    } else if required {
        return None;
    } else {
        0
    };
    trimmed(b, start, b.len())
}

fn trimmed(b: &[u8], mut start: usize, mut end: usize) -> Option<Range<usize>> {
    while start < end && b[start] == b' ' {
        start += 1;
    }
    while end > start && b[end - 1] == b' ' {
        end -= 1;
    }
    Some(start..end)
}

/// Where the value of cookie `name` lies in a `Cookie` header.
fn cookie(header: &[u8], name: &[u8]) -> Option<Range<usize>> {
    let mut pos = 0;
    for pair in header.split(|b| *b == b';') {
        let start = pos;
        pos += pair.len() + 1;
        let Some(eq) = pair.iter().position(|b| *b == b'=') else {
            continue;
        };
        let lead = pair.iter().take_while(|b| **b == b' ').count();
        if lead <= eq && &pair[lead..eq] == name {
            let (mut s, mut e) = (start + eq + 1, start + pair.len());
            if e - s >= 2 && header[s] == b'"' && header[e - 1] == b'"' {
                s += 1;
                e -= 1;
            }
            return trimmed(header, s, e);
        }
    }
    None
}

/// A `Cookie` header without cookie `name`; none when nothing is left.
fn without_cookie(v: &HeaderValue, name: &[u8]) -> Option<HeaderValue> {
    let kept: Vec<&[u8]> = v
        .as_bytes()
        .split(|b| *b == b';')
        .map(|p| {
            let lead = p.iter().take_while(|b| **b == b' ').count();
            &p[lead..]
        })
        .filter(|p| {
            !p.is_empty() && p.iter().position(|b| *b == b'=').map(|eq| &p[..eq]) != Some(name)
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
}

#[cfg(test)]
mod tests;
