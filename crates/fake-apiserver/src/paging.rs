//! Continue tokens of paginated lists, in kube-apiserver's format: base64url (no padding) of
//! `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<key after the last item>"}`, the key
//! relative to the list's prefix (`/<name>\u0000` in a namespace, `/<namespace>/<name>\u0000`
//! across namespaces). Revision `-1` asks for the rest of the list as it is now (the token of a
//! `410 Gone`).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Where a continue token says to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Continue {
    /// The revision of the list's snapshot; `-1`: the current state.
    pub(crate) rv: i64,
    /// The first key to list (relative to the list's prefix).
    pub(crate) start: String,
}

impl Continue {
    /// The token.
    pub(crate) fn encode(&self) -> String {
        let start = serde_json::to_string(&self.start).unwrap_or_else(|_| "\"\"".to_owned());
        let json = format!(
            r#"{{"v":"meta.k8s.io/v1","rv":{},"start":{start}}}"#,
            self.rv
        );
        encode(json.as_bytes())
    }

    /// Reads a token as `storage.DecodeContinue` does.
    ///
    /// # Errors
    ///
    /// kube-apiserver's message, without its `invalid continue token: ` prefix.
    pub(crate) fn decode(token: &str) -> Result<Self, String> {
        const INVALID: &str = "continue key is not valid";
        let data = decode(token).map_err(|e| format!("{INVALID}: {e}"))?;
        if let Some(error) = crate::gojson::syntax_error(&data) {
            return Err(format!("{INVALID}: {error}"));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&data).map_err(|e| format!("{INVALID}: {e}"))?;
        match value["v"].as_str() {
            Some("meta.k8s.io/v1") => {}
            other => {
                return Err(format!(
                    "{INVALID}: server does not recognize this encoded version {}",
                    other.unwrap_or_default()
                ));
            }
        }
        let rv = value["rv"].as_i64().unwrap_or(0);
        if rv == 0 {
            return Err(format!(
                "{INVALID}: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
            ));
        }
        let start = value["start"].as_str().unwrap_or_default();
        if start.is_empty() {
            return Err(format!(
                "{INVALID}: encoded start key empty (version meta.k8s.io/v1)"
            ));
        }
        // A key that climbs out of the list's prefix (`..`) is refused.
        let key = if start.starts_with('/') {
            start.to_owned()
        } else {
            format!("/{start}")
        };
        if key.split('/').any(|s| s == ".." || s == ".") || key.contains("//") {
            return Err(format!("{INVALID}: {start}"));
        }
        Ok(Self { rv, start: key })
    }
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Go's `base64.RawURLEncoding.DecodeString`, with its error.
fn decode(text: &str) -> Result<Vec<u8>, String> {
    let mut bits = 0_u32;
    let mut count = 0;
    let mut out = Vec::new();
    for (i, c) in text.bytes().enumerate() {
        let Some(value) = ALPHABET.iter().position(|a| *a == c) else {
            return Err(format!("illegal base64 data at input byte {i}"));
        };
        bits = (bits << 6) | u32::try_from(value).unwrap_or(0);
        count += 1;
        if count == 4 {
            out.extend_from_slice(&bits.to_be_bytes()[1..]);
            bits = 0;
            count = 0;
        }
    }
    match count {
        0 => {}
        1 => {
            return Err(format!(
                "illegal base64 data at input byte {}",
                text.len() - 1
            ));
        }
        2 => out.push(u8::try_from(bits >> 4).unwrap_or(0)),
        _ => out.extend_from_slice(&(bits >> 2).to_be_bytes()[2..]),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kube_apiservers() {
        // A token kube-apiserver v1.37.2 gave (tests/differential/sequences/protocol-list.json).
        let real = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6Mjc1LCJzdGFydCI6Ii9jMlx1MDAwMCJ9";
        let token = Continue::decode(real).unwrap();
        assert_eq!(
            token,
            Continue {
                rv: 275,
                start: "/c2\u{0}".into()
            }
        );
        assert_eq!(token.encode(), real);
        let inconsistent = Continue {
            rv: -1,
            start: "/c\u{0}".into(),
        };
        assert_eq!(
            Continue::decode(&inconsistent.encode()).unwrap(),
            inconsistent
        );
    }

    #[test]
    fn bad_tokens_are_refused_in_kube_apiservers_words() {
        assert_eq!(
            Continue::decode("bm90IGEgdG9rZW4").unwrap_err(),
            "continue key is not valid: invalid character 'o' in literal null (expecting 'u')"
        );
        assert_eq!(
            Continue::decode("a=").unwrap_err(),
            "continue key is not valid: illegal base64 data at input byte 1"
        );
        assert!(Continue::decode(&encode(br#"{"v":"x","rv":1,"start":"/a"}"#)).is_err());
        assert!(
            Continue::decode(&encode(br#"{"v":"meta.k8s.io/v1","rv":1,"start":"/../a"}"#)).is_err()
        );
        for garbage in ["", "é", "A", "AA", "AAA"] {
            let _ = Continue::decode(garbage);
        }
    }
}
