//! Kubernetes object name rules, checked as kube-apiserver checks them (apimachinery's
//! `IsDNS1123Subdomain`, with its messages).

/// The longest object name.
pub(crate) const DNS1123_SUBDOMAIN_MAX: usize = 253;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without the length limit.
pub(crate) fn is_dns1123_label_shape(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
}

/// Why `name` is not a DNS-1123 subdomain (empty when it is one), as object names are checked
/// (apimachinery's `util/validation`).
pub(crate) fn dns1123_subdomain_errors(name: &str) -> Vec<String> {
    subdomain_errors(name, "characters")
}

/// The same for the prefix of a label or annotation key, which apimachinery's newer
/// `api/validate/content` checks, measuring in bytes.
pub(crate) fn dns1123_subdomain_errors_in_bytes(name: &str) -> Vec<String> {
    subdomain_errors(name, "bytes")
}

fn subdomain_errors(name: &str, unit: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} {unit}"
        ));
    }
    if !name.split('.').all(is_dns1123_label_shape) {
        errors.push(DNS1123_SUBDOMAIN_MSG.to_owned());
    }
    errors
}
