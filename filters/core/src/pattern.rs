//! Model-name patterns: exact names or globs where `*` matches any run of characters and `?` one.

/// A compiled pattern: exact, or a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Glob(Vec<char>),
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        if text.contains(['*', '?']) {
            Pattern::Glob(text.chars().collect())
        } else {
            Pattern::Exact(text.to_string())
        }
    }

    pub fn is_glob(&self) -> bool {
        matches!(self, Pattern::Glob(_))
    }

    pub fn matches(&self, candidate: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == candidate,
            Pattern::Glob(glob) => glob_matches(glob, &candidate.chars().collect::<Vec<_>>()),
        }
    }
}

/// Iterative wildcard match with single-star backtracking: linear in practice, no recursion, so a
/// hostile model name cannot blow the stack or take exponential time.
fn glob_matches(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == '?' || Some(c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).unwrap_or(&[]).iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o*", "gpt-4o", true),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-4o*", "gpt-4", false),
            ("*", "", true),
            ("*", "anything", true),
            ("claude-*-4-5", "claude-sonnet-4-5", true),
            ("claude-*-4-5", "claude-sonnet-4-6", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("ü*", "über", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn pathological_input_is_fast() {
        let pattern = Pattern::new("*a*a*a*a*a*a*a*a*b");
        let text = "a".repeat(10_000);
        assert!(!pattern.matches(&text));
    }

    #[test]
    fn kinds() {
        assert!(Pattern::new("x*").is_glob());
        assert!(!Pattern::new("x").is_glob());
    }
}
