//! The differences between the fake server and kube-apiserver that the differential tests
//! accept: each is named in the crate's "What it does not emulate" (README and `lib.rs`).

/// Each known difference: its signature
/// ([`Difference::signature`](crate::compare::Difference::signature)), and why it stays.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "LIST configmaps: body.kind: Table → ConfigMapList",
        "table output: `kubectl get` asks for a Table, and prints the plain list the fake \
         server sends as well",
    ),
    (
        "PATCH leases (merge): body.details.causes[*].message: differs",
        "a patch whose result does not decode (a MicroTime of another shape) is refused with \
         the patched object quoted: in Go's field order by kube-apiserver, with sorted keys \
         here",
    ),
    (
        "PATCH leases (merge): body.message: differs",
        "the same object, quoted in the message",
    ),
    (
        "POST configmaps: body: protobuf → JSON",
        "protobuf: `kubectl create` asks for protobuf first, and reads the JSON the fake \
         server answers",
    ),
    (
        "POST configmaps: headers.content-type: differs",
        "the same: `application/json` instead of `application/vnd.kubernetes.protobuf`",
    ),
];

/// How many kinds of differences remain: a new one, or one fixed, changes it.
pub const PINNED: usize = 5;
