"""Shared helpers of the page tests: the stack's env file, plain HTTP, the Maildir."""
import email
import email.policy
import http.client
import json
import os
import re
import time
import urllib.parse
import uuid


def stack_env():
    """The KEY=VALUE lines of the stack fixture's stack.env as a dict."""
    path = os.environ["LINKTR_STACK_ENV"]
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    return env


class Http:
    """Plain HTTP to the gateway, no redirects followed, no cookies kept."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.base = base
        self.host, self.port = u.hostname, u.port

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data.decode("utf-8", "replace")

    def json(self, method, path, body=None, token=None):
        h = {"Authorization": "Bearer " + token} if token else {}
        st, hd, text = self.request(method, path, body, h)
        return st, (json.loads(text) if text and hd.get("content-type", "").find("json") >= 0
                    else None)

    def form(self, path, fields, origin=None, cookie=None, ua=None):
        """POSTs a form the way a browser on our origin does (Origin: base unless given)."""
        h = {"Content-Type": "application/x-www-form-urlencoded",
             "Origin": self.base if origin is None else origin}
        if origin == "":
            del h["Origin"]
        if cookie:
            h["Cookie"] = cookie
        if ua:
            h["User-Agent"] = ua
        return self.request("POST", path, urllib.parse.urlencode(fields), h)


def hidden(html, name):
    """The value of a hidden input in a page, or None."""
    m = re.search(r'<input type="hidden" name="%s" value="([^"]*)">' % re.escape(name), html)
    return m.group(1) if m else None


def unique(prefix):
    return prefix + uuid.uuid4().hex[:10]


def wait_mail(mail_dir, to, kind, timeout=30):
    """The token of the newest link of kind ("verify-email", "reset-password") mailed to `to`."""
    deadline = time.time() + timeout
    pat = re.compile(r"/%s\?token=([A-Za-z0-9_-]+)" % kind)
    while time.time() < deadline:
        for sub in ("new", "cur"):
            d = os.path.join(mail_dir, sub)
            for name in sorted(os.listdir(d), key=lambda n: os.stat(os.path.join(d, n)).st_mtime,
                               reverse=True):
                with open(os.path.join(d, name), "rb") as f:
                    msg = email.message_from_binary_file(f, policy=email.policy.default)
                if msg["To"] != to:
                    continue
                body = msg.get_body(preferencelist=("plain",))
                m = pat.search(body.get_content() if body else "")
                if m:
                    return m.group(1)
        time.sleep(0.2)
    raise AssertionError("no %s mail for %s within %ss" % (kind, to, timeout))


def wait_for(fn, timeout=20):
    """Calls fn until it returns a true value; returns that value."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(0.2)


def expire_token(env, token):
    """Moves a one-time token's expiry into the past, as time would (admin role, psql).

    The token's hash goes in as a psql variable (:'h'), quoted by psql, never pasted
    into the statement text.
    """
    import hashlib
    import subprocess
    digest = hashlib.sha256(token.encode()).hexdigest()
    sql = ("UPDATE auth.one_time_tokens SET expires_at = now() - interval '1 second' "
           "WHERE token_hash = :'h' AND used_at IS NULL")
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-v",
                          "h=" + digest, env["ADMIN_DATABASE_URL"]],
                         input=sql + ";\n", capture_output=True, text=True, check=True)
    return out.stdout
