//! How model values serialize for the admin `/config` page: durations as written, secrets
//! and key material redacted.

use std::time::Duration;

use http::header::HeaderName;
use serde::Serializer;

use crate::protocol::grpc::Code;

pub(super) fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&crate::config::units::format_duration(*d))
}

pub(super) fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

pub(super) fn redacted<S: Serializer, T>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

pub(super) fn opt_redacted<S: Serializer, T>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

pub(super) fn redacted_hashes<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("<{} redacted>", v.len()))
}

pub(super) fn redact_url<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        // Credentials live between the scheme and '@'.
        Some(url) => match (url.find("://"), url.rfind('@')) {
            (Some(i), Some(at)) if at > i => {
                s.collect_str(&format_args!("{}<redacted>{}", &url[..i + 3], &url[at..]))
            }
            _ => s.serialize_str(url),
        },
        None => s.serialize_none(),
    }
}

pub(super) fn header<S: Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

pub(super) fn opt_header<S: Serializer>(h: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(h.as_str()),
        None => s.serialize_none(),
    }
}

pub(super) fn headers<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

pub(super) fn opt_headers<S: Serializer>(
    v: &Option<Vec<HeaderName>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => headers(v, s),
        None => s.serialize_none(),
    }
}

pub(super) fn display_list<S: Serializer, T: std::fmt::Display>(
    v: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

pub(super) fn codes<S: Serializer>(v: &[Code], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|c| c.connect_name()))
}
