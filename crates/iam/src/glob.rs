//! IAM's wildcards: `*` matches any run of characters (including none), `?` any one character.

/// Whether `text` matches `pattern`. Iterative, with one backtrack point: linear in practice,
/// never exponential, whatever the pattern.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn wildcards() {
        assert!(glob("*", ""));
        assert!(glob("kinesis:get*", "kinesis:getrecords"));
        assert!(glob("kinesis:*records", "kinesis:putrecords"));
        assert!(!glob("kinesis:*records", "kinesis:putrecord"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob(
            "arn:aws:kinesis:*:*:stream/orders-*",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders-eu"
        ));
        assert!(!glob("abc", "abcd"));
        assert!(glob(&"*a".repeat(30), &"a".repeat(60)));
        assert!(!glob(&"*a".repeat(30), &"b".repeat(60)));
    }
}
