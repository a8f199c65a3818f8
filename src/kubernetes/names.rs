//! Kubernetes object name rules, shared by the backends: checked before any request, with
//! kube-apiserver's own messages. (The fake API server keeps its own copy of these rules, as a
//! crate that depends on nothing of lockheed.)

/// The longest object name.
const DNS1123_SUBDOMAIN_MAX: usize = 253;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without the length limit.
fn is_dns1123_label_shape(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
}

/// Why `name` is not a DNS-1123 subdomain (empty when it is one).
pub(crate) fn dns1123_subdomain_errors(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !name.split('.').all(is_dns1123_label_shape) {
        errors.push(DNS1123_SUBDOMAIN_MSG.to_owned());
    }
    errors
}
