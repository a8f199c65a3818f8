//! Decoding of the protobuf request bodies that `kubectl` sends for built-in types.
//!
//! `kubectl create configmap` and `kubectl create namespace` send
//! `application/vnd.kubernetes.protobuf` and do not fall back to JSON on 415, so the server
//! reads that encoding for the kinds that matter here (ConfigMap and Namespace). Responses are
//! always JSON, which every client accepts.

use serde_json::{Map, Value, json};

/// The 4-byte prefix of every Kubernetes protobuf document.
const MAGIC: &[u8] = b"k8s\0";

type Result<T> = std::result::Result<T, String>;

/// One field of a protobuf message: its number and raw value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 64 bits".into())
}

/// Iterates over the fields of one message.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let number = key >> 3;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut buf)?),
            1 => {
                buf = buf.get(8..).ok_or("truncated fixed64")?;
                continue;
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length too large")?;
                let bytes = buf.get(..len).ok_or("truncated length-delimited field")?;
                buf = &buf[len..];
                Field::Bytes(bytes)
            }
            5 => {
                buf = buf.get(4..).ok_or("truncated fixed32")?;
                continue;
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn string(field: &Field<'_>) -> Result<String> {
    match field {
        Field::Bytes(b) => {
            String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".into())
        }
        Field::Varint(_) => Err("expected a string".into()),
    }
}

fn message<'a>(field: &Field<'a>) -> Result<&'a [u8]> {
    match field {
        Field::Bytes(b) => Ok(b),
        Field::Varint(_) => Err("expected a message".into()),
    }
}

/// A `map<string, string>` entry.
fn map_entry(field: &Field<'_>) -> Result<(String, Value)> {
    let (mut key, mut value) = (String::new(), String::new());
    for (number, f) in fields(message(field)?)? {
        match number {
            1 => key = string(&f)?,
            2 => value = string(&f)?,
            _ => {}
        }
    }
    Ok((key, Value::String(value)))
}

fn object_meta(buf: &[u8]) -> Result<Value> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (number, f) in fields(buf)? {
        let name = match number {
            1 => "name",
            2 => "generateName",
            3 => "namespace",
            5 => "uid",
            6 => "resourceVersion",
            11 => {
                let (k, v) = map_entry(&f)?;
                labels.insert(k, v);
                continue;
            }
            12 => {
                let (k, v) = map_entry(&f)?;
                annotations.insert(k, v);
                continue;
            }
            14 => {
                finalizers.push(Value::String(string(&f)?));
                continue;
            }
            // Server-owned or unsupported here (timestamps, owner references, managed fields).
            _ => continue,
        };
        // gogo-protobuf writes empty strings too; JSON omits them.
        let value = string(&f)?;
        if !value.is_empty() {
            meta.insert(name.into(), Value::String(value));
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(meta))
}

fn config_map(buf: &[u8]) -> Result<Value> {
    let mut object = json!({});
    let mut data = Map::new();
    for (number, f) in fields(buf)? {
        match number {
            1 => object["metadata"] = object_meta(message(&f)?)?,
            2 => {
                let (k, v) = map_entry(&f)?;
                data.insert(k, v);
            }
            3 => return Err("binaryData is not supported in protobuf bodies; send JSON".into()),
            4 => object["immutable"] = json!(matches!(f, Field::Varint(v) if v != 0)),
            _ => {}
        }
    }
    if !data.is_empty() {
        object["data"] = Value::Object(data);
    }
    Ok(object)
}

fn namespace(buf: &[u8]) -> Result<Value> {
    let mut object = json!({});
    for (number, f) in fields(buf)? {
        if number == 1 {
            object["metadata"] = object_meta(message(&f)?)?;
        }
    }
    Ok(object)
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into its JSON form.
pub(crate) fn decode(body: &[u8]) -> Result<Value> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("a protobuf body must start with the Kubernetes magic number")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, f) in fields(envelope)? {
        match number {
            1 => {
                for (n, tf) in fields(message(&f)?)? {
                    match n {
                        1 => api_version = string(&tf)?,
                        2 => kind = string(&tf)?,
                        _ => {}
                    }
                }
            }
            2 => raw = message(&f)?,
            _ => {}
        }
    }
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => config_map(raw)?,
        ("v1", "Namespace") => namespace(raw)?,
        _ => {
            return Err(format!(
                "the fake API server reads protobuf only for ConfigMap and Namespace, not \
                 {api_version}/{kind}; send JSON"
            ));
        }
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(number << 3 | 2).unwrap()];
        out.push(u8::try_from(payload.len()).unwrap());
        out.extend_from_slice(payload);
        out
    }

    fn entry(k: &str, v: &str) -> Vec<u8> {
        [bytes_field(1, k.as_bytes()), bytes_field(2, v.as_bytes())].concat()
    }

    #[test]
    fn decodes_a_configmap_like_kubectl_sends() {
        let meta = [
            bytes_field(1, b"foo"),
            bytes_field(3, b"default"),
            bytes_field(11, &entry("app", "x")),
        ]
        .concat();
        let cm = [bytes_field(1, &meta), bytes_field(2, &entry("a", "b"))].concat();
        let type_meta = [bytes_field(1, b"v1"), bytes_field(2, b"ConfigMap")].concat();
        let body = [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, &cm),
        ]
        .concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "foo", "namespace": "default", "labels": {"app": "x"}},
                "data": {"a": "b"},
            })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            &b"nope"[..],
            b"k8s\0\x0a\xff",
            b"k8s\0\x0a\x05ab",
            b"k8s\0\x0f",
        ] {
            assert!(decode(body).is_err());
        }
    }
}
