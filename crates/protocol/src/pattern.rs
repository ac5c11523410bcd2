//! `*` patterns: the channel grants of tokens and the origin lists of
//! upgrades.

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (including none) and every other character only itself.
///
/// Linear in `pattern.len() * text.len()` at worst (no backtracking
/// blow-up), so a hostile pattern or id costs little.
///
/// ```
/// use sente_lite_protocol::wildcard_match;
/// assert!(wildcard_match("chat:*", "chat:lobby"));
/// assert!(wildcard_match("https://*.example.com", "https://app.example.com"));
/// assert!(!wildcard_match("chat:*", "admin:chat"));
/// assert!(wildcard_match("*", ""));
/// ```
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it has matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` take one more byte and retry after it.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::wildcard_match as m;

    #[test]
    fn literals_and_stars() {
        assert!(m("chat", "chat"));
        assert!(!m("chat", "chat2"));
        assert!(!m("chat2", "chat"));
        assert!(m("*", "anything"));
        assert!(m("a*c", "abbbc"));
        assert!(m("a*c", "ac"));
        assert!(!m("a*c", "abcd"));
        assert!(m("*:*", "ns:x"));
        assert!(!m("*:*", "nsx"));
        assert!(m("user:*:inbox", "user:42:inbox"));
        assert!(!m("user:*:inbox", "user:42:outbox"));
        assert!(m("**", ""));
        assert!(!m("", "x"));
        assert!(m("", ""));
    }

    #[test]
    fn multibyte_text_matches_by_bytes() {
        assert!(m("café:*", "café:menu"));
        assert!(m("*é", "café"));
    }

    #[test]
    fn hostile_inputs_stay_cheap() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "*a".repeat(100));
        assert!(!m(&pattern, &text));
    }
}
