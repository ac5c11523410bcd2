//! [`redact_credentials`]: URLs with a password, made safe to show on the
//! wire (`/health`, error messages) and in logs.

use std::borrow::Cow;

/// What a redacted password reads as.
pub const REDACTED: &str = "<redacted>";

/// `text` with the password of every URL in it (`scheme://user:password@host`)
/// replaced by [`REDACTED`], so an error message or a configuration that
/// names a Redis URL can be shown: `redis://app:hunter2@db:6379/0` becomes
/// `redis://app:<redacted>@db:6379/0`. A URL with a user name only
/// (`redis://app@db`) names no secret and is left as it is.
pub fn redact_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        // The authority ends at the path, the query, the fragment, or
        // where the text stops looking like a URL.
        let end = rest
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        // The last `@` ends the user info (a password may contain `@`).
        match authority.rfind('@') {
            Some(at) => match authority[..at].find(':') {
                Some(colon) => {
                    out.push_str(&authority[..=colon]);
                    out.push_str(REDACTED);
                    out.push_str(&authority[at..]);
                    changed = true;
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted_and_nothing_else() {
        let cases = [
            (
                "redis://app:hunter2@db:6379/0",
                "redis://app:<redacted>@db:6379/0",
            ),
            ("redis://:hunter2@db", "redis://:<redacted>@db"),
            ("redis://app:p@ss@db:1/", "redis://app:<redacted>@db:1/"),
            (
                "connect to redis://u:pw@h:1/: refused; then unix://x:y@z",
                "connect to redis://u:<redacted>@h:1/: refused; then unix://x:<redacted>@z",
            ),
            ("redis://app@db:6379/", "redis://app@db:6379/"),
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("no url here: a:b@c", "no url here: a:b@c"),
            ("", ""),
            ("ends with ://", "ends with ://"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_credentials(input), want, "{input}");
        }
        assert!(matches!(redact_credentials("redis://h/"), Cow::Borrowed(_)));
    }
}
