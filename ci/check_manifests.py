#!/usr/bin/env python3
"""Offline schema checks for every Kubernetes manifest in the repository.

Each YAML document of each file given is checked against a schema, and a
document that no schema covers is an error (a typo'd kind must not pass):

- built-in kinds (Deployment, Service, CustomResourceDefinition, ...) against
  the Kubernetes OpenAPI schemas that the `kubernetes-validate` package ships,
  in strict mode (unknown fields are errors, as `kubectl apply` reports them
  with its default --validate=strict), for each Kubernetes version asked for;
- custom resources against the openAPIV3Schema of the matching served version
  of a CRD found in --crds, made strict the way the API server's field
  validation is (unknown fields are errors unless the schema preserves them).
  CEL rules (x-kubernetes-validations) cannot be evaluated here and are
  counted, not checked; the webhook tests cover those rules.

Exit status: 0 when every document passed, 1 otherwise. Needs no network.
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import sys
from dataclasses import dataclass, field

import jsonschema
import kubernetes_validate
import yaml

# Metadata fields a user may set on a custom resource (ObjectMeta, less the
# fields the API server owns).
USER_METADATA = {
    "name": str,
    "generateName": str,
    "namespace": str,
    "labels": dict,
    "annotations": dict,
    "finalizers": list,
    "ownerReferences": list,
}


@dataclass
class Crd:
    group: str
    kind: str
    scope: str
    # version name -> strict JSON schema (served versions only)
    schemas: dict[str, dict] = field(default_factory=dict)
    cel_rules: int = 0
    source: str = ""


def load_documents(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: document {i} is not a mapping")
    return docs


def strict_schema(node: dict) -> tuple[dict, int]:
    """OpenAPI v3 (structural) schema -> JSON schema with the API server's
    strictness; returns the schema and the number of CEL rules seen."""
    node = copy.deepcopy(node)
    rules = 0

    def walk(n: dict) -> dict:
        nonlocal rules
        rules += len(n.pop("x-kubernetes-validations", []) or [])
        if n.pop("x-kubernetes-int-or-string", False):
            n.pop("type", None)
            n["anyOf"] = n.get("anyOf", []) + [{"type": "integer"}, {"type": "string"}]
        preserve = n.pop("x-kubernetes-preserve-unknown-fields", False)
        for key in list(n):
            if key.startswith("x-kubernetes-"):
                n.pop(key)
        if n.pop("nullable", False) and "type" in n:
            n["type"] = [n["type"], "null"]
        for key in ("properties", "patternProperties"):
            if key in n:
                n[key] = {k: walk(v) for k, v in n[key].items()}
        if isinstance(n.get("items"), dict):
            n["items"] = walk(n["items"])
        if isinstance(n.get("additionalProperties"), dict):
            n["additionalProperties"] = walk(n["additionalProperties"])
        for key in ("allOf", "anyOf", "oneOf"):
            if key in n:
                n[key] = [walk(s) for s in n[key]]
        if "not" in n and isinstance(n["not"], dict):
            n["not"] = walk(n["not"])
        if "properties" in n and "additionalProperties" not in n and not preserve:
            n["additionalProperties"] = False
        return n

    schema = walk(node)
    # The API server always accepts these at the root, whatever the schema
    # lists; ObjectMeta is checked on its own (see check_metadata).
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    return schema, rules


def load_crds(directory: str) -> dict[tuple[str, str], Crd]:
    crds: dict[tuple[str, str], Crd] = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml")) + glob.glob(os.path.join(directory, "*.yml"))):
        for doc in load_documents(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc.get("spec", {})
            crd = Crd(group=spec["group"], kind=spec["names"]["kind"], scope=spec.get("scope", ""), source=path)
            for version in spec.get("versions", []):
                if not version.get("served", False):
                    continue
                raw = (version.get("schema") or {}).get("openAPIV3Schema")
                if raw is None:
                    raise ValueError(f"{path}: {crd.kind} {version['name']} has no openAPIV3Schema")
                schema, rules = strict_schema(raw)
                jsonschema.Draft4Validator.check_schema(schema)
                crd.schemas[version["name"]] = schema
                crd.cel_rules += rules
            crds[(crd.group, crd.kind)] = crd
    return crds


def check_metadata(doc: dict) -> list[str]:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: missing or not a mapping"]
    errors = []
    if not meta.get("name") and not meta.get("generateName"):
        errors.append("metadata: neither name nor generateName")
    for key, value in meta.items():
        expected = USER_METADATA.get(key)
        if expected is None:
            errors.append(f"metadata.{key}: unknown or server-owned field")
        elif not isinstance(value, expected):
            errors.append(f"metadata.{key}: expected {expected.__name__}")
        elif expected is dict and not all(isinstance(v, str) for v in value.values()):
            errors.append(f"metadata.{key}: values must be strings")
    return errors


def check_custom(doc: dict, crd: Crd, version: str) -> list[str]:
    schema = crd.schemas.get(version)
    if schema is None:
        return [f"{crd.group}/{version} is not a served version of {crd.kind} ({crd.source})"]
    errors = check_metadata(doc)
    validator = jsonschema.Draft4Validator(schema)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{where}: {err.message}")
    return errors


def check_builtin(doc: dict, versions: list[str]) -> tuple[list[str], bool]:
    """Errors, and whether any schema was found at all."""
    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return [], False
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.absolute_path) or "(root)"
            errors.append(f"Kubernetes {version}: {where}: {e.message}")
    return errors, True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", default="manifests/crds", help="directory of CRD YAML files")
    parser.add_argument(
        "--kube-versions",
        default="1.30.0,1.33.0,1.37.0",
        help="comma-separated Kubernetes versions the built-in kinds must validate against",
    )
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    versions = [v for v in args.kube_versions.split(",") if v]

    crds = load_crds(args.crds) if os.path.isdir(args.crds) else {}
    cel_rules = sum(c.cel_rules for c in crds.values())
    passed = failed = 0
    for path in args.files:
        try:
            docs = load_documents(path)
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"FAIL {path}: cannot read: {e}")
            failed += 1
            continue
        for i, doc in enumerate(docs, 1):
            api_version = str(doc.get("apiVersion", ""))
            kind = str(doc.get("kind", ""))
            name = (doc.get("metadata") or {}).get("name", "?") if isinstance(doc.get("metadata"), dict) else "?"
            label = f"{path} #{i} {kind}/{name}"
            if not api_version or not kind:
                errors = ["apiVersion and kind are required"]
            else:
                group, _, version = api_version.rpartition("/")
                crd = crds.get((group, kind))
                if crd is not None:
                    errors = check_custom(doc, crd, version)
                else:
                    errors, found = check_builtin(doc, versions)
                    if not found:
                        errors = [f"no schema for {api_version} {kind}: not a built-in kind and no CRD in {args.crds}"]
            if errors:
                failed += 1
                print(f"FAIL {label}")
                for e in errors:
                    print(f"     {e}")
            else:
                passed += 1
                print(f"ok   {label}")
    print(f"manifest schemas ({len(crds)} CRDs, {cel_rules} CEL rules not evaluated; "
          f"built-ins against Kubernetes {', '.join(versions)}):")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
