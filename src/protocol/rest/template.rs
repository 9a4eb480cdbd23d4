//! HttpRule path templates (`google/api/http.proto`):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! A variable's segments are flattened into the template's, with the range it covers.

use std::fmt;

/// One path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    /// Text that must match the segment exactly (as written, percent-encoded).
    Literal(String),
    /// `*`: one non-empty segment.
    Any,
    /// `**`: zero or more segments; only last.
    Rest,
}

/// A `{field.path=…}` variable: which template segments it captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    /// The field path, e.g. `["book", "name"]`.
    pub(crate) field_path: Vec<String>,
    /// First segment captured.
    pub(crate) start: usize,
    /// One past the last segment captured (for `**`, the end of the path).
    pub(crate) end: usize,
}

impl Variable {
    /// Captures exactly one segment (`{var}`, `{var=*}`): its value is fully percent-decoded.
    /// Otherwise `%2F` stays encoded, since a `/` there separates segments.
    pub(crate) fn is_single_segment(&self, template: &Template) -> bool {
        self.end == self.start + 1 && template.segments[self.start] != Segment::Rest
    }
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) segments: Vec<Segment>,
    pub(crate) verb: Option<String>,
    pub(crate) variables: Vec<Variable>,
}

impl fmt::Display for Template {
    /// The template in OpenAPI form: `/v1/{name}:verb`, one name per variable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        if self.segments.is_empty() {
            f.write_str("/")?;
        }
        while i < self.segments.len() {
            f.write_str("/")?;
            if let Some(v) = self.variables.iter().find(|v| v.start == i) {
                write!(f, "{{{}}}", v.field_path.join("."))?;
                i = v.end.max(i + 1);
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => f.write_str(l)?,
                Segment::Any => f.write_str("*")?,
                Segment::Rest => f.write_str("**")?,
            }
            i += 1;
        }
        if let Some(verb) = &self.verb {
            write!(f, ":{verb}")?;
        }
        Ok(())
    }
}

/// Parses a template; the error says what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<Template, String> {
    let path = text
        .strip_prefix('/')
        .ok_or_else(|| format!("path template {text:?} must start with /"))?;
    // The verb follows the last ':' that is outside braces and after the last '/'.
    let (path, verb) = split_verb(path);
    if verb.is_some_and(|v| v.is_empty() || v.contains(['{', '}', '*'])) {
        return Err(format!("path template {text:?} has an invalid verb"));
    }
    let mut template = Template {
        segments: Vec::new(),
        verb: verb.map(str::to_owned),
        variables: Vec::new(),
    };
    if !path.is_empty() {
        for part in split_outside_braces(path) {
            if let Some(inner) = part.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| format!("path template {text:?}: unclosed variable {part:?}"))?;
                let (field, sub) = match inner.split_once('=') {
                    Some((field, sub)) => (field, Some(sub)),
                    None => (inner, None),
                };
                let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|f| !is_ident(f)) {
                    return Err(format!(
                        "path template {text:?}: invalid field path {field:?}"
                    ));
                }
                let start = template.segments.len();
                match sub {
                    None => template.segments.push(Segment::Any),
                    Some(sub) => {
                        if sub.is_empty() || sub.contains(['{', '}']) {
                            return Err(format!(
                                "path template {text:?}: invalid variable template {sub:?}"
                            ));
                        }
                        for s in sub.split('/') {
                            template.segments.push(segment(text, s)?);
                        }
                    }
                }
                let end = template.segments.len();
                if template
                    .variables
                    .iter()
                    .any(|v| v.field_path == field_path)
                {
                    return Err(format!(
                        "path template {text:?}: field {field:?} appears twice"
                    ));
                }
                template.variables.push(Variable {
                    field_path,
                    start,
                    end,
                });
            } else {
                if part.contains(['{', '}']) {
                    return Err(format!("path template {text:?}: invalid segment {part:?}"));
                }
                template.segments.push(segment(text, part)?);
            }
        }
    }
    if let Some(i) = template.segments.iter().position(|s| *s == Segment::Rest) {
        if i + 1 != template.segments.len() {
            return Err(format!(
                "path template {text:?}: ** must be the last segment"
            ));
        }
    }
    Ok(template)
}

fn segment(text: &str, s: &str) -> Result<Segment, String> {
    match s {
        "*" => Ok(Segment::Any),
        "**" => Ok(Segment::Rest),
        "" => Err(format!("path template {text:?} has an empty segment")),
        lit if lit.contains(['*', ':']) => Err(format!(
            "path template {text:?}: invalid literal segment {lit:?}"
        )),
        lit => Ok(Segment::Literal(lit.to_owned())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a/{b=c/*}:verb` → (`a/{b=c/*}`, Some("verb")).
fn split_verb(path: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut colon = None;
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => colon = None,
            ':' if depth == 0 => colon = Some(i),
            _ => {}
        }
    }
    match colon {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    }
}

/// Splits on `/` outside braces.
fn split_outside_braces(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => {
                parts.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&path[start..]);
    parts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.to_owned())
    }

    #[test]
    fn parses_the_grammar() {
        let t = parse("/v1/{name=shelves/*/books/*}:move").unwrap();
        assert_eq!(
            t.segments,
            vec![
                lit("v1"),
                lit("shelves"),
                Segment::Any,
                lit("books"),
                Segment::Any
            ]
        );
        assert_eq!(t.verb.as_deref(), Some("move"));
        assert_eq!(
            t.variables,
            vec![Variable {
                field_path: vec!["name".into()],
                start: 1,
                end: 5
            }]
        );
        assert!(!t.variables[0].is_single_segment(&t));
        assert_eq!(t.to_string(), "/v1/{name}:move");

        let t = parse("/v1/authors/{author_id}").unwrap();
        assert_eq!(t.segments, vec![lit("v1"), lit("authors"), Segment::Any]);
        assert!(t.variables[0].is_single_segment(&t));

        let t = parse("/v1/{book.name=shelves/*/books/*}").unwrap();
        assert_eq!(t.variables[0].field_path, vec!["book", "name"]);
        assert_eq!(t.to_string(), "/v1/{book.name}");

        let t = parse("/v1/files/{path=**}").unwrap();
        assert_eq!(t.segments.last(), Some(&Segment::Rest));
        assert!(!t.variables[0].is_single_segment(&t));

        let t = parse("/v1/*/x/**:verb").unwrap();
        assert_eq!(t.variables.len(), 0);
        assert_eq!(t.verb.as_deref(), Some("verb"));
        assert_eq!(t.to_string(), "/v1/*/x/**:verb");

        let t = parse("/").unwrap();
        assert!(t.segments.is_empty());
        assert_eq!(t.to_string(), "/");
        let t = parse("/{a}/{b.c}").unwrap();
        assert_eq!(t.variables.len(), 2);
        assert_eq!(t.variables[1].start, 1);
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "v1/x",
            "/v1//x",
            "/v1/{name",
            "/v1/{na-me}",
            "/v1/{a={b}}",
            "/v1/**/x",
            "/v1/{a=**}/x",
            "/v1/x:",
            "/v1/{a}/{a}",
            "/v1/a*b",
            "/v1/{a=}",
            "/v1/{1a}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
