//! [`Policy`] (who may do what, per namespace) and [`JwtAuthorizer`].

use crate::jwt::JwtVerifier;
use sente_lite_channels::{namespace_of, ConnAddr};
use sente_lite_protocol::wildcard_match;
use sente_lite_session::{Authorizer, ConnectInfo, Identity, Refusal};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Who may do an operation on a namespace's channels; in configuration
/// files, its lower-case name (`"granted"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Who {
    /// Every connection, anonymous ones included.
    #[default]
    Anyone,
    /// Connections with an accepted token.
    Authenticated,
    /// Connections subscribed to the channel (publish and rpc-call only).
    Subscribers,
    /// Connections whose token's `channels` claim has a pattern matching
    /// the channel id.
    Granted,
    /// No client (the server's Rust API still can).
    Nobody,
}

impl Who {
    /// Every choice, as named in the configuration.
    pub const ALL: [Who; 5] = [
        Who::Anyone,
        Who::Authenticated,
        Who::Subscribers,
        Who::Granted,
        Who::Nobody,
    ];

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Who::Anyone => "anyone",
            Who::Authenticated => "authenticated",
            Who::Subscribers => "subscribers",
            Who::Granted => "granted",
            Who::Nobody => "nobody",
        }
    }

    fn allows(self, who: &Identity, channel: &str, subscribed: bool) -> bool {
        match self {
            Who::Anyone => true,
            Who::Authenticated => who.is_authenticated(),
            Who::Subscribers => subscribed,
            Who::Granted => {
                who.is_authenticated() && who.channels.iter().any(|p| wildcard_match(p, channel))
            }
            Who::Nobody => false,
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not one of the [`Who`] spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not one of anyone, authenticated, subscribers, granted, nobody")]
pub struct UnknownWho(pub String);

impl FromStr for Who {
    type Err = UnknownWho;
    fn from_str(s: &str) -> Result<Who, UnknownWho> {
        Ok(match s {
            "anyone" => Who::Anyone,
            "authenticated" => Who::Authenticated,
            "subscribers" => Who::Subscribers,
            "granted" => Who::Granted,
            "nobody" => Who::Nobody,
            other => return Err(UnknownWho(other.to_owned())),
        })
    }
}

/// Who may subscribe to, publish to and call the workers of a namespace's
/// channels. Subscribers are a channel's RPC workers, so `subscribe` also
/// decides who sees its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    /// `anyone`, `authenticated` or `granted`.
    pub subscribe: Who,
    /// Any [`Who`].
    pub publish: Who,
    /// Any [`Who`].
    pub rpc_call: Who,
}

/// The rules of every namespace. A channel id `ns:rest` is in namespace
/// `ns`; ids without a `:` and ids of namespaces not listed follow
/// `default` (which allows anyone everything unless configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The default namespace's rules.
    pub default: Rules,
    /// Each named namespace's rules.
    pub namespaces: Vec<(String, Rules)>,
}

impl Policy {
    /// The rules that govern `channel`.
    pub fn rules(&self, channel: &str) -> &Rules {
        namespace_of(channel)
            .and_then(|ns| self.namespaces.iter().find(|(n, _)| n == ns))
            .map_or(&self.default, |(_, r)| r)
    }
}

/// The server's [`Authorizer`]: identities from JSON Web Tokens (on the
/// upgrade as `?token=` or `Authorization: Bearer`, or later in an
/// `authenticate` frame) and permissions from a [`Policy`]. A refusal of
/// an operation is `forbidden`; a bad token is `unauthorized`.
#[derive(Debug, Clone)]
pub struct JwtAuthorizer {
    verifier: Option<JwtVerifier>,
    allow_anonymous: bool,
    timeout: Duration,
    policy: Policy,
}

impl JwtAuthorizer {
    /// An authorizer checking tokens with `verifier` (none: tokens are
    /// refused), letting connections without a token act when
    /// `allow_anonymous`, giving the others `timeout` to authenticate, and
    /// applying `policy`.
    pub fn new(
        verifier: Option<JwtVerifier>,
        allow_anonymous: bool,
        timeout: Duration,
        policy: Policy,
    ) -> JwtAuthorizer {
        JwtAuthorizer {
            verifier,
            allow_anonymous,
            timeout,
            policy,
        }
    }

    /// The policy applied.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn check(
        &self,
        rule: Who,
        op: &str,
        who: &Identity,
        channel: &str,
        subscribed: bool,
    ) -> Result<(), Refusal> {
        if rule.allows(who, channel, subscribed) {
            return Ok(());
        }
        let needs = match rule {
            Who::Authenticated => "an authenticated user",
            Who::Subscribers => "a subscription to the channel",
            Who::Granted => "a token granting the channel",
            Who::Nobody | Who::Anyone => "the server's own API",
        };
        Err(Refusal::forbidden(format!(
            "{op} on this channel needs {needs}"
        )))
    }
}

/// The token a connection presents on its upgrade: `?token=` in the query,
/// else an `Authorization: Bearer` header.
pub fn presented_token(info: &ConnectInfo) -> Option<String> {
    if let Some((_, query)) = info.target.split_once('?') {
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                return Some(percent_decode(v));
            }
        }
    }
    let h = info.header("authorization")?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_owned())
}

/// `%XX` and `+` decoding of a query value (invalid escapes stay as they
/// are; a token that decodes to nonsense fails its own checks).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, b[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Authorizer for JwtAuthorizer {
    fn connect(&self, info: &ConnectInfo) -> Result<Identity, Refusal> {
        match presented_token(info) {
            Some(token) => self.authenticate(&token),
            None => Ok(Identity::anonymous()),
        }
    }

    fn authenticate(&self, token: &str) -> Result<Identity, Refusal> {
        let Some(v) = &self.verifier else {
            return Err(Refusal::unauthorized(
                "this server has no key to check tokens with",
            ));
        };
        v.verify(token)
            .map_err(|e| Refusal::unauthorized(format!("token refused: {e}")))
    }

    fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    fn auth_timeout(&self) -> Duration {
        self.timeout
    }

    fn subscribe(&self, who: &Identity, _: &ConnAddr, channel: &str) -> Result<(), Refusal> {
        let rule = self.policy.rules(channel).subscribe;
        self.check(rule, "subscribe", who, channel, false)
    }

    fn publish(
        &self,
        who: &Identity,
        _: &ConnAddr,
        channel: &str,
        subscribed: bool,
    ) -> Result<(), Refusal> {
        let rule = self.policy.rules(channel).publish;
        self.check(rule, "publish", who, channel, subscribed)
    }

    fn rpc_call(
        &self,
        who: &Identity,
        _: &ConnAddr,
        channel: &str,
        subscribed: bool,
    ) -> Result<(), Refusal> {
        let rule = self.policy.rules(channel).rpc_call;
        self.check(rule, "rpc-call", who, channel, subscribed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(target: &str, headers: &[(&str, &str)]) -> ConnectInfo {
        ConnectInfo {
            peer: None,
            target: target.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn token_from_query_or_bearer() {
        assert_eq!(
            presented_token(&info("/?token=abc", &[])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&info("/?x=1&token=a%2Eb", &[])).as_deref(),
            Some("a.b")
        );
        assert_eq!(
            presented_token(&info("/", &[("authorization", "Bearer xyz")])).as_deref(),
            Some("xyz")
        );
        assert_eq!(
            presented_token(&info("/", &[("authorization", "bearer  xyz ")])).as_deref(),
            Some("xyz")
        );
        assert_eq!(
            presented_token(&info("/", &[("authorization", "Basic xyz")])),
            None
        );
        assert_eq!(presented_token(&info("/?tokens=1", &[])), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn rules_by_namespace() {
        let strict = Rules {
            subscribe: Who::Granted,
            publish: Who::Subscribers,
            rpc_call: Who::Nobody,
        };
        let p = Policy {
            default: Rules::default(),
            namespaces: vec![("private".into(), strict)],
        };
        let a = JwtAuthorizer::new(None, true, Duration::from_secs(1), p);
        let conn: ConnAddr = "conn-1-1".parse().unwrap();
        let anon = Identity::anonymous();
        let mut bob = Identity::user("bob");
        bob.channels = vec!["private:bob-*".into()];
        assert!(a.subscribe(&anon, &conn, "lobby").is_ok());
        assert!(
            a.subscribe(&anon, &conn, "other:x").is_ok(),
            "unlisted namespace: default rules"
        );
        assert!(a.subscribe(&anon, &conn, "private:bob-1").is_err());
        assert!(a.subscribe(&bob, &conn, "private:bob-1").is_ok());
        assert!(a.subscribe(&bob, &conn, "private:alice-1").is_err());
        assert!(a.publish(&bob, &conn, "private:bob-1", false).is_err());
        assert!(a.publish(&bob, &conn, "private:bob-1", true).is_ok());
        let r = a.rpc_call(&bob, &conn, "private:bob-1", true).unwrap_err();
        assert_eq!(r.reason, sente_lite_protocol::Reason::Forbidden);
    }
}
