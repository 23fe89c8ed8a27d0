#!/usr/bin/env python3
"""Validates custom resources against the openAPIV3Schema of their CRDs.

    validate_crs.py CRD_DIR NAME=RENDERED.yaml...   every custom resource
    validate_crs.py --self-test CRD_DIR             the checks catch what they must

CRD_DIR holds CustomResourceDefinition files (the Strimzi 1.2.0 ones are in
shared/vendor/strimzi-crds beside the repository). Each object of a rendered
overlay whose API group one of the CRDs defines is validated against the
schema of the version it names, which must be a served version; an object of
a group the CRDs define but of a kind or version they do not is a failure.

The schema is applied as the API server applies it with strict field
validation (kubectl's default): the OpenAPI v3 schema as JSON Schema (the
jsonschema package), plus "unknown fields are errors": every object schema
with properties and no x-kubernetes-preserve-unknown-fields gets
additionalProperties: false. `nullable: true` lets a field be null.
"""
import copy
import glob
import os
import sys

import jsonschema
import yaml


def load_crds(crd_dir):
    """{(group, kind): crd} from every YAML file of crd_dir."""
    crds = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        for d in yaml.safe_load_all(open(path)):
            if d and d.get("kind") == "CustomResourceDefinition":
                spec = d["spec"]
                crds[(spec["group"], spec["names"]["kind"])] = d
    return crds


def strict(schema):
    """A copy of schema where unknown fields are errors and nullable works."""
    s = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        if node.get("nullable") and "type" in node:
            node["type"] = [node["type"], "null"]
        for key in ("properties", "patternProperties", "definitions"):
            for child in (node.get(key) or {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                walk(child)

    walk(s)
    # metadata is the API server's, not the CRD's: the CRD says only "object".
    return s


def validate(docs, crds):
    """Yields (object name, error) for each finding; counts in validate.count."""
    groups = {g for g, _ in crds}
    validators = {}
    validate.count = 0
    for d in docs:
        api = d.get("apiVersion", "")
        group, _, version = api.rpartition("/")
        if group not in groups:
            continue
        name = f"{d.get('kind')} {d.get('metadata', {}).get('name')}"
        crd = crds.get((group, d.get("kind")))
        if crd is None:
            yield name, f"no CRD in {group} defines kind {d.get('kind')}"
            continue
        served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
        if version not in served:
            yield name, f"{api} is not served (served: {', '.join(sorted(served))})"
            continue
        key = (group, d["kind"], version)
        if key not in validators:
            schema = strict(served[version]["schema"]["openAPIV3Schema"])
            validators[key] = jsonschema.Draft4Validator(schema)
        validate.count += 1
        for e in sorted(validators[key].iter_errors(d), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in e.path) or "(top)"
            yield name, f"{where}: {e.message}"


def self_test(crd_dir):
    crds = load_crds(crd_dir)
    good = {"apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic",
            "metadata": {"name": "t", "labels": {"strimzi.io/cluster": "c"}},
            "spec": {"partitions": 6, "replicas": 3, "config": {"retention.ms": 1}}}
    cases = [
        (lambda d: None, None),
        (lambda d: d.update(apiVersion="kafka.strimzi.io/v1beta2"), "is not served"),
        (lambda d: d["spec"].update(partitions="six"), "spec/partitions"),
        (lambda d: d["spec"].update(partitons=6), "Additional properties"),
        (lambda d: d.update(kind="KafkaMirror"), "no CRD"),
    ]
    passed = failed = 0
    for mutate, want in cases:
        d = copy.deepcopy(good)
        mutate(d)
        errs = [e for _, e in validate([d], crds)]
        ok = (not errs) if want is None else any(want in e for e in errs)
        passed += ok
        failed += not ok
        if not ok:
            print(f"validate_crs self-test: expected {want or 'no error'}, got {errs}")
    print(f"validate_crs self-test: {passed} passed, {failed} failed")
    return failed == 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "--self-test":
        return 0 if self_test(argv[1]) else 1
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    crds = load_crds(argv[0])
    if not crds:
        print(f"validate_crs: no CustomResourceDefinition in {argv[0]}", file=sys.stderr)
        return 2
    bad = 0
    for arg in argv[1:]:
        overlay, _, path = arg.partition("=")
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        errs = list(validate(docs, crds))
        for name, e in errs:
            print(f"validate_crs: {overlay}: {name}: {e}")
        bad += len(errs)
        kinds = sorted({d["kind"] for d in docs
                        if d.get("apiVersion", "").rpartition("/")[0] in {g for g, _ in crds}})
        if not errs:
            print(f"validate_crs: {overlay}: {validate.count} custom resources "
                  f"({', '.join(kinds)}) valid against the CRD schemas in {argv[0]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
