#!/usr/bin/env python3
"""Every environment variable a service reads is set by the deployments, or
documented as optional; nothing the deployments set goes unread.

    test_env_vars.py [--kustomize BIN] [--rendered OVERLAY=FILE ...]
    test_env_vars.py --self-test

What a service reads comes from the code: in services/<svc>/*.c every
cm_cfg_*(c, "NAME", ...) call and every helper called the same way
(load_urls(&c, "AUTH_URL", ...)), plus getenv("NAME") there and in
common/src (which every service links). A name is *required* when it is read
with cm_cfg_str_required() or reported as cm_cfg_error(c, "NAME",
"required...").

What is set comes from
  - each kustomize overlay (deploy/k8s/overlays/*), rendered: the Deployment
    named after the service, its container's env names and the keys of the
    ConfigMaps it takes with envFrom (envFrom of a Secret is refused: its
    keys cannot be seen here);
  - deploy/docker/compose.yaml: the service's environment, plus
    MAILER_SEAL_PUBLIC_KEY from the keys.env file its keygen writes.

deploy/k8s/optional-env.txt lists what may stay unset, one per line:
    [service:]NAME  reason (required, free text)
deploy/k8s/pending-env.txt lists, in the same format, what the manifests
set ahead of the code that will read it (work in flight on another branch):
such a name is not reported as "never read"; once a service reads it, a
note (not a failure) asks to drop the line.

Findings, each one line, exit status 1 if any:
  - a name read by a service, unset in an overlay and not optional;
  - a required name that compose does not set, or that optional-env lists;
  - a name set for a service that the service never reads (a typo or a
    leftover), in an overlay or in compose;
  - an optional-env line without a reason, or naming nothing that is read.
Exit status 2: the inputs could not be read (no kustomize, bad YAML).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

import yaml

SERVICES = ("gateway", "auth", "referral", "mailer")
REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE_KUSTOMIZE = os.path.expanduser("~/.cache/linktr/deploy-tools/bin/kustomize")

# cm_cfg_*(c, "NAME" ...), cm_cfg_error(&c, "NAME" ...), helper(&c, "NAME" ...)
CFG_CALL = re.compile(r'\(\s*&?c\s*,\s*"([A-Z][A-Z0-9_]*)"')
GETENV = re.compile(r'\bgetenv\s*\(\s*"([A-Z_][A-Z0-9_]*)"\s*\)')
REQUIRED = re.compile(r'cm_cfg_str_required\s*\(\s*&?c\s*,\s*"([A-Z][A-Z0-9_]*)"')
REQUIRED_ERR = re.compile(r'cm_cfg_error\s*\(\s*&?c\s*,\s*"([A-Z][A-Z0-9_]*)"\s*,\s*"required')
COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)

# What cm_cfg_service and cm_cfg_jwt (common/src/config.c) read for a service,
# by what the service's config.c asks of them: its cm_service_defaults_t
# (.db_pool_size: a database; .kafka = true: Kafka) and whether it calls
# cm_cfg_jwt (true: the keys are required). Any other name common/src/config.c
# reads is an error here, so this table cannot drift from the code unseen.
SHARED_ALWAYS = {"PORT", "ADMIN_PORT", "BIND_ADDRESS", "LOG_LEVEL", "HTTP_THREADS", "REQUEST_TIMEOUT_MS",
                 "KEEPALIVE_TIMEOUT_MS", "PUBLIC_BASE_URL"}
SHARED_DB = {"DATABASE_URL", "DB_POOL_SIZE", "RETENTION_INTERVAL_S", "RETENTION_BATCH",
             "RETENTION_PAUSE_MS", "RETENTION_DAYS", "RETENTION_DEDUP_DAYS"}
SHARED_KAFKA = {"KAFKA_BOOTSTRAP"}
SHARED_KAFKA_OPTIONAL = {"KAFKA_FETCH_WAIT_MS"}
SHARED_JWT = {"JWT_PUBLIC_KEYS", "JWT_ISSUER", "JWT_AUDIENCE"}
SHARED_CONFIG = os.path.join("common", "src", "config.c")
DEFAULTS = re.compile(r"cm_service_defaults_t\s+\w+\s*=\s*\{(.*?)\}", re.S)
JWT_CALL = re.compile(r"cm_cfg_jwt\s*\(\s*&?c\s*,\s*(true|false)")

# What deploy/docker's keygen writes into keys.env (compose env_file).
KEYS_ENV = {"MAILER_SEAL_PUBLIC_KEY"}


class InputError(Exception):
    """The inputs could not be read: exit status 2."""


def code_reads(text):
    """Returns (read, required): the variable names a C source reads."""
    text = COMMENT.sub(" ", text)
    read = set(CFG_CALL.findall(text)) | set(GETENV.findall(text))
    required = set(REQUIRED.findall(text)) | set(REQUIRED_ERR.findall(text))
    return read, required


def shared_reads(config_c):
    """Returns (read, required): what cm_cfg_service/cm_cfg_jwt read for the
    service whose config.c text is config_c (see SHARED_*)."""
    text = COMMENT.sub(" ", config_c)
    read, required = set(), set()
    m = DEFAULTS.search(text)
    if m:
        read |= SHARED_ALWAYS
        if ".db_pool_size" in m.group(1):
            read |= SHARED_DB
            required.add("DATABASE_URL")
        if re.search(r"\.kafka\s*=\s*true", m.group(1)):
            read |= SHARED_KAFKA | SHARED_KAFKA_OPTIONAL
            required |= SHARED_KAFKA
    j = JWT_CALL.search(text)
    if j:
        read |= SHARED_JWT
        if j.group(1) == "true":
            required.add("JWT_PUBLIC_KEYS")
    return read, required


def service_reads(repo):
    """Returns {svc: (read, required)} from services/<svc>/*.c and common/src/*.c
    (common/src/config.c through the SHARED_* table)."""
    common = set()
    src = os.path.join(repo, "common", "src")
    shared = SHARED_ALWAYS | SHARED_DB | SHARED_KAFKA | SHARED_KAFKA_OPTIONAL | SHARED_JWT
    for name in sorted(os.listdir(src)) if os.path.isdir(src) else []:
        if not name.endswith(".c"):
            continue
        with open(os.path.join(src, name), encoding="utf-8") as f:
            names = code_reads(f.read())[0]
        if os.path.join("common", "src", name) == SHARED_CONFIG:
            if names - shared:
                raise InputError(f"{SHARED_CONFIG} reads {', '.join(sorted(names - shared))}: "
                                 "add it to the SHARED_* table of this script")
            continue
        common |= names
    out = {}
    for svc in SERVICES:
        d = os.path.join(repo, "services", svc)
        if not os.path.isdir(d):
            raise InputError(f"no {d}")
        read, required = set(common), set()
        for name in sorted(os.listdir(d)):
            if name.endswith(".c"):
                with open(os.path.join(d, name), encoding="utf-8") as f:
                    text = f.read()
                r, q = code_reads(text)
                read |= r
                required |= q
                if name == "config.c":
                    r, q = shared_reads(text)
                    read |= r
                    required |= q
        out[svc] = (read, required)
    return out


def parse_optional(text):
    """Returns ({(svc or None, NAME): reason}, findings) from optional-env.txt."""
    entries, findings = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(?:([a-z]+):)?([A-Z][A-Z0-9_]*)\s*(.*)$", line)
        if not m:
            findings.append(f"optional-env.txt:{n}: not '[service:]NAME reason': {line}")
            continue
        svc, name, reason = m.groups()
        if svc and svc not in SERVICES:
            findings.append(f"optional-env.txt:{n}: unknown service '{svc}'")
        if not reason.strip():
            findings.append(f"optional-env.txt:{n}: {name} has no reason")
        entries[(svc, name)] = reason.strip()
    return entries, findings


def is_optional(entries, svc, name):
    return (svc, name) in entries or (None, name) in entries


def deployment_env(docs, svc):
    """Returns the names set for svc's container in rendered docs, or None."""
    maps = {d["metadata"]["name"]: d.get("data") or {}
            for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        if d.get("kind") != "Deployment" or d["metadata"]["name"] != svc:
            continue
        names = set()
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["name"] != svc:
                continue
            names |= {e["name"] for e in c.get("env") or []}
            for ef in c.get("envFrom") or []:
                if "secretRef" in ef:
                    raise InputError(f"{svc}: envFrom secretRef hides its keys; "
                                     "use env with secretKeyRef")
                ref = ef["configMapRef"]["name"]
                if ref not in maps:
                    raise InputError(f"{svc}: envFrom ConfigMap {ref} is not in the manifests")
                names |= {ef.get("prefix", "") + k for k in maps[ref]}
        return names
    return None


def compose_env(doc, svc):
    """Returns the names compose sets for svc (environment + keygen's keys.env)."""
    s = (doc.get("services") or {}).get(svc)
    if s is None:
        return None
    env = s.get("environment") or {}
    names = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
    files = s.get("env_file") or []
    files = [files] if isinstance(files, (str, dict)) else files
    for f in files:
        path = f["path"] if isinstance(f, dict) else f
        if os.path.basename(path) == "keys.env":
            names |= KEYS_ENV
    return names


def pending_notes(reads, pending):
    """Notes (not failures) for pending-env lines whose variable is read now."""
    notes = []
    for (svc, name), _ in sorted(pending.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        readers = [s for s in ((svc,) if svc else SERVICES) if name in reads[s][0]]
        if readers:
            notes.append(f"pending-env.txt: {name} is read by {', '.join(readers)} now; drop the line")
    return notes


def check(reads, optional, overlays, compose, pending=None):
    """Returns the findings (strings). overlays: {name: docs}; compose: doc or None;
    pending: set ahead of the code (from pending-env.txt)."""
    pending = pending or {}
    findings = []
    every_read = set().union(*(r for r, _ in reads.values()))
    for (svc, name), _ in optional.items():
        if name not in (reads[svc][0] if svc else every_read):
            findings.append(f"optional-env.txt: {svc + ':' if svc else ''}{name} "
                            "is not read by any such service (stale line?)")
    for svc in SERVICES:
        read, required = reads[svc]
        for name in sorted(required):
            if is_optional(optional, svc, name):
                findings.append(f"optional-env.txt: {name} is required by {svc}, not optional")
        for oname, docs in sorted(overlays.items()):
            env = deployment_env(docs, svc)
            if env is None:
                findings.append(f"{oname}: no Deployment {svc}")
                continue
            for name in sorted(read - env):
                if not is_optional(optional, svc, name) or name in required:
                    findings.append(f"{oname}: {svc} reads {name}, which is neither set "
                                    "nor listed in deploy/k8s/optional-env.txt")
            for name in sorted(env - read):
                if not is_optional(pending, svc, name):
                    findings.append(f"{oname}: {name} is set for {svc}, which never reads it")
        if compose is not None:
            env = compose_env(compose, svc)
            if env is None:
                findings.append(f"compose.yaml: no service {svc}")
                continue
            for name in sorted(required - env):
                findings.append(f"compose.yaml: {svc} requires {name}, which is not set")
            for name in sorted(env - read):
                findings.append(f"compose.yaml: {name} is set for {svc}, which never reads it")
    return findings


def find_kustomize(explicit):
    for cand in (explicit, os.environ.get("KUSTOMIZE"), CACHE_KUSTOMIZE, shutil.which("kustomize")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise InputError("no kustomize: run deploy/k8s/check (it installs one) or pass --kustomize")


def load_overlays(args):
    overlays = {}
    if args.rendered:
        for item in args.rendered:
            name, _, path = item.partition("=")
            with open(path, encoding="utf-8") as f:
                overlays[name] = [d for d in yaml.safe_load_all(f) if d]
        return overlays
    kustomize = find_kustomize(args.kustomize)
    root = os.path.join(REPO, "deploy", "k8s", "overlays")
    for name in sorted(os.listdir(root)):
        r = subprocess.run([kustomize, "build", os.path.join(root, name)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise InputError(f"kustomize build overlays/{name} failed:\n{r.stderr}")
        overlays[name] = [d for d in yaml.safe_load_all(r.stdout) if d]
    return overlays


# --- self-test: the checks above must find what they are meant to find ---

FAKE_CONFIG = """
    cfg->port = (int)cm_cfg_int(&c, "PORT", 8001, 1, 65535);
    cfg->db = cm_cfg_url(&c, "DATABASE_URL", NULL, pg);
    if (!cfg->db)
        cm_cfg_error(&c, "DATABASE_URL", "required (postgresql://...)");
    cfg->key = cm_cfg_str_required(c,
                                   "SECRET_FILE");
    load_urls(&c, "AUTH_URL", "http://127.0.0.1:8001", &cfg->urls);
    /* cm_cfg_str(&c, "COMMENTED_OUT", NULL); */
    cfg->opt = cm_cfg_str(&c, "TUNABLE", NULL);
"""


def fake_overlay(svc_env):
    docs = [{"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"PORT": "1"}}]
    for svc, env in svc_env.items():
        docs.append({"kind": "Deployment", "metadata": {"name": svc}, "spec": {"template": {
            "spec": {"containers": [{"name": svc, "envFrom": [{"configMapRef": {"name": "cm"}}],
                                     "env": [{"name": n} for n in env]}]}}}})
    return docs


def self_test():
    # The shared variables follow what a service's config.c asks for.
    r, q = shared_reads("static const cm_service_defaults_t d = {.port = 1, .http_threads = 2};")
    assert r == SHARED_ALWAYS and q == set(), (r, q)
    r, q = shared_reads("cm_service_defaults_t d = {.db_pool_size = 4, .kafka = true};\n"
                        "/* cm_cfg_jwt(&c, false, x) in a comment */ cm_cfg_jwt(&c, true, &cfg->jwt);")
    assert r == SHARED_ALWAYS | SHARED_DB | SHARED_KAFKA | SHARED_KAFKA_OPTIONAL | SHARED_JWT, r
    assert q == {"DATABASE_URL", "KAFKA_BOOTSTRAP", "JWT_PUBLIC_KEYS"}, q
    read, required = code_reads(FAKE_CONFIG)
    assert read == {"PORT", "DATABASE_URL", "SECRET_FILE", "AUTH_URL", "TUNABLE"}, read
    assert required == {"DATABASE_URL", "SECRET_FILE"}, required
    reads = {svc: (set(read), set(required)) for svc in SERVICES}
    full = ["DATABASE_URL", "SECRET_FILE", "AUTH_URL"]
    opt, f = parse_optional("# comment\nTUNABLE  has a safe default\n")
    assert not f, f
    good = {"o": fake_overlay({s: full for s in SERVICES})}
    compose = {"services": {s: {"environment": {"DATABASE_URL": "x", "SECRET_FILE": "y"}}
                            for s in SERVICES}}
    assert check(reads, opt, good, compose) == [], check(reads, opt, good, compose)
    # A variable read but set nowhere.
    bad = {"o": fake_overlay({**{s: full for s in SERVICES}, "auth": ["DATABASE_URL", "SECRET_FILE"]})}
    f = check(reads, opt, bad, compose)
    assert f == ["o: auth reads AUTH_URL, which is neither set nor listed in "
                 "deploy/k8s/optional-env.txt"], f
    # A typo: set, never read.
    typo = {"o": fake_overlay({**{s: full for s in SERVICES}, "mailer": full + ["DATABSE_URL"]})}
    f = check(reads, opt, typo, compose)
    assert f == ["o: DATABSE_URL is set for mailer, which never reads it"], f
    # Optional lines: no reason, stale, or covering a required variable.
    opt2, f = parse_optional("TUNABLE\nGONE  was removed\nmailer:SECRET_FILE  no\n")
    assert f == ["optional-env.txt:1: TUNABLE has no reason"], f
    f = check(reads, opt2, good, compose)
    assert "optional-env.txt: GONE is not read by any such service (stale line?)" in f, f
    assert "optional-env.txt: SECRET_FILE is required by mailer, not optional" in f, f
    # Set ahead of the code: not a finding while pending; a note once it is read.
    pend, f = parse_optional("auth:SOON  read by auth on another branch\n")
    early = {"o": fake_overlay({**{s: full for s in SERVICES}, "auth": full + ["SOON"]})}
    assert check(reads, opt, early, compose, pend) == [], check(reads, opt, early, compose, pend)
    assert check(reads, opt, early, compose) == ["o: SOON is set for auth, which never reads it"]
    assert pending_notes(reads, pend) == []
    reads_now = {**reads, "auth": (reads["auth"][0] | {"SOON"}, reads["auth"][1])}
    assert pending_notes(reads_now, pend) == [
        "pending-env.txt: SOON is read by auth now; drop the line"], pending_notes(reads_now, pend)
    # compose without a required variable.
    c2 = {"services": {**compose["services"], "gateway": {"environment": {"DATABASE_URL": "x"}}}}
    f = check(reads, opt, good, c2)
    assert f == ["compose.yaml: gateway requires SECRET_FILE, which is not set"], f
    # envFrom of a Secret cannot be checked.
    docs = fake_overlay({"auth": full})
    docs[1]["spec"]["template"]["spec"]["containers"][0]["envFrom"].append({"secretRef": {"name": "s"}})
    try:
        deployment_env(docs, "auth")
        raise AssertionError("envFrom secretRef accepted")
    except InputError:
        pass
    print("test_env_vars self-test: 8 passed, 0 failed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kustomize", help="kustomize binary (default: the check's cache, PATH)")
    ap.add_argument("--rendered", action="append", metavar="OVERLAY=FILE",
                    help="an overlay already rendered by kustomize (repeatable)")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return 0
    try:
        reads = service_reads(REPO)
        with open(os.path.join(REPO, "deploy", "k8s", "optional-env.txt"), encoding="utf-8") as f:
            optional, findings = parse_optional(f.read())
        pending = {}
        pending_path = os.path.join(REPO, "deploy", "k8s", "pending-env.txt")
        if os.path.exists(pending_path):
            with open(pending_path, encoding="utf-8") as f:
                pending, more = parse_optional(f.read())
            findings += [m.replace("optional-env.txt", "pending-env.txt") for m in more]
        overlays = load_overlays(args)
        with open(os.path.join(REPO, "deploy", "docker", "compose.yaml"), encoding="utf-8") as f:
            compose = yaml.safe_load(f)
        findings += check(reads, optional, overlays, compose, pending)
        for note in pending_notes(reads, pending):
            print(f"test_env_vars: note: {note}")
    except (InputError, OSError, yaml.YAMLError) as e:
        print(f"test_env_vars: {e}", file=sys.stderr)
        return 2
    for line in findings:
        print(f"test_env_vars: {line}")
    n = sum(len(r) for r, _ in reads.values())
    print(f"test_env_vars: {len(overlays)} overlays + compose, {n} service/variable pairs: "
          f"{'OK' if not findings else f'{len(findings)} finding(s)'}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
