//! A route's `[[routes.rules]]`, compiled once (at start and at every reload) into a matcher
//! that decides a request without allocating: methods, a path glob below the route's prefix,
//! and what the first matching rule asks of the identity. No rule matches: the route's `roles`.
//!
//! A glob is a list of `/`-separated segments, each a literal, `*` (exactly one non-empty
//! segment) or `**` (any number of segments, none included). It is matched against the request
//! path after the route's prefix (and one `/` that follows it), byte for byte; a request whose
//! path a backend could read differently (dot segments, `//`, a backslash, an encoded slash,
//! backslash or unreserved character) is refused on a route with path rules, so that a rule
//! cannot be walked around by spelling a path another way.

use http::Method;

use crate::config::RuleConfig;

/// Rules on one route at most.
pub const MAX_RULES: usize = 64;
/// Longest `path` glob, in bytes.
pub const MAX_GLOB: usize = 512;
/// Segments of one `path` glob at most.
pub const MAX_SEGMENTS: usize = 32;
/// Names in one of a rule's lists (`methods`, `roles_any`, ...) at most.
pub const MAX_NAMES: usize = 64;

/// Why a rule cannot be compiled; `key` is below `routes[i].rules[j]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RuleError {
    /// The rule's key that is wrong (`path`, `methods`, `roles_any`, ...), or `rules` for the
    /// list itself.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad(key: &'static str, message: impl Into<String>) -> RuleError {
    RuleError {
        key,
        message: message.into(),
    }
}

/// One segment of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`: one non-empty segment.
    One,
    /// `**`: any number of segments.
    Any,
}

/// A compiled `path` glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    segments: Box<[Segment]>,
    /// The literal segments it starts with, joined by `/`: a path that does not start with
    /// them (up to a `/` or its end) is turned away with one comparison.
    lead: Box<str>,
}

impl Glob {
    /// Parses a glob as written in a rule: relative to the route's prefix, no leading `/`.
    pub fn parse(glob: &str) -> Result<Self, RuleError> {
        if glob.is_empty() {
            return Err(bad(
                "path",
                "must not be empty (leave it out, or use \"**\", for every path of the route)",
            ));
        }
        if glob.len() > MAX_GLOB {
            return Err(bad("path", format!("must be at most {MAX_GLOB} bytes")));
        }
        if glob.starts_with('/') {
            return Err(bad(
                "path",
                "is below the route's path_prefix: write it without a leading /",
            ));
        }
        if glob
            .bytes()
            .any(|b| b == b'?' || b == b'#' || !b.is_ascii_graphic())
        {
            return Err(bad(
                "path",
                "must be a path: visible ASCII, no spaces, ? or #",
            ));
        }
        let parts: Vec<&str> = glob.split('/').collect();
        if parts.len() > MAX_SEGMENTS {
            return Err(bad(
                "path",
                format!("must have at most {MAX_SEGMENTS} segments"),
            ));
        }
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            segments.push(match part {
                "*" => Segment::One,
                "**" => Segment::Any,
                "" if i == last => Segment::Literal("".into()),
                "" => return Err(bad("path", "must not contain an empty segment (//)")),
                "." | ".." => return Err(bad("path", "must not contain . or .. segments")),
                p if p.contains('*') => {
                    return Err(bad(
                        "path",
                        format!(
                            "bad glob segment {p:?}: * (one segment) and ** (any number) stand for whole segments"
                        ),
                    ));
                }
                p if p.contains('%') || p.contains('\\') => {
                    return Err(bad(
                        "path",
                        "must be written decoded, without % escapes or backslashes",
                    ));
                }
                p => Segment::Literal(p.into()),
            });
        }
        let lead: Vec<&str> = segments
            .iter()
            .map_while(|s| match s {
                Segment::Literal(l) => Some(&**l),
                _ => None,
            })
            .collect();
        Ok(Glob {
            lead: lead.join("/").into(),
            segments: segments.into(),
        })
    }

    /// Whether `rest` (the path below the route's prefix, no leading `/`) matches. An empty
    /// `rest` has no segments; otherwise each `/` starts one more (a trailing `/` an empty one).
    pub fn matches(&self, rest: &str) -> bool {
        if !self.lead.is_empty() {
            let after = rest.strip_prefix(&*self.lead);
            if !after.is_some_and(|a| a.is_empty() || a.starts_with('/')) {
                return false;
            }
        }
        // The classic wildcard match with one backtrack point (the last `**`), over segments:
        // positions are byte offsets into `rest`, `None` once every segment is used.
        let start = if rest.is_empty() { None } else { Some(0) };
        let (mut g, mut at) = (0, start);
        let mut resume: Option<(usize, Option<usize>)> = None;
        loop {
            match (self.segments.get(g), at) {
                (Some(Segment::Any), _) => {
                    g += 1;
                    resume = Some((g, at));
                    continue;
                }
                (Some(segment), Some(pos)) => {
                    let (seg, next) = segment_at(rest, pos);
                    let hit = match segment {
                        Segment::One => !seg.is_empty(),
                        Segment::Literal(l) => **l == *seg,
                        Segment::Any => true,
                    };
                    if hit {
                        g += 1;
                        at = next;
                        continue;
                    }
                }
                (None, None) => return true,
                (Some(_), None) | (None, Some(_)) => {}
            }
            // Mismatch: let the last `**` take one more segment, if there is one to take.
            match resume {
                Some((rg, Some(rpos))) => {
                    let next = segment_at(rest, rpos).1;
                    resume = Some((rg, next));
                    (g, at) = (rg, next);
                }
                _ => return false,
            }
        }
    }
}

/// The segment of `rest` starting at `pos`, and where the next one starts.
fn segment_at(rest: &str, pos: usize) -> (&str, Option<usize>) {
    let tail = &rest[pos..];
    // A plain loop: segments are short, and `str::find` sets up a search first.
    match tail.bytes().position(|b| b == b'/') {
        Some(i) => (&tail[..i], Some(pos + i + 1)),
        None => (tail, None),
    }
}

/// Whether a path has a dot segment (`.` or `..`, written out or `%2e`-escaped): a backend
/// that resolves it would serve another path than the one routed and authorised
/// (`/public/../admin/x` matching `/public/`), so every route refuses it (RFC 3986 §5.2.4: a
/// client removes dot segments before it sends; browsers and curl do).
pub fn dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    // Most paths have neither a dot nor an escape: one pass, nothing more.
    if !bytes.iter().any(|&b| b == b'.' || b == b'%') {
        return false;
    }
    bytes.split(|&b| b == b'/').any(|segment| {
        let mut dots = 0;
        let mut rest = segment;
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3
                && rest[0] == b'%'
                && rest[1] == b'2'
                && rest[2] | 0x20 == b'e'
            {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

/// Whether a path below a prefix reads the same to every backend: no dot segments, no empty
/// segment inside it, no backslash, and no `%` escape of `/`, `\` or an unreserved character
/// (which a backend would decode into a path the rules never saw).
pub fn plain_path(rest: &str) -> bool {
    let bytes = rest.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
    let mut start = 0;
    for i in 0..=bytes.len() {
        match bytes.get(i) {
            None | Some(b'/') => {
                let segment = &bytes[start..i];
                let inner = i < bytes.len();
                if segment == b"." || segment == b".." || (segment.is_empty() && inner) {
                    return false;
                }
                start = i + 1;
            }
            Some(b'\\') => return false,
            Some(b'%') => match hex(i + 1).zip(hex(i + 2)) {
                Some((h, l)) => {
                    let b = (h * 16 + l) as u8;
                    if b == b'/' || b == b'\\' || b.is_ascii_alphanumeric() || b"-._~".contains(&b)
                    {
                        return false;
                    }
                }
                // Not an escape at all: a backend may still try to read it; refuse.
                None => return false,
            },
            Some(_) => {}
        }
    }
    true
}

/// What a rule asks of the identity once its methods and path match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requires {
    /// `allow = false`: refused, whoever asks.
    Refuse,
    /// Every list that is set must be satisfied (none set: allowed).
    Identity {
        roles_any: Box<[Box<str>]>,
        roles_all: Box<[Box<str>]>,
        clients: Box<[Box<str>]>,
        subjects: Box<[Box<str>]>,
    },
}

/// A bit for each standard method, 0 for any other.
fn method_bit(method: &Method) -> u16 {
    match *method {
        Method::GET => 1,
        Method::HEAD => 1 << 1,
        Method::POST => 1 << 2,
        Method::PUT => 1 << 3,
        Method::DELETE => 1 << 4,
        Method::PATCH => 1 << 5,
        Method::OPTIONS => 1 << 6,
        Method::CONNECT => 1 << 7,
        Method::TRACE => 1 << 8,
        _ => 0,
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// No `methods`: for every method.
    any_method: bool,
    /// The standard methods it is for, a bit each ([`method_bit`]).
    method_bits: u16,
    /// The other methods it is for.
    methods: Box<[Method]>,
    /// `None`: every path of the route.
    path: Option<Glob>,
    requires: Requires,
}

/// Who a request is, as far as rules look.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The value token's roles.
    pub roles: &'a [String],
    /// The client the session was issued to.
    pub client: Option<&'a str>,
    /// The `sub` claim.
    pub subject: &'a [u8],
}

/// What decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The rule of this index (0-based, as in `routes[i].rules[j]`).
    Rule(usize),
    /// No rule matched: the route's `roles` (or, on a public route, nothing to check).
    Route,
    /// The path is not plain (see [`plain_path`]) on a route with path rules.
    Path,
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go on.
    pub allowed: bool,
    /// What decided.
    pub by: By,
}

/// A route's rules and roles, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    rules: Box<[Rule]>,
    /// The route's `roles`: any of them (empty: any identity).
    roles: Box<[Box<str>]>,
    /// Some rule has a `path`: requests must have a plain path.
    paths: bool,
}

fn names(key: &'static str, list: &Option<Vec<String>>) -> Result<Box<[Box<str>]>, RuleError> {
    let Some(list) = list else {
        return Ok(Box::default());
    };
    if list.is_empty() {
        return Err(bad(
            key,
            "must name at least one (leave it out to ask nothing of it)",
        ));
    }
    if list.len() > MAX_NAMES {
        return Err(bad(key, format!("must name at most {MAX_NAMES}")));
    }
    if list.iter().any(|n| n.is_empty() || n.len() > 256) {
        return Err(bad(key, "names must be 1 to 256 bytes"));
    }
    Ok(list.iter().map(|n| n.as_str().into()).collect())
}

impl Rule {
    fn compile(config: &RuleConfig, auth: bool) -> Result<Self, RuleError> {
        let methods = match &config.methods {
            None => Box::default(),
            Some(list) if list.is_empty() => {
                return Err(bad(
                    "methods",
                    "must name at least one method (leave it out for every method)",
                ));
            }
            Some(list) if list.len() > MAX_NAMES => {
                return Err(bad("methods", format!("must name at most {MAX_NAMES}")));
            }
            Some(list) => list
                .iter()
                .map(|m| {
                    let upper = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                    match Method::from_bytes(m.as_bytes()) {
                        Ok(method) if upper && m.len() <= 32 => Ok(method),
                        _ => Err(bad(
                            "methods",
                            format!("{m:?} is not a method: upper-case letters, like GET"),
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let path = config.path.as_deref().map(Glob::parse).transpose()?;
        let any_method = methods.is_empty();
        let method_bits = methods.iter().fold(0, |bits, m| bits | method_bit(m));
        let methods: Box<[Method]> = methods
            .iter()
            .filter(|m| method_bit(m) == 0)
            .cloned()
            .collect();
        let asks = [
            ("roles_any", &config.roles_any),
            ("roles_all", &config.roles_all),
            ("clients", &config.clients),
            ("subjects", &config.subjects),
        ];
        let asked = asks.iter().find(|(_, v)| v.is_some()).map(|(k, _)| *k);
        let requires = match (config.allow, asked) {
            (false, Some(key)) => {
                return Err(bad(
                    key,
                    "allow = false refuses outright: it takes no roles, clients or subjects",
                ));
            }
            (false, None) => Requires::Refuse,
            (true, Some(key)) if !auth => {
                return Err(bad(
                    key,
                    "a public route (auth = false) has no identity to check: its rules take allow only",
                ));
            }
            (true, _) => Requires::Identity {
                roles_any: names("roles_any", &config.roles_any)?,
                roles_all: names("roles_all", &config.roles_all)?,
                clients: names("clients", &config.clients)?,
                subjects: names("subjects", &config.subjects)?,
            },
        };
        Ok(Rule {
            any_method,
            method_bits,
            methods,
            path,
            requires,
        })
    }

    fn matches(&self, method: &Method, rest: &str) -> bool {
        let for_method = self.any_method
            || match method_bit(method) {
                0 => self.methods.contains(method),
                bit => self.method_bits & bit != 0,
            };
        for_method && self.path.as_ref().is_none_or(|g| g.matches(rest))
    }

    fn allows(&self, who: Option<Who<'_>>) -> bool {
        match &self.requires {
            Requires::Refuse => false,
            Requires::Identity {
                roles_any,
                roles_all,
                clients,
                subjects,
            } => {
                let Some(who) = who else {
                    // A public route: compile let no identity be asked for.
                    return roles_any.is_empty()
                        && roles_all.is_empty()
                        && clients.is_empty()
                        && subjects.is_empty();
                };
                let holds = |r: &str| who.roles.iter().any(|h| h == r);
                (roles_any.is_empty() || roles_any.iter().any(|r| holds(r)))
                    && roles_all.iter().all(|r| holds(r))
                    && (clients.is_empty()
                        || who
                            .client
                            .is_some_and(|c| clients.iter().any(|n| **n == *c)))
                    && (subjects.is_empty() || subjects.iter().any(|s| s.as_bytes() == who.subject))
            }
        }
    }
}

impl Policy {
    /// Compiles a route's rules; `roles` are the route's own, `auth` whether it is protected.
    /// The error names the rule's index.
    pub fn compile(
        rules: &[RuleConfig],
        roles: &[String],
        auth: bool,
    ) -> Result<Self, (usize, RuleError)> {
        if rules.len() > MAX_RULES {
            return Err((
                MAX_RULES,
                bad("rules", format!("a route takes at most {MAX_RULES} rules")),
            ));
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(r, auth).map_err(|e| (i, e)))
            .collect::<Result<Box<[Rule]>, _>>()?;
        Ok(Policy {
            paths: rules.iter().any(|r| r.path.is_some()),
            rules,
            roles: roles.iter().map(|r| r.as_str().into()).collect(),
        })
    }

    /// Whether the route has rules at all.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Decides a request: `rest` is its path below the route's prefix (see [`rest`]), `who`
    /// its identity (`None` on a public route).
    pub fn decide(&self, method: &Method, rest: &str, who: Option<Who<'_>>) -> Verdict {
        if self.paths && !plain_path(rest) {
            return Verdict {
                allowed: false,
                by: By::Path,
            };
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(method, rest) {
                return Verdict {
                    allowed: rule.allows(who),
                    by: By::Rule(i),
                };
            }
        }
        let allowed = match who {
            None => true,
            Some(who) => {
                self.roles.is_empty()
                    || self
                        .roles
                        .iter()
                        .any(|r| who.roles.iter().any(|h| h == &**r))
            }
        };
        Verdict {
            allowed,
            by: By::Route,
        }
    }
}

/// A request path below a route's prefix: after the prefix, and after the `/` that follows a
/// prefix not ending in one (`/api` and `/api/` both give `orders/7` for `/api/orders/7`).
pub fn rest<'p>(path: &'p str, prefix: &str) -> &'p str {
    let rest = path.get(prefix.len()..).unwrap_or("");
    if prefix.ends_with('/') {
        rest
    } else {
        rest.strip_prefix('/').unwrap_or(rest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
