#!/usr/bin/env python3
# Usage: python3 extract_schemas.py ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_33 > schemas.json
"""Builds src/openapi/schemas.json from k8s-openapi's v1_33 schema literals (which
carry the descriptions, types and formats of kube-apiserver's OpenAPI v3 documents), adding
the x-kubernetes-* extensions that k8s-openapi leaves out, as kube-apiserver v1.33 publishes
them."""
import json, re, sys, pathlib

root = pathlib.Path(sys.argv[1])  # .../k8s-openapi-0.29.0/src/v1_33
REF = "#/components/schemas/"

def name_of(crate_path):
    return "io.k8s." + crate_path.replace("crate::", "").replace("::", ".")

def load(crate_path):
    rel = crate_path.replace("crate::", "").split("::")
    kind = rel[-1]
    fname = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    fname = {"a_p_i_resource": "api_resource", "a_p_i_resource_list": "api_resource_list",
             "fields_v1": "fields_v1"}.get(fname, fname)
    path = root.joinpath(*rel[:-1], fname + ".rs")
    text = path.read_text()
    start = text.index("json_schema!({") + len("json_schema!(")
    depth, i = 0, start
    while True:
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "{(":
            depth += 1
        elif c in "})":
            depth -= 1
            if depth == 0:
                break
        i += 1
    body = text[start:i + 1]
    def with_desc(m):
        return json.dumps({"allOf": [{"$ref": REF + name_of(m.group(1))}], "description": json.loads(m.group(2))})
    body = re.sub(r'\(\{\s*let mut schema_obj = __gen\.subschema_for::<([\w:]+)>\(\);\s*'
                  r'schema_obj\.ensure_object\(\)\.insert\("description"\.into\(\), ("(?:[^"\\]|\\.)*")\.into\(\)\);\s*schema_obj\s*\}\)',
                  with_desc, body)
    body = re.sub(r'\(\{\s*let mut schema_obj = __gen\.subschema_for::<([\w:]+)>\(\);\s*schema_obj\s*\}\)',
                  lambda m: json.dumps({"allOf": [{"$ref": REF + name_of(m.group(1))}]}), body)
    body = re.sub(r'\(__gen\.subschema_for::<([\w:]+)>\(\)\)',
                  lambda m: json.dumps({"allOf": [{"$ref": REF + name_of(m.group(1))}]}), body)
    body = re.sub(r",(\s*[}\]])", r"\1", body)
    return json.loads(body)

types = [
    "crate::apimachinery::pkg::apis::meta::v1::APIResource",
    "crate::apimachinery::pkg::apis::meta::v1::APIResourceList",
    "crate::apimachinery::pkg::apis::meta::v1::DeleteOptions",
    "crate::apimachinery::pkg::apis::meta::v1::FieldsV1",
    "crate::apimachinery::pkg::apis::meta::v1::ListMeta",
    "crate::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry",
    "crate::apimachinery::pkg::apis::meta::v1::MicroTime",
    "crate::apimachinery::pkg::apis::meta::v1::ObjectMeta",
    "crate::apimachinery::pkg::apis::meta::v1::OwnerReference",
    "crate::apimachinery::pkg::apis::meta::v1::Patch",
    "crate::apimachinery::pkg::apis::meta::v1::Preconditions",
    "crate::apimachinery::pkg::apis::meta::v1::Status",
    "crate::apimachinery::pkg::apis::meta::v1::StatusCause",
    "crate::apimachinery::pkg::apis::meta::v1::StatusDetails",
    "crate::apimachinery::pkg::apis::meta::v1::Time",
    "crate::api::core::v1::ConfigMap",
    "crate::api::core::v1::Event",
    "crate::api::core::v1::EventSeries",
    "crate::api::core::v1::EventSource",
    "crate::api::core::v1::LocalObjectReference",
    "crate::api::core::v1::Namespace",
    "crate::api::core::v1::NamespaceCondition",
    "crate::api::core::v1::NamespaceSpec",
    "crate::api::core::v1::NamespaceStatus",
    "crate::api::core::v1::ObjectReference",
    "crate::api::core::v1::Secret",
    "crate::api::core::v1::ServiceAccount",
    "crate::api::coordination::v1::Lease",
    "crate::api::coordination::v1::LeaseSpec",
]
schemas = {name_of(t): load(t) for t in types}

def gvk(group, version, kind):
    return [{"group": group, "kind": kind, "version": version}]

kinds = {  # schema name -> (group, version, kind, list description, items description)
    "io.k8s.api.core.v1.ConfigMap": ("", "v1", "ConfigMap", "ConfigMapList is a resource containing a list of ConfigMap objects.", "Items is the list of ConfigMaps."),
    "io.k8s.api.core.v1.Event": ("", "v1", "Event", "EventList is a list of events.", "List of events"),
    "io.k8s.api.core.v1.Namespace": ("", "v1", "Namespace", "NamespaceList is a list of Namespaces.", "Items is the list of Namespace objects in the list. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/"),
    "io.k8s.api.core.v1.Secret": ("", "v1", "Secret", "SecretList is a list of Secret.", "Items is a list of secret objects. More info: https://kubernetes.io/docs/concepts/configuration/secret"),
    "io.k8s.api.core.v1.ServiceAccount": ("", "v1", "ServiceAccount", "ServiceAccountList is a list of ServiceAccount objects", "List of ServiceAccounts. More info: https://kubernetes.io/docs/tasks/configure-pod-container/configure-service-account/"),
    "io.k8s.api.coordination.v1.Lease": ("coordination.k8s.io", "v1", "Lease", "LeaseList is a list of Lease objects.", "items is a list of schema objects."),
}
API_VERSION = schemas["io.k8s.api.core.v1.ConfigMap"]["properties"]["apiVersion"]
KIND = schemas["io.k8s.api.core.v1.ConfigMap"]["properties"]["kind"]
for name, (g, v, k, list_desc, items_desc) in kinds.items():
    schemas[name]["x-kubernetes-group-version-kind"] = gvk(g, v, k)
    schemas[name + "List"] = {
        "description": list_desc,
        "properties": {
            "apiVersion": API_VERSION,
            "items": {"description": items_desc, "items": {"allOf": [{"$ref": REF + name}]}, "type": "array"},
            "kind": KIND,
            "metadata": {"allOf": [{"$ref": REF + "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}],
                         "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"},
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": gvk(g, v, k + "List"),
    }
schemas["io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList"]["x-kubernetes-group-version-kind"] = gvk("", "v1", "APIResourceList")
schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Status"]["x-kubernetes-group-version-kind"] = gvk("", "v1", "Status")

def ext(schema, prop, **extensions):
    target = schemas[schema]["properties"][prop] if prop else schemas[schema]
    for k, v in extensions.items():
        target["x-kubernetes-" + k.replace("_", "-")] = v

M = "io.k8s.apimachinery.pkg.apis.meta.v1."
ext(M + "APIResource", "categories", list_type="atomic")
ext(M + "APIResource", "shortNames", list_type="atomic")
ext(M + "APIResourceList", "resources", list_type="atomic")
ext(M + "DeleteOptions", "dryRun", list_type="atomic")
ext(M + "ObjectMeta", "finalizers", list_type="set", patch_strategy="merge")
ext(M + "ObjectMeta", "managedFields", list_type="atomic")
ext(M + "ObjectMeta", "ownerReferences", list_map_keys=["uid"], list_type="map", patch_merge_key="uid", patch_strategy="merge")
ext(M + "OwnerReference", None, map_type="atomic")
ext(M + "Status", "details", list_type="atomic")
ext(M + "StatusDetails", "causes", list_type="atomic")
C = "io.k8s.api.core.v1."
ext(C + "LocalObjectReference", None, map_type="atomic")
ext(C + "ObjectReference", None, map_type="atomic")
ext(C + "NamespaceSpec", "finalizers", list_type="atomic")
ext(C + "NamespaceStatus", "conditions", list_map_keys=["type"], list_type="map", patch_merge_key="type", patch_strategy="merge")
ext(C + "ServiceAccount", "imagePullSecrets", list_type="atomic")
ext(C + "ServiceAccount", "secrets", list_map_keys=["name"], list_type="map", patch_merge_key="name", patch_strategy="merge")

# k8s-openapi marks every non-optional Rust field required; kube-apiserver's documents do not
# require `metadata` except on core/v1 Event.
for name, s in schemas.items():
    req = s.get("required")
    if req and "metadata" in req and name != C + "Event":
        req.remove("metadata")
        if not req:
            del s["required"]

# Defaults as kube-apiserver publishes them: {} for struct items and non-pointer structs, "" for
# strings in lists and maps.
def defaults(s):
    if isinstance(s, dict):
        for key in ("items", "additionalProperties"):
            sub = s.get(key)
            if isinstance(sub, dict):
                if "allOf" in sub:
                    sub.setdefault("default", {})
                elif sub.get("type") == "string" and "format" not in sub:
                    sub.setdefault("default", "")
        for v in s.values():
            defaults(v)
    elif isinstance(s, list):
        for v in s:
            defaults(v)
defaults(schemas)
for name, s in schemas.items():
    meta = s.get("properties", {}).get("metadata")
    if meta and "allOf" in meta and name not in (M + "Status",) and not name.endswith("List"):
        meta["default"] = {}

def sort(v):
    if isinstance(v, dict):
        return {k: sort(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [sort(x) for x in v]
    return v
print(json.dumps(sort(schemas), indent=1, ensure_ascii=False))
