//! Authentication of a route's calls: a signed JWT ([`jwt`], keys from [`jwks`]) or an API key
//! ([`api_key`]). Every failure is `unauthenticated` with a message that says what was wrong
//! with the credential (never which key or address was involved); a failure to get the keys
//! at all is `unavailable`.

pub(crate) mod api_key;
mod cache;
mod fetch;
mod jwk;
pub(crate) mod jwks;
pub(crate) mod jwt;

use bytes::Bytes;
use http::HeaderMap;

use crate::config::Auth;
use crate::protocol::grpc::Status;

/// A route's authentication.
#[derive(Debug)]
pub(crate) enum Authenticator {
    /// Signed JWTs.
    Jwt(Box<jwt::JwtAuth>),
    /// Keys whose SHA-256 is listed.
    ApiKey(api_key::ApiKeys),
}

impl Authenticator {
    /// Builds the authenticator (reads key files). `rate_claim` is the claim the route's rate
    /// limit is keyed by, if any; `previous` is the same route's authenticator before a reload.
    pub(crate) fn new(
        config: &Auth,
        rate_claim: Option<&str>,
        previous: Option<&Authenticator>,
    ) -> Result<Authenticator, String> {
        Ok(match config {
            Auth::Jwt(j) => {
                let before = match previous {
                    Some(Authenticator::Jwt(p)) => Some(&**p),
                    _ => None,
                };
                Authenticator::Jwt(Box::new(jwt::JwtAuth::new(j, rate_claim, before)?))
            }
            Auth::ApiKey(k) => Authenticator::ApiKey(api_key::ApiKeys::new(k)?),
        })
    }

    /// Checks the call's credential, rewrites the headers for upstream, and returns what a
    /// rate limit keyed by the credential uses (the key's hash, the claim's value).
    pub(crate) async fn authenticate(
        &self,
        headers: &mut HeaderMap,
    ) -> Result<Option<Bytes>, Status> {
        match self {
            Authenticator::Jwt(j) => j.authenticate(headers).await,
            Authenticator::ApiKey(k) => k.authenticate(headers).map(Some),
        }
    }
}
