#!/usr/bin/env python3
"""deploy/k8s/lint.py — linktr's own rules for the rendered manifests.

    lint.py [-v] OVERLAY=RENDERED.yaml ...
    lint.py --compose deploy/docker/compose.yaml deploy/docker/Dockerfile
    lint.py --self-test

The Kubernetes schemas (kubernetes-validate, run by deploy/k8s/check) say
whether each object is well formed; these rules say whether the set of
objects is what linktr needs (the Strimzi custom resources are also checked
against their CRD schemas, by validate_crs.py):

  services   each of gateway, auth, referral, mailer has a Deployment, a
             Service whose selector and named port match it, an
             autoscaling/v2 HPA aimed at it (min <= max), a policy/v1 PDB
             selecting its pods and a NetworkPolicy of its own
  pods       startup, liveness (/healthz) and readiness (/readyz) probes on
             the declared port named admin (ADMIN_PORT), which no Service
             exposes; requests and limits for cpu and memory with
             requests <= limits; the restricted Pod Security Standard
             (runAsNonRoot, uid 10001, no privilege escalation, all
             capabilities dropped, RuntimeDefault seccomp, read-only root,
             no host namespaces or hostPath); a preStop sleep shorter than
             terminationGracePeriodSeconds (the gateway's also leaves room for
             its drain: UPSTREAM_TIMEOUT_MS + 2 s); no service-account token;
             a pinned image tag; BIND_ADDRESS=0.0.0.0
  secrets    no Secret object is rendered (they are never committed); every
             secret a pod needs is referenced by name (listed with -v)
  network    a default-deny policy selecting app.kubernetes.io/part-of=linktr
             for both directions
  reach      who the ingress NetworkPolicies let open a connection to each
             port of each service: every admin port only Prometheus (pods
             PROMETHEUS_POD in namespace MONITORING_NS), and it must reach
             them all (the pods' prometheus.io/port annotation names the
             admin port); the gateway's API port only the Gateway API
             proxy's namespace (PROXY_NS); auth's and referral's only the
             gateway's pods; the mailer's nobody. No rule may open a port
             to every peer or to an address range.
  entry      Gateway API v1, no Ingress: one Gateway with an HTTPS listener;
             HTTPRoutes with known fields only (the structural rules of the
             v1 CRDs: no Gateway API schema is vendored or packaged), parents
             and sectionNames that exist, backends that are Services on a
             declared port, the gateway Service only; the routes to the
             gateway take exactly the public prefixes (PUBLIC_PREFIXES) and
             no match reaches /metrics, /readyz or /; the proxy's upstream
             idle timeout (BackendTrafficPolicy) is shorter than the
             gateway's KEEPALIVE_TIMEOUT_MS
  database   sum over auth, referral, mailer of (DB_POOL_SIZE + extra) x
             (HPA max + maxSurge) <= max_connections - reserve, all from
             deploy/k8s/db-budget.yaml; every pool is counted
  kafka      every Strimzi resource in kafka.strimzi.io/v1 (Strimzi 1.0+);
             one Kafka CR with a spec.kafka.version that Strimzi 1.2.0 runs,
             without the annotations Strimzi ignores since 0.48, and with a
             plain listener; node pools of that cluster with
             controller and broker roles; one KafkaTopic per event schema in
             proto/events (plus nothing else), each with 1-1000 partitions and
             replicas <= brokers, min.insync.replicas < replicas (1 on a
             single node); with 3+ brokers replication >= 3 and
             min.insync.replicas >= 2; consumer HPAs (referral, mailer) never
             above the fewest partitions among the topics they read; KAFKA_BOOTSTRAP names the cluster's
             bootstrap Service and listener port

Prints one line per finding and exits 1 if there is any; 2 on unreadable input.
"""
import os
import re
import sys

import yaml

SERVICES = ("gateway", "auth", "referral", "mailer")
# The topics each consumer group reads (services/*/consumer.c): its useful
# replicas stop at the smallest of their partition counts.
CONSUMERS = {
    "referral": ("user.registered", "user.verified", "user.email.changed", "user.deleted"),
    "mailer": ("user.registered", "verify.requested", "reset.requested", "password.changed",
               "reward.granted", "email.change.requested", "email.change.notice",
               "user.email.changed", "signin.new", "user.deleted"),
}
REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAX_PARTITIONS = 1000
# The operator release the manifests are written for and the Kafka versions
# it runs (shared/vendor/strimzi-crds/README.md); the CRD schemas themselves
# are checked by validate_crs.py.
STRIMZI_RELEASE = "1.2.0"
STRIMZI_API = "kafka.strimzi.io/v1"
STRIMZI_KAFKA_VERSIONS = ("4.2.0", "4.2.1", "4.3.0", "4.3.1")


def quantity(q):
    """Kubernetes quantity -> float (cpu in cores, memory in bytes)."""
    s = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", s)
    if not m or m.group(2) not in units and m.group(2) != "":
        raise ValueError(f"bad quantity {s!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def container_env(docs, c):
    """The container's environment as name -> value (ConfigMaps resolved; secrets as None)."""
    maps = by_kind(docs, "ConfigMap")
    env = {}
    for ef in c.get("envFrom") or []:
        if "configMapRef" in ef:
            env.update((maps.get(ef["configMapRef"]["name"]) or {}).get("data") or {})
    for e in c.get("env") or []:
        env[e["name"]] = e.get("value")
    return env


def check_pod(name, d, docs, out):
    spec = d["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext") or {}
    cs = [c for c in spec["containers"] if c["name"] == name]
    if not cs:
        out.append(f"Deployment {name}: no container named {name}")
        return
    c = cs[0]
    ports = {p.get("name") for p in c.get("ports") or []} | {p["containerPort"] for p in c.get("ports") or []}
    for probe, path in (("startupProbe", None), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        p = (c.get(probe) or {}).get("httpGet")
        if not p:
            out.append(f"Deployment {name}: no HTTP {probe}")
            continue
        if path and p.get("path") != path:
            out.append(f"Deployment {name}: {probe} checks {p.get('path')}, not {path}")
        if p.get("port") not in ports:
            out.append(f"Deployment {name}: {probe} port {p.get('port')} is not a container port")
        elif p.get("port") != "admin":
            out.append(f"Deployment {name}: {probe} must use the admin port, not {p.get('port')}")
    res = c.get("resources") or {}
    for kind in ("cpu", "memory"):
        req, lim = (res.get("requests") or {}).get(kind), (res.get("limits") or {}).get(kind)
        if req is None or lim is None:
            out.append(f"Deployment {name}: {kind} request and limit both needed")
        elif quantity(req) > quantity(lim):
            out.append(f"Deployment {name}: {kind} request {req} above limit {lim}")
    sc = c.get("securityContext") or {}
    eff = lambda k: sc.get(k, pod_sc.get(k))  # noqa: E731
    if eff("runAsNonRoot") is not True or eff("runAsUser") != 10001:
        out.append(f"Deployment {name}: must run as non-root uid 10001")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"Deployment {name}: allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"Deployment {name}: readOnlyRootFilesystem must be true")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"] or (sc.get("capabilities") or {}).get("add"):
        out.append(f"Deployment {name}: capabilities must drop ALL and add none")
    if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault":
        out.append(f"Deployment {name}: seccompProfile must be RuntimeDefault")
    if sc.get("privileged") or any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        out.append(f"Deployment {name}: no privileged containers or host namespaces")
    if any("hostPath" in v for v in spec.get("volumes") or []):
        out.append(f"Deployment {name}: no hostPath volumes")
    if spec.get("automountServiceAccountToken") is not False:
        out.append(f"Deployment {name}: automountServiceAccountToken must be false")
    image = c.get("image", "")
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not tag or tag == "latest":
        out.append(f"Deployment {name}: image {image!r} needs a pinned tag")
    env = container_env(docs, c)
    if env.get("BIND_ADDRESS") != "0.0.0.0":
        out.append(f"Deployment {name}: BIND_ADDRESS must be 0.0.0.0 (the default is loopback)")
    sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if not sleep:
        out.append(f"Deployment {name}: needs a preStop sleep so endpoints drain before SIGTERM")
    else:
        drain = (int(env.get("UPSTREAM_TIMEOUT_MS") or 10000) + 2000) / 1000 if name == "gateway" else 0
        if sleep + drain >= grace:
            out.append(f"Deployment {name}: terminationGracePeriodSeconds {grace} <= "
                       f"preStop {sleep} s + drain {drain:g} s")


def secret_refs(d):
    spec = d["spec"]["template"]["spec"]
    names = {v["secret"]["secretName"] for v in spec.get("volumes") or [] if "secret" in v}
    for c in spec["containers"]:
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    return names


def consumer_partitions(docs, name):
    """The fewest partitions among the topics consumer `name` reads, from the
    rendered KafkaTopics; None for a service that consumes nothing."""
    if name not in CONSUMERS:
        return None
    counts = {t["spec"].get("topicName", n): t["spec"].get("partitions")
              for n, t in by_kind(docs, "KafkaTopic").items()}
    known = [counts[t] for t in CONSUMERS[name] if isinstance(counts.get(t), int)]
    return min(known) if known else 6


def check_services(docs, out):
    deps, svcs = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    hpas, pdbs = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "PodDisruptionBudget")
    nps = by_kind(docs, "NetworkPolicy")
    for name in SERVICES:
        d = deps.get(name)
        if not d:
            out.append(f"no Deployment {name}")
            continue
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not matches(d["spec"]["selector"]["matchLabels"], labels):
            out.append(f"Deployment {name}: selector does not match its pod labels")
        check_pod(name, d, docs, out)
        s = svcs.get(name)
        ports = {p.get("name") for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
        if not s or not matches(s["spec"].get("selector"), labels) or not s["spec"].get("selector"):
            out.append(f"Service {name}: missing or not selecting the Deployment's pods")
        elif any(p.get("targetPort") not in ports for p in s["spec"]["ports"]):
            out.append(f"Service {name}: targetPort is not a named container port")
        elif any(p.get("targetPort") == "admin" for p in s["spec"]["ports"]):
            out.append(f"Service {name}: exposes the admin port (probes and Prometheus only)")
        h = hpas.get(name)
        if not h or h.get("apiVersion") != "autoscaling/v2":
            out.append(f"no autoscaling/v2 HorizontalPodAutoscaler {name}")
        else:
            t = h["spec"]["scaleTargetRef"]
            if (t["kind"], t["name"]) != ("Deployment", name):
                out.append(f"HPA {name}: targets {t['kind']}/{t['name']}")
            if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
                out.append(f"HPA {name}: minReplicas above maxReplicas")
            bound = consumer_partitions(docs, name)
            if bound is not None and h["spec"]["maxReplicas"] > bound:
                out.append(f"HPA {name}: maxReplicas {h['spec']['maxReplicas']} above the "
                           f"{bound} partitions its consumers can share")
        p = pdbs.get(name)
        if not p or p.get("apiVersion") != "policy/v1" or not matches(p["spec"]["selector"]["matchLabels"], labels):
            out.append(f"no policy/v1 PodDisruptionBudget {name} selecting its pods")
        if name not in nps:
            out.append(f"no NetworkPolicy {name}")
    deny = [n for n in nps.values()
            if set(n["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
            and not n["spec"].get("ingress") and not n["spec"].get("egress")
            and n["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/part-of": "linktr"}]
    if not deny:
        out.append("no default-deny NetworkPolicy (both directions) for app.kubernetes.io/part-of=linktr")
    if by_kind(docs, "Ingress"):
        out.append("an Ingress is rendered: the entry is Gateway API (Gateway + HTTPRoute)")
    check_gateway_api(docs, out)
    if any(d.get("kind") == "Secret" for d in docs):
        out.append("a Secret is rendered: secrets are created by the operator, never committed")


def expected_topics(repo):
    d = os.path.join(repo, "proto", "events")
    return {f[: -len(".schema.json")] for f in os.listdir(d)
            if f.endswith(".schema.json") and f != "envelope.schema.json"}


def check_kafka(docs, topics_wanted, out):
    kafkas = by_kind(docs, "Kafka")
    if len(kafkas) != 1:
        out.append(f"expected one Kafka CR, found {len(kafkas)}")
        return
    (cluster, k), = kafkas.items()
    for d in docs:
        if d.get("apiVersion", "").startswith("kafka.strimzi.io/") and d["apiVersion"] != STRIMZI_API:
            out.append(f"{d['kind']} {d['metadata']['name']}: {d['apiVersion']}, Strimzi 1.0+ serves only {STRIMZI_API}")
    ann = k["metadata"].get("annotations") or {}
    for a in sorted(a for a in ann if a in ("strimzi.io/kraft", "strimzi.io/node-pools")):
        out.append(f"Kafka {cluster}: annotation {a} is ignored since Strimzi 0.48; drop it")
    version = str(k["spec"]["kafka"].get("version", ""))
    if version not in STRIMZI_KAFKA_VERSIONS:
        out.append(f"Kafka {cluster}: spec.kafka.version {version or '(unset)'} is not one Strimzi "
                   f"{STRIMZI_RELEASE} runs ({', '.join(STRIMZI_KAFKA_VERSIONS)})")
    plain = [li for li in k["spec"]["kafka"].get("listeners") or [] if li.get("tls") is False]
    if not plain:
        out.append(f"Kafka {cluster}: no plain listener for the services")
        return
    pools = [p for p in by_kind(docs, "KafkaNodePool").values()
             if (p["metadata"].get("labels") or {}).get("strimzi.io/cluster") == cluster]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    if not any("controller" in p["spec"]["roles"] for p in pools) or brokers < 1:
        out.append(f"Kafka {cluster}: node pools need the controller and broker roles")
        return
    conf = k["spec"]["kafka"].get("config") or {}
    check_replication(f"Kafka {cluster}", conf.get("default.replication.factor", 1),
                      conf.get("min.insync.replicas", 1), brokers, out)
    found = set()
    for name, t in by_kind(docs, "KafkaTopic").items():
        topic = t["spec"].get("topicName", name)
        found.add(topic)
        if (t["metadata"].get("labels") or {}).get("strimzi.io/cluster") != cluster:
            out.append(f"KafkaTopic {topic}: label strimzi.io/cluster must be {cluster}")
        parts = t["spec"].get("partitions")
        if not isinstance(parts, int) or isinstance(parts, bool) or not 1 <= parts <= MAX_PARTITIONS:
            out.append(f"KafkaTopic {topic}: partitions must be 1-{MAX_PARTITIONS}")
        check_replication(f"KafkaTopic {topic}", t["spec"].get("replicas", 1),
                          (t["spec"].get("config") or {}).get("min.insync.replicas", 1), brokers, out)
    for t in sorted(topics_wanted - found):
        out.append(f"no KafkaTopic for event type {t} (proto/events)")
    for t in sorted(found - topics_wanted):
        out.append(f"KafkaTopic {t} has no event schema in proto/events")
    want = f"{cluster}-kafka-bootstrap:{plain[0]['port']}"
    for name in ("auth", "referral", "mailer"):
        d = by_kind(docs, "Deployment").get(name)
        if d:
            got = container_env(docs, d["spec"]["template"]["spec"]["containers"][0]).get("KAFKA_BOOTSTRAP")
            if got != want:
                out.append(f"Deployment {name}: KAFKA_BOOTSTRAP is {got!r}, the cluster's is {want!r}")


# What the public entry routes to the gateway (Gateway API PathPrefix: whole
# segments): the API and the people's pages, nothing else. /metrics and
# /readyz stay unreachable from outside (they are on the admin port now; a
# route to them would reach 404, and lint keeps it that way).
PUBLIC_PREFIXES = ("/api", "/.well-known", "/verify-email", "/reset-password", "/r", "/signup",
                   "/confirm-email", "/cancel-email-change", "/healthz")
PRIVATE_PATHS = ("/metrics", "/readyz", "/readyz/", "/metrics/", "/")
GATEWAY_API = "gateway.networking.k8s.io/v1"
# Fields of the Gateway API v1 objects (standard channel) used here: anything
# else is a typo the API server would refuse (no CRD schema is vendored for
# Gateway API and no registry package ships one, so these structural rules
# stand in for it).
HTTPROUTE_SPEC = {"parentRefs", "hostnames", "rules"}
HTTPROUTE_RULE = {"name", "matches", "filters", "backendRefs", "timeouts", "sessionPersistence", "retry"}
HTTPROUTE_MATCH = {"path", "headers", "queryParams", "method"}
PATH_TYPES = {"Exact", "PathPrefix", "RegularExpression"}
PARENT_REF = {"group", "kind", "namespace", "name", "sectionName", "port"}
BACKEND_REF = {"group", "kind", "name", "namespace", "port", "weight", "filters"}
GATEWAY_SPEC = {"gatewayClassName", "listeners", "addresses", "infrastructure", "backendTLS",
                "allowedListeners"}
LISTENER = {"name", "hostname", "port", "protocol", "tls", "allowedRoutes"}
DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")


def duration_ms(text):
    """Gateway API / Envoy Gateway duration ("1m30s", "500ms") -> milliseconds."""
    if not isinstance(text, str) or not DURATION.match(text):
        raise ValueError(f"bad duration {text!r}")
    unit = {"h": 3600000, "m": 60000, "s": 1000, "ms": 1}
    return sum(int(n) * unit[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", text))


def path_matches(match, path):
    """True if an HTTPRoute path match would take path (regular expressions: assumed yes)."""
    m = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = m.get("type", "PathPrefix"), m.get("value", "/")
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":
        prefix = value.rstrip("/")
        return prefix == "" or path == prefix or path.startswith(prefix + "/")
    return True


def check_gateway_api(docs, out):
    gateways = by_kind(docs, "Gateway")
    routes = by_kind(docs, "HTTPRoute")
    services = by_kind(docs, "Service")
    if len(gateways) != 1:
        out.append(f"expected one Gateway (gateway.networking.k8s.io), found {len(gateways)}")
        return
    (gname, gw), = gateways.items()
    listeners = {}
    if gw.get("apiVersion") != GATEWAY_API:
        out.append(f"Gateway {gname}: apiVersion must be {GATEWAY_API}")
    for k in set(gw["spec"]) - GATEWAY_SPEC:
        out.append(f"Gateway {gname}: unknown field spec.{k}")
    if not gw["spec"].get("gatewayClassName"):
        out.append(f"Gateway {gname}: no gatewayClassName")
    for li in gw["spec"].get("listeners") or []:
        for k in set(li) - LISTENER:
            out.append(f"Gateway {gname}: listener {li.get('name')}: unknown field {k}")
        if li.get("name") in listeners:
            out.append(f"Gateway {gname}: listener name {li['name']} twice")
        listeners[li.get("name")] = li
        if li.get("protocol") == "HTTPS" and not ((li.get("tls") or {}).get("certificateRefs")):
            out.append(f"Gateway {gname}: HTTPS listener {li['name']} without a certificate")
    if not any(li.get("protocol") == "HTTPS" for li in listeners.values()):
        out.append(f"Gateway {gname}: no HTTPS listener")
    gw_port = None
    svc = services.get("gateway")
    if svc:
        gw_port = [p["port"] for p in svc["spec"]["ports"] if p.get("name") == "http"]
    to_gateway = []
    for name, r in routes.items():
        spec = r.get("spec") or {}
        if r.get("apiVersion") != GATEWAY_API:
            out.append(f"HTTPRoute {name}: apiVersion must be {GATEWAY_API}")
        for k in set(spec) - HTTPROUTE_SPEC:
            out.append(f"HTTPRoute {name}: unknown field spec.{k}")
        for ref in spec.get("parentRefs") or []:
            for k in set(ref) - PARENT_REF:
                out.append(f"HTTPRoute {name}: parentRef: unknown field {k}")
            if ref.get("name") != gname:
                out.append(f"HTTPRoute {name}: parent {ref.get('name')} is not the Gateway {gname}")
                continue
            li = listeners.get(ref.get("sectionName")) if ref.get("sectionName") else None
            if ref.get("sectionName") and li is None:
                out.append(f"HTTPRoute {name}: Gateway {gname} has no listener {ref['sectionName']}")
            elif li and li.get("hostname") and li["hostname"] not in (spec.get("hostnames") or [li["hostname"]]):
                out.append(f"HTTPRoute {name}: hostnames {spec.get('hostnames')} miss listener "
                           f"{li['name']}'s {li['hostname']}")
        if not spec.get("parentRefs"):
            out.append(f"HTTPRoute {name}: no parentRefs")
        rules = spec.get("rules") or []
        if len(rules) > 16:
            out.append(f"HTTPRoute {name}: {len(rules)} rules (at most 16)")
        for i, rule in enumerate(rules):
            where = f"HTTPRoute {name} rule {i}"
            for k in set(rule) - HTTPROUTE_RULE:
                out.append(f"{where}: unknown field {k}")
            matches_ = rule.get("matches") or []
            if len(matches_) > 64:
                out.append(f"{where}: {len(matches_)} matches (at most 64)")
            for m in matches_:
                for k in set(m) - HTTPROUTE_MATCH:
                    out.append(f"{where}: match: unknown field {k}")
                p = m.get("path") or {}
                if p and (p.get("type") not in PATH_TYPES or not str(p.get("value", "")).startswith("/")):
                    out.append(f"{where}: bad path match {p}")
            t = rule.get("timeouts") or {}
            try:
                if "request" in t and "backendRequest" in t and \
                        duration_ms(t["backendRequest"]) > duration_ms(t["request"]):
                    out.append(f"{where}: timeouts.backendRequest above timeouts.request")
                for v in t.values():
                    duration_ms(v)
            except ValueError as e:
                out.append(f"{where}: timeouts: {e}")
            for b in rule.get("backendRefs") or []:
                for k in set(b) - BACKEND_REF:
                    out.append(f"{where}: backendRef: unknown field {k}")
                if b.get("kind", "Service") != "Service" or b.get("name") not in services:
                    out.append(f"{where}: backend {b.get('name')} is not a Service here")
                    continue
                ports = [p["port"] for p in services[b["name"]]["spec"]["ports"]]
                if b.get("port") not in ports:
                    out.append(f"{where}: backend {b['name']} port {b.get('port')} not in {ports}")
                if b["name"] == "gateway":
                    to_gateway.append((where, matches_ or [{}]))
                else:
                    out.append(f"{where}: routes to {b['name']}: the entry goes through the gateway only")
            if not rule.get("backendRefs") and not any(
                    f.get("type") == "RequestRedirect" for f in rule.get("filters") or []):
                out.append(f"{where}: neither a backend nor a redirect")
    if not to_gateway:
        out.append("no HTTPRoute rule routes to the gateway Service")
    elif gw_port is not None:
        for where, ms in to_gateway:
            for path in PRIVATE_PATHS:
                if any(path_matches(m, path) for m in ms):
                    out.append(f"{where}: {path} would be public (route only {', '.join(PUBLIC_PREFIXES)})")
            for m in ms:
                p = m.get("path") or {}
                if p.get("value", "").rstrip("/") not in PUBLIC_PREFIXES:
                    out.append(f"{where}: routes {p.get('value', '/')}, not a public prefix")
        routed = {(m.get("path") or {}).get("value", "").rstrip("/") for _, ms in to_gateway for m in ms}
        for prefix in PUBLIC_PREFIXES:
            if prefix not in routed:
                out.append(f"public prefix {prefix} is not routed to the gateway")
    check_keepalive(docs, out)


def check_keepalive(docs, out):
    """The proxy's upstream idle timeout (Envoy Gateway BackendTrafficPolicy on
    the gateway's HTTPRoute) is set and shorter than the gateway's own
    KEEPALIVE_TIMEOUT_MS, so the proxy always closes an idle connection
    first."""
    policies = [p for p in by_kind(docs, "BackendTrafficPolicy").values()
                if any(t.get("kind") == "HTTPRoute" and t.get("name") == "gateway"
                       for t in p["spec"].get("targetRefs") or [])]
    d = by_kind(docs, "Deployment").get("gateway")
    if not d:
        return
    env = container_env(docs, d["spec"]["template"]["spec"]["containers"][0])
    server = env.get("KEEPALIVE_TIMEOUT_MS")
    if server is None:
        out.append("Deployment gateway: KEEPALIVE_TIMEOUT_MS is not set")
        return
    if len(policies) != 1:
        out.append("no BackendTrafficPolicy on HTTPRoute gateway setting the proxy's upstream idle timeout")
        return
    idle = ((policies[0]["spec"].get("timeout") or {}).get("http") or {}).get("connectionIdleTimeout")
    try:
        idle_ms = duration_ms(idle)
    except ValueError as e:
        out.append(f"BackendTrafficPolicy {policies[0]['metadata']['name']}: connectionIdleTimeout: {e}")
        return
    if idle_ms >= int(server):
        out.append(f"proxy upstream idle timeout {idle} is not shorter than the gateway's "
                   f"KEEPALIVE_TIMEOUT_MS {server}")


UPSTREAMS = {"AUTH_URL": "auth", "REFERRAL_URL": "referral"}


def check_upstream_connections(docs, out):
    """The gateway's kept-alive connections to each upstream fit in what the
    upstream keeps alive. Each gateway pod keeps up to UPSTREAM_MAX_CONNECTIONS
    to each upstream Service; a service whose KEEPALIVE_TIMEOUT_MS exceeds its
    REQUEST_TIMEOUT_MS stops keeping connections alive once half its
    HTTP_THREADS hold one (common/src/http.c, workers_scarce), so past that
    every answer closes its connection and the next request opens a new one.
    The worst case is the gateway at its HPA maximum plus surge against the
    upstream at its minimum."""
    deps = by_kind(docs, "Deployment")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    gw = deps.get("gateway")
    if not gw:
        return
    genv = container_env(docs, gw["spec"]["template"]["spec"]["containers"][0])
    per_pod = int(genv.get("UPSTREAM_MAX_CONNECTIONS") or 8)
    gmax = hpas["gateway"]["spec"]["maxReplicas"] if "gateway" in hpas else 1
    gpods = gmax + surge_pods(gw, gmax)
    for var, svc in UPSTREAMS.items():
        d = deps.get(svc)
        if not d or not genv.get(var):
            continue
        env = container_env(docs, d["spec"]["template"]["spec"]["containers"][0])
        threads = int(env.get("HTTP_THREADS") or 0)
        capped = int(env.get("KEEPALIVE_TIMEOUT_MS") or 500) > int(env.get("REQUEST_TIMEOUT_MS") or 10000)
        kept = threads // 2 if capped else threads
        umin = hpas[svc]["spec"].get("minReplicas", 1) if svc in hpas else 1
        if gpods * per_pod > umin * kept:
            out.append(f"gateway -> {svc}: {gpods} gateway pods x UPSTREAM_MAX_CONNECTIONS {per_pod} = "
                       f"{gpods * per_pod} kept-alive connections, but {umin} {svc} pods keep at most "
                       f"{umin} x {kept} (HTTP_THREADS {threads}{' / 2' if capped else ''}): past that "
                       "every answer closes its connection")


def check_replication(what, rf, isr, brokers, out):
    rf, isr = int(rf), int(isr)
    if rf > brokers:
        out.append(f"{what}: replication {rf} above the {brokers} broker(s)")
    if rf > 1 and isr >= rf:
        out.append(f"{what}: min.insync.replicas {isr} leaves no replica to lose (replication {rf})")
    if rf == 1 and isr != 1:
        out.append(f"{what}: min.insync.replicas must be 1 with one replica")
    if brokers >= 3 and (rf < 3 or isr < 2):
        out.append(f"{what}: with {brokers} brokers use replication >= 3 and min.insync.replicas >= 2")


def load_budget(repo=REPO):
    with open(os.path.join(repo, "deploy", "k8s", "db-budget.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def surge_pods(d, replicas):
    """The Deployment's maxSurge in pods at `replicas` (default 25%, rounded up)."""
    surge = ((d["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return -(-replicas * int(surge[:-1]) // 100)
    return int(surge)


def db_budget(docs, budget):
    """Returns ([(svc, per_pod, pods)], used, allowed) for the rendered docs."""
    rows = []
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    for svc, extra in budget["extra_per_pod"].items():
        d = by_kind(docs, "Deployment").get(svc)
        if not d:
            continue
        env = container_env(docs, d["spec"]["template"]["spec"]["containers"][0])
        pool = int(env.get("DB_POOL_SIZE") or 0)
        hmax = hpas[svc]["spec"]["maxReplicas"] if svc in hpas else 1
        rows.append((svc, pool + int(extra), hmax + surge_pods(d, hmax)))
    used = sum(per * pods for _, per, pods in rows)
    return rows, used, int(budget["max_connections"]) - int(budget["reserve"])


def check_db_budget(docs, budget, out):
    for name, d in by_kind(docs, "Deployment").items():
        env = container_env(docs, d["spec"]["template"]["spec"]["containers"][0])
        if "DB_POOL_SIZE" in env and name not in budget["extra_per_pod"]:
            out.append(f"Deployment {name}: has a database pool but no line in db-budget.yaml")
        if name in budget["extra_per_pod"] and not env.get("DB_POOL_SIZE"):
            out.append(f"Deployment {name}: DB_POOL_SIZE must be set (db-budget.yaml counts it)")
    rows, used, allowed = db_budget(docs, budget)
    if used > allowed:
        detail = " + ".join(f"{svc} {per}x{pods}" for svc, per, pods in rows)
        out.append(f"PostgreSQL connections: {detail} = {used} above max_connections "
                   f"{budget['max_connections']} - reserve {budget['reserve']} = {allowed} "
                   "(deploy/k8s/db-budget.yaml)")


# ---- reach: who may connect to which port ---------------------------------------------

MONITORING_NS = "monitoring"
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus"}
PROXY_NS = "envoy-gateway-system"
GATEWAY_POD = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/part-of": "linktr"}


def selects(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) against labels."""
    selector = selector or {}
    if not matches(selector.get("matchLabels"), labels):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


def peer(p):
    """One `from` entry as (namespace, pod labels): namespace "" is the policy's own, "*"
    any namespace; pod labels {} any pod; None for an address range."""
    if "ipBlock" in p:
        return None
    if "namespaceSelector" in p:
        ns_labels = (p["namespaceSelector"] or {}).get("matchLabels") or {}
        ns = ns_labels.get("kubernetes.io/metadata.name", "*") if len(ns_labels) == 1 else "*"
    else:
        ns = ""
    pod = p.get("podSelector") or {}
    return ns, (pod.get("matchLabels") or {}) if not pod.get("matchExpressions") else {"?": "?"}


def ingress_peers(docs, labels, port):
    """The peers (see peer(); "everyone" for a rule without `from`) that the ingress policies
    selecting pods with these labels let reach port ((name, number) of a container port)."""
    peers = []
    for np in by_kind(docs, "NetworkPolicy").values():
        spec = np["spec"]
        if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]) or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") in port or (isinstance(p.get("port"), int) and
                                 p.get("endPort") and p["port"] <= port[1] <= p["endPort"])
                                 for p in ports):
                continue
            froms = rule.get("from")
            peers.extend([peer(f) for f in froms] if froms else ["everyone"])
    return peers


def describe(p):
    if p == "everyone":
        return "every peer"
    if p is None:
        return "an address range"
    ns, pods = p
    where = {"": "this namespace", "*": "any namespace"}.get(ns, f"namespace {ns}")
    return f"{'any pod' if not pods else ','.join(f'{k}={v}' for k, v in pods.items())} in {where}"


def is_prometheus(p):
    return isinstance(p, tuple) and p[0] == MONITORING_NS and p[1] and matches(PROMETHEUS_POD, p[1])


def check_reach(docs, out):
    allowed_api = {
        "gateway": lambda p: isinstance(p, tuple) and p[0] == PROXY_NS,
        "auth": lambda p: isinstance(p, tuple) and p[0] == "" and p[1] and matches(GATEWAY_POD, p[1]),
        "referral": lambda p: isinstance(p, tuple) and p[0] == "" and p[1] and matches(GATEWAY_POD, p[1]),
        "mailer": lambda p: False,
    }
    for name, d in by_kind(docs, "Deployment").items():
        if name not in SERVICES:
            continue
        tmpl = d["spec"]["template"]
        labels = tmpl["metadata"]["labels"]
        ports = [p for c in tmpl["spec"]["containers"] for p in c.get("ports") or []]
        for p in ports:
            key = (p.get("name"), p["containerPort"])
            peers = ingress_peers(docs, labels, key)
            what = f"{name} {p.get('name')} port {p['containerPort']}"
            if p.get("name") == "admin":
                if not any(is_prometheus(x) for x in peers):
                    out.append(f"reach: {what}: Prometheus (namespace {MONITORING_NS}) cannot reach it")
                ok = is_prometheus
            else:
                ok = allowed_api[name]
            for x in peers:
                if not ok(x):
                    out.append(f"reach: {what}: open to {describe(x)}")
        ann = tmpl["metadata"].get("annotations") or {}
        admin = [p["containerPort"] for p in ports if p.get("name") == "admin"]
        if ann.get("prometheus.io/scrape") != "true" or [int(ann.get("prometheus.io/port") or 0)] != admin \
                or ann.get("prometheus.io/path") != "/metrics":
            out.append(f"reach: {name}: prometheus.io annotations must scrape /metrics on the admin port {admin}")


def lint(docs, topics_wanted, budget=None):
    out = []
    check_services(docs, out)
    check_reach(docs, out)
    check_kafka(docs, topics_wanted, out)
    check_db_budget(docs, budget or load_budget(), out)
    check_upstream_connections(docs, out)
    return out


def lint_compose(compose_path, dockerfile_path):
    """deploy/docker: compose services build existing Dockerfile targets, wait
    on healthy or completed dependencies, and every long-running service has a
    healthcheck."""
    out = []
    with open(dockerfile_path, encoding="utf-8") as f:
        targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", f.read(), re.M | re.I))
    for svc in SERVICES + ("keygen",):
        if svc not in targets:
            out.append(f"Dockerfile: no target {svc}")
    with open(compose_path, encoding="utf-8") as f:
        services = yaml.safe_load(f).get("services") or {}
    for name, s in services.items():
        target = (s.get("build") or {}).get("target")
        if s.get("build") and target not in targets:
            out.append(f"compose {name}: builds target {target!r}, not in the Dockerfile")
        deps = s.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            if dep not in services:
                out.append(f"compose {name}: depends on unknown service {dep}")
            elif cond.get("condition") not in ("service_healthy", "service_completed_successfully"):
                out.append(f"compose {name}: depends on {dep} without a health or completion condition")
            elif cond["condition"] == "service_healthy" and "healthcheck" not in services[dep]:
                out.append(f"compose {name}: waits for {dep} to be healthy, which has no healthcheck")
        long_running = s.get("restart", "no") != "no" or name in SERVICES or "ports" in s
        if long_running and "profiles" not in s and "healthcheck" not in s:
            out.append(f"compose {name}: no healthcheck")
    for svc in SERVICES:
        if svc not in services:
            out.append(f"compose: no service {svc}")
    return out


def self_test():
    """Breaks a known-good rendering in several ways; each must be found."""
    base = os.path.join(REPO, "deploy", "k8s", "overlays")
    import copy
    import subprocess
    kustomize = os.environ.get("KUSTOMIZE") or os.path.expanduser("~/.cache/linktr/deploy-tools/bin/kustomize")
    good = [d for d in yaml.safe_load_all(subprocess.run(
        [kustomize, "build", os.path.join(base, "prod")], capture_output=True, text=True, check=True).stdout) if d]
    topics = expected_topics(REPO)
    assert lint(good, topics) == [], lint(good, topics)

    def broken(fn):
        docs = copy.deepcopy(good)
        fn(docs)
        return lint(docs, topics)

    def dep(docs, name):
        return by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]

    cases = [
        (lambda ds: dep(ds, "auth")["containers"][0].pop("readinessProbe"), "auth: no HTTP readinessProbe"),
        (lambda ds: dep(ds, "mailer")["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
         "mailer: readOnlyRootFilesystem"),
        (lambda ds: dep(ds, "gateway").update(terminationGracePeriodSeconds=10), "gateway: terminationGrace"),
        (lambda ds: ds.append({"kind": "Secret", "metadata": {"name": "x"}}), "a Secret is rendered"),
        (lambda ds: by_kind(ds, "HorizontalPodAutoscaler")["mailer"]["spec"].update(maxReplicas=13),
         "HPA mailer: maxReplicas 13 above the 12 partitions"),
        (lambda ds: by_kind(ds, "KafkaTopic")["user.verified"]["spec"].update(partitions=1),
         "above the 1 partitions its consumers can share"),
        (lambda ds: by_kind(ds, "KafkaTopic")["mail.dead"]["spec"].update(partitions=0),
         "KafkaTopic mail.dead: partitions must be 1-1000"),
        (lambda ds: ds.remove(by_kind(ds, "KafkaTopic")["mail.dead"]), "no KafkaTopic for event type mail.dead"),
        (lambda ds: by_kind(ds, "KafkaTopic")["user.verified"]["spec"]["config"].update(
            {"min.insync.replicas": 3}), "KafkaTopic user.verified: min.insync.replicas 3"),
        (lambda ds: by_kind(ds, "KafkaNodePool")["dual-role"]["spec"].update(replicas=1),
         "replication 3 above the 1 broker"),
        (lambda ds: dep(ds, "referral")["containers"][0].update(image="linktr/referral:latest"),
         "needs a pinned tag"),
        (lambda ds: ds.remove(by_kind(ds, "NetworkPolicy")["linktr-default-deny"]), "no default-deny"),
        (lambda ds: by_kind(ds, "HTTPRoute")["gateway"]["spec"]["rules"][0]["matches"].append(
            {"path": {"type": "PathPrefix", "value": "/"}}), "/metrics would be public"),
        (lambda ds: by_kind(ds, "HTTPRoute")["gateway"]["spec"]["rules"][0]["matches"].append(
            {"path": {"type": "Exact", "value": "/readyz"}}), "/readyz would be public"),
        (lambda ds: by_kind(ds, "HTTPRoute")["gateway"]["spec"]["rules"][0]["matches"].pop(0),
         "public prefix /api is not routed"),
        (lambda ds: by_kind(ds, "HTTPRoute")["gateway"]["spec"]["rules"][0].update(backendRef=[]),
         "unknown field backendRef"),
        (lambda ds: by_kind(ds, "HTTPRoute")["gateway"]["spec"]["parentRefs"][0].update(sectionName="web"),
         "has no listener web"),
        (lambda ds: by_kind(ds, "BackendTrafficPolicy")["gateway"]["spec"]["timeout"]["http"].update(
            connectionIdleTimeout="90s"), "90s is not shorter than"),
        (lambda ds: by_kind(ds, "HorizontalPodAutoscaler")["auth"]["spec"].update(maxReplicas=20),
         "PostgreSQL connections: auth 5x21"),
        (lambda ds: by_kind(ds, "HorizontalPodAutoscaler")["gateway"]["spec"].update(maxReplicas=40),
         "gateway -> referral: 41 gateway pods x UPSTREAM_MAX_CONNECTIONS 8 = 328"),
        (lambda ds: by_kind(ds, "KafkaTopic")["mail.dead"].update(apiVersion="kafka.strimzi.io/v1beta2"),
         "KafkaTopic mail.dead: kafka.strimzi.io/v1beta2"),
        (lambda ds: by_kind(ds, "Kafka")["linktr"]["spec"]["kafka"].update(version="3.9.0"),
         "spec.kafka.version 3.9.0 is not one"),
        # reach: the monitoring namespace's pods beyond Prometheus, API ports, scrape targets.
        (lambda ds: by_kind(ds, "NetworkPolicy")["auth"]["spec"]["ingress"][1]["from"][0].pop("podSelector"),
         "reach: auth admin port 9001: Prometheus (namespace monitoring) cannot reach it"),
        (lambda ds: by_kind(ds, "NetworkPolicy")["auth"]["spec"]["ingress"][1]["from"][0].pop("podSelector"),
         "reach: auth admin port 9001: open to any pod in namespace monitoring"),
        (lambda ds: by_kind(ds, "NetworkPolicy")["gateway"]["spec"]["ingress"][1].pop("ports"),
         "reach: gateway http port 8000: open to app.kubernetes.io/name=prometheus in namespace monitoring"),
        (lambda ds: by_kind(ds, "NetworkPolicy")["referral"]["spec"]["ingress"][0].pop("from"),
         "reach: referral http port 8002: open to every peer"),
        (lambda ds: by_kind(ds, "NetworkPolicy")["mailer"]["spec"]["ingress"][0]["ports"][0].update(port=8003),
         "reach: mailer admin port 9003: Prometheus (namespace monitoring) cannot reach it"),
        (lambda ds: by_kind(ds, "NetworkPolicy")["mailer"]["spec"]["ingress"][0]["ports"][0].update(port=8003),
         "reach: mailer http port 8003: open to"),
        (lambda ds: by_kind(ds, "NetworkPolicy")["auth"]["spec"]["ingress"].append(
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 9001}]}),
         "reach: auth admin port 9001: open to an address range"),
        (lambda ds: by_kind(ds, "Deployment")["referral"]["spec"]["template"]["metadata"]["annotations"].update(
            {"prometheus.io/port": "8002"}), "reach: referral: prometheus.io annotations"),
    ]
    for fn, want in cases:
        found = broken(fn)
        assert any(want in f for f in found), (want, found)
    print(f"lint self-test: {len(cases) + 1} passed, 0 failed")


def main(argv):
    if argv == ["--self-test"]:
        self_test()
        return 0
    if argv[:1] == ["--compose"] and len(argv) == 3:
        try:
            out = lint_compose(argv[1], argv[2])
        except (OSError, yaml.YAMLError, AttributeError) as e:
            print(f"lint: cannot read {argv[1]}: {e!r}", file=sys.stderr)
            return 2
        for line in out:
            print(f"lint: {line}")
        return 1 if out else 0
    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    findings = 0
    try:
        topics = expected_topics(REPO)
        for item in argv:
            name, _, path = item.partition("=")
            with open(path, encoding="utf-8") as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
            out = lint(docs, topics)
            for line in out:
                print(f"lint: {name}: {line}")
            findings += len(out)
            if verbose:
                secrets = sorted(set().union(*(secret_refs(d) for d in by_kind(docs, "Deployment").values())))
                tls = sorted(c["name"] for g in by_kind(docs, "Gateway").values()
                             for li in g["spec"].get("listeners") or []
                             for c in (li.get("tls") or {}).get("certificateRefs") or [])
                print(f"lint: {name}: {len(docs)} objects OK; secrets to create: {' '.join(secrets + tls)}")
                rows, used, allowed = db_budget(docs, load_budget())
                print(f"lint: {name}: PostgreSQL connections at the HPA maxima plus surge: "
                      f"{' + '.join(f'{s} {per}x{pods}' for s, per, pods in rows)} = {used} "
                      f"<= {allowed} (db-budget.yaml)")
    except (OSError, yaml.YAMLError, KeyError, ValueError, TypeError) as e:
        print(f"lint: cannot read the manifests: {e!r}", file=sys.stderr)
        return 2
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
