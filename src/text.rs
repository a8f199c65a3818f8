//! Text read from the cluster, made safe to print on a terminal: by the library's messages
//! (a `Holder`'s line, errors) and by both command lines.

use std::borrow::Cow;

/// `text` as it is, or, when it has control characters or direction overrides, quoted with
/// them escaped: holder identities, tags and reasons come from the cluster, written by anyone,
/// and an escape sequence in one must not move the cursor or recolour the terminal of whoever
/// lists the locks.
///
/// # Examples
///
/// ```
/// use lockheed::text::printable;
///
/// assert_eq!(printable("worker-1"), "worker-1");
/// assert_eq!(printable("evil\u{1b}[2J"), "\"evil\\u{1b}[2J\"");
/// ```
#[must_use]
pub fn printable(text: &str) -> Cow<'_, str> {
    // Control characters, and the direction marks and overrides that make text read in
    // another order than it is stored ("Trojan Source").
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if text.chars().any(unsafe_char) {
        Cow::Owned(format!("{text:?}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert_eq!(printable("worker-1 ünï 🔒"), "worker-1 ünï 🔒");
        assert_eq!(printable("esc \u{1b}[31mred"), "\"esc \\u{1b}[31mred\"");
        assert_eq!(printable("a\tb"), "\"a\\tb\"");
        assert_eq!(printable("\u{202e}fdp.exe"), "\"\\u{202e}fdp.exe\"");
    }
}
