//! The syntax errors of Go's `encoding/json`, which kube-apiserver puts in its answers to
//! request bodies (and continue tokens) that are not JSON: `invalid character 'n' looking for
//! beginning of object key string`, `unexpected end of JSON input`.
//!
//! A small validator walks the bytes as Go's scanner does and reports its first error in its
//! words; `serde_json` still does the decoding.

use std::fmt::Write as _;

/// Go's error for `data`, or `None` when it is valid JSON.
pub(crate) fn syntax_error(data: &[u8]) -> Option<String> {
    let mut scanner = Scanner { data, pos: 0 };
    scanner.document().err()
}

/// Go's `quoteChar`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        b'\n' => "'\\n'".to_owned(),
        b'\r' => "'\\r'".to_owned(),
        b'\t' => "'\\t'".to_owned(),
        c if c < 0x20 || c == 0x7f => format!("'\\x{c:02x}'"),
        // A byte of a multi-byte character: Go quotes the byte as the rune of that value.
        c => format!("'{}'", char::from(c)),
    }
}

struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
}

type Step = Result<(), String>;

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, String> {
        let c = self.peek().ok_or("unexpected end of JSON input")?;
        self.pos += 1;
        Ok(c)
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn invalid(c: u8, context: &str) -> String {
        format!("invalid character {} {context}", quote_char(c))
    }

    fn document(&mut self) -> Step {
        self.space();
        self.value()?;
        self.space();
        match self.peek() {
            None => Ok(()),
            Some(c) => Err(Self::invalid(c, "after top-level value")),
        }
    }

    fn value(&mut self) -> Step {
        self.space();
        let c = self.next()?;
        match c {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => self.number(c),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            c => Err(Self::invalid(c, "looking for beginning of value")),
        }
    }

    fn object(&mut self) -> Step {
        self.space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.space();
            match self.next()? {
                b'"' => self.string()?,
                c => {
                    return Err(Self::invalid(
                        c,
                        "looking for beginning of object key string",
                    ));
                }
            }
            self.space();
            match self.next()? {
                b':' => {}
                c => return Err(Self::invalid(c, "after object key")),
            }
            self.value()?;
            self.space();
            match self.next()? {
                b',' => {}
                b'}' => return Ok(()),
                c => return Err(Self::invalid(c, "after object key:value pair")),
            }
        }
    }

    fn array(&mut self) -> Step {
        self.space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value()?;
            self.space();
            match self.next()? {
                b',' => {}
                b']' => return Ok(()),
                c => return Err(Self::invalid(c, "after array element")),
            }
        }
    }

    fn string(&mut self) -> Step {
        loop {
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let c = self.next()?;
                            if !c.is_ascii_hexdigit() {
                                return Err(Self::invalid(
                                    c,
                                    "in \\u hexadecimal character escape",
                                ));
                            }
                        }
                    }
                    c => return Err(Self::invalid(c, "in string escape code")),
                },
                c if c < 0x20 => return Err(Self::invalid(c, "in string literal")),
                _ => {}
            }
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn number(&mut self, first: u8) -> Step {
        let first = if first == b'-' {
            match self.next()? {
                c @ b'0'..=b'9' => c,
                c => return Err(Self::invalid(c, "in numeric literal")),
            }
        } else {
            first
        };
        if first != b'0' {
            self.digits();
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            match self.next()? {
                b'0'..=b'9' => self.digits(),
                c => return Err(Self::invalid(c, "after decimal point in numeric literal")),
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            let mut c = self.next()?;
            if c == b'+' || c == b'-' {
                c = self.next()?;
            }
            if !c.is_ascii_digit() {
                return Err(Self::invalid(c, "in exponent of numeric literal"));
            }
            self.digits();
        }
        Ok(())
    }

    fn literal(&mut self, word: &str) -> Step {
        for expected in word.bytes().skip(1) {
            let c = self.next()?;
            if c != expected {
                return Err(Self::invalid(
                    c,
                    &format!("in literal {word} (expecting {})", quote_char(expected)),
                ));
            }
        }
        Ok(())
    }
}

/// `summarizeData`: how kube-apiserver quotes a body it could not read, in 30 bytes.
pub(crate) fn summarize(data: &[u8]) -> String {
    const MAX: usize = 30;
    let cut = &data[..data.len().min(MAX)];
    let more = if data.len() > MAX { " ..." } else { "" };
    match data.first() {
        None => "<empty>".to_owned(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(cut)),
        Some(_) => {
            let mut hex = String::with_capacity(2 * cut.len() + more.len());
            for b in cut {
                let _ = write!(hex, "{b:02x}");
            }
            hex.push_str(more);
            hex
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(s: &str) -> String {
        syntax_error(s.as_bytes()).unwrap_or_default()
    }

    #[test]
    fn valid_documents_have_no_error() {
        for ok in [
            r#"{"a":[1,-2.5e+3,true,null,"x\u00e9\n"]}"#,
            " 0 ",
            "[]",
            "{}",
        ] {
            assert_eq!(syntax_error(ok.as_bytes()), None, "{ok}");
        }
    }

    /// Messages of Go's encoding/json, as kube-apiserver v1.37.2 answered them.
    #[test]
    fn errors_are_gos() {
        assert_eq!(
            error("{not json"),
            "invalid character 'n' looking for beginning of object key string"
        );
        assert_eq!(
            error("not a token"),
            "invalid character 'o' in literal null (expecting 'u')"
        );
        assert_eq!(
            error(r#"{"a" 1}"#),
            "invalid character '1' after object key"
        );
        assert_eq!(
            error(r#"{"a":1 "b"}"#),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(error("[1 2]"), "invalid character '2' after array element");
        assert_eq!(error("{} x"), "invalid character 'x' after top-level value");
        assert_eq!(error("-x"), "invalid character 'x' in numeric literal");
        assert_eq!(
            error("1.e5"),
            "invalid character 'e' after decimal point in numeric literal"
        );
        assert_eq!(error("{\"a\":"), "unexpected end of JSON input");
        assert_eq!(error(""), "unexpected end of JSON input");
        assert_eq!(
            error("\"\\q\""),
            "invalid character 'q' in string escape code"
        );
    }

    #[test]
    fn summaries() {
        assert_eq!(summarize(b""), "<empty>");
        assert_eq!(summarize(b"{not json"), "{not json");
        assert_eq!(summarize(&[0xff, 0x01]), "ff01");
        assert_eq!(summarize(&[b'{'; 31]), format!("{} ...", "{".repeat(30)));
    }
}
