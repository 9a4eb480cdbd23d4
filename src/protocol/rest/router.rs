//! Matching a request path to a REST binding: the templates of a schema compiled into one
//! segment trie, so a lookup walks the path once (literal children before `*`, before `**`)
//! instead of trying every rule.

use std::collections::HashMap;
use std::sync::Arc;

use super::template::Segment;
use super::Binding;

/// Which HTTP methods a binding answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verb {
    /// One method (`get`, `put`, …, or a `custom` kind).
    One(http::Method),
    /// `custom: { kind: "*" }`: any method.
    Any,
}

impl Verb {
    fn allows(&self, m: &http::Method) -> bool {
        match self {
            Verb::One(one) => one == m,
            Verb::Any => true,
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<Box<str>, usize>,
    any: Option<usize>,
    /// The `**` child: it matches whatever is left, so its bindings end there.
    rest: Option<usize>,
    /// Bindings whose template ends at this node.
    ends: Vec<usize>,
}

/// The compiled bindings of a schema.
#[derive(Debug, Default)]
pub(crate) struct Router {
    nodes: Vec<Node>,
    bindings: Vec<Arc<Binding>>,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A binding, with the raw (still percent-encoded) path segments it was matched against.
    Found(Arc<Binding>, Vec<String>),
    /// Bindings match the path, but not with this HTTP method: these are allowed.
    WrongMethod(Vec<http::Method>),
    /// No binding matches the path.
    NotFound,
}

impl Router {
    /// Compiles bindings (earlier ones win over later ones for the same path and method).
    pub(crate) fn new(bindings: Vec<Binding>) -> Router {
        let mut router = Router {
            nodes: vec![Node::default()],
            bindings: Vec::with_capacity(bindings.len()),
        };
        for binding in bindings {
            let index = router.bindings.len();
            let mut node = 0;
            for segment in &binding.template.segments {
                node = router.child(node, segment);
            }
            router.nodes[node].ends.push(index);
            router.bindings.push(Arc::new(binding));
        }
        router
    }

    fn child(&mut self, node: usize, segment: &Segment) -> usize {
        let next = self.nodes.len();
        let slot = match segment {
            Segment::Literal(l) => {
                let entry = self.nodes[node].literals.entry(l.as_str().into());
                *entry.or_insert(next)
            }
            Segment::Any => *self.nodes[node].any.get_or_insert(next),
            Segment::Rest => *self.nodes[node].rest.get_or_insert(next),
        };
        if slot == next {
            self.nodes.push(Node::default());
        }
        slot
    }

    /// Every binding, in rule order.
    pub(crate) fn bindings(&self) -> &[Arc<Binding>] {
        &self.bindings
    }

    /// Finds the binding for `method` and `path` (no query). A last segment with a `:` is
    /// tried first as segment plus verb, then as a plain segment.
    pub(crate) fn lookup(&self, method: &http::Method, path: &str) -> Lookup {
        if self.bindings.is_empty() {
            return Lookup::NotFound;
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Lookup::NotFound;
        };
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut allowed = Vec::new();
        if let Some((last, verb)) = segments.last().and_then(|s| s.rsplit_once(':')) {
            let mut split = segments.clone();
            let n = split.len() - 1;
            split[n] = last;
            if let Some(found) = self.find(method, &split, Some(verb), &mut allowed) {
                return found;
            }
        }
        if let Some(found) = self.find(method, &segments, None, &mut allowed) {
            return found;
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            allowed.dedup();
            Lookup::WrongMethod(allowed)
        }
    }

    fn find(
        &self,
        method: &http::Method,
        segments: &[&str],
        verb: Option<&str>,
        allowed: &mut Vec<http::Method>,
    ) -> Option<Lookup> {
        let mut candidates = Vec::new();
        self.walk(0, segments, 0, &mut candidates);
        for index in candidates {
            let b = &self.bindings[index];
            if b.template.verb.as_deref() != verb {
                continue;
            }
            if b.verb.allows(method) {
                let raw = segments.iter().map(|s| (*s).to_owned()).collect();
                return Some(Lookup::Found(b.clone(), raw));
            }
            match &b.verb {
                Verb::One(m) => allowed.push(m.clone()),
                Verb::Any => {}
            }
        }
        None
    }

    /// Collects the bindings matching `segments[i..]` from `node`, best first: a literal
    /// child before `*`, before `**`. Each trie node sits at one depth, so it is visited at
    /// most once.
    fn walk(&self, node: usize, segments: &[&str], i: usize, out: &mut Vec<usize>) {
        let n = &self.nodes[node];
        let Some(segment) = segments.get(i) else {
            out.extend_from_slice(&n.ends);
            if let Some(rest) = n.rest {
                out.extend_from_slice(&self.nodes[rest].ends);
            }
            return;
        };
        if let Some(&next) = n.literals.get(*segment) {
            self.walk(next, segments, i + 1, out);
        }
        if let Some(next) = n.any.filter(|_| !segment.is_empty()) {
            self.walk(next, segments, i + 1, out);
        }
        if let Some(rest) = n.rest {
            out.extend_from_slice(&self.nodes[rest].ends);
        }
    }
}
