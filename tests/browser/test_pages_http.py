#!/usr/bin/env python3
"""The pages for people over plain HTTP, against the real stack (no browser).

Each test is a sentence; each builds its own users. Run by ctest as
integration.pages_http with LINKTR_STACK_ENV pointing at the stack's env file.
"""
import json
import re
import sys
import time
import unittest

from pagelib import Http, expire_token, hidden, stack_env, unique, wait_for, wait_mail

ENV = stack_env()
GW = Http(ENV["GATEWAY_URL"])
MAIL = ENV["MAIL_DIR"]
PASSWORD = "violet tractor 93 lantern"


def register(referral_code=None):
    name = unique("pg")
    body = {"username": name, "email": name + "@example.com", "password": PASSWORD}
    if referral_code:
        body["referral_code"] = referral_code
    st, user = GW.json("POST", "/api/register", body)
    assert st == 201, (st, user)
    return user


def login(username, password):
    return GW.json("POST", "/api/login", {"username_or_email": username, "password": password})


def member_known(code):
    """True once referral knows the code (the user.registered event arrived)."""
    st, _, _ = GW.request("GET", "/r/" + code)
    return st == 302


class VerifyPage(unittest.TestCase):
    def test_get_spends_nothing_and_post_verifies_once(self):
        user = register()
        token = wait_mail(MAIL, user["email"], "verify-email")
        # A mail scanner fetches the link (GET and HEAD) before the person does.
        for method in ("GET", "HEAD", "GET"):
            st, hd, html = GW.request(method, "/verify-email?token=" + token)
            self.assertEqual(st, 200)
        st, hd, html = GW.request("GET", "/verify-email?token=" + token)
        self.assertIn("Confirm my email", html)
        self.assertIn("text/html", hd["content-type"])
        csp = hd["content-security-policy"]
        for part in ("default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"):
            self.assertIn(part, csp)
        self.assertNotIn("script", html.lower())
        self.assertIn('name="viewport"', html)
        self.assertEqual(hd["cache-control"], "no-store")
        csrf = hidden(html, "csrf")
        st, _, html = GW.form("/verify-email", {"token": token, "csrf": csrf})
        self.assertEqual(st, 200, html)
        self.assertIn("Email verified", html)
        st, me = login(user["username"], PASSWORD)
        self.assertTrue(me["user"]["email_verified"])
        st, _, html = GW.form("/verify-email", {"token": token, "csrf": csrf})
        self.assertEqual(st, 400)
        self.assertIn("<h1>This link was already used</h1>", html)
        self.assertNotIn("expired", html)
        # The API says why, machine-readably, for the page (and any other front end).
        st, problem = GW.json("POST", "/api/verify-email", {"token": token})
        self.assertEqual(st, 400)
        self.assertEqual(problem["code"], "token_used")

    def test_expired_and_unknown_links_each_say_so(self):
        user = register()
        token = wait_mail(MAIL, user["email"], "verify-email")
        _, _, html = GW.request("GET", "/verify-email?token=" + token)
        csrf = hidden(html, "csrf")
        expire_token(ENV, token)
        st, _, html = GW.form("/verify-email", {"token": token, "csrf": csrf})
        self.assertEqual(st, 400)
        self.assertIn("<h1>This link has expired</h1>", html)
        self.assertIn("ask for a new verification email", html)
        self.assertNotIn("already used", html)
        st, problem = GW.json("POST", "/api/verify-email", {"token": token})
        self.assertEqual((st, problem["code"]), (400, "token_expired"))
        self.assertEqual(problem["errors"]["token"], ["This link has expired."])
        st, me = login(user["username"], PASSWORD)
        self.assertFalse(me["user"]["email_verified"])
        # A well-formed token that was never issued: not valid, and nothing more.
        ghost = "B" * 43
        _, _, html = GW.request("GET", "/verify-email?token=" + ghost)
        st, _, html = GW.form("/verify-email", {"token": ghost, "csrf": hidden(html, "csrf")})
        self.assertEqual(st, 400)
        self.assertIn("<h1>This link is not valid</h1>", html)
        st, problem = GW.json("POST", "/api/verify-email", {"token": ghost})
        self.assertEqual((st, problem["code"]), (400, "token_invalid"))
        self.assertEqual(problem["errors"]["token"], ["Invalid or expired token."])

    def test_post_without_csrf_token_is_refused_and_spends_nothing(self):
        user = register()
        token = wait_mail(MAIL, user["email"], "verify-email")
        st, _, html = GW.form("/verify-email", {"token": token})
        self.assertEqual(st, 403)
        self.assertIn("Request refused", html)
        # A token made for another link does not carry over either.
        _, _, other = GW.request("GET", "/verify-email?token=" + "A" * 43)
        st, _, _ = GW.form("/verify-email", {"token": token, "csrf": hidden(other, "csrf")})
        self.assertEqual(st, 403)
        st, me = login(user["username"], PASSWORD)
        self.assertFalse(me["user"]["email_verified"])

    def test_post_from_another_origin_is_refused(self):
        user = register()
        token = wait_mail(MAIL, user["email"], "verify-email")
        _, _, html = GW.request("GET", "/verify-email?token=" + token)
        fields = {"token": token, "csrf": hidden(html, "csrf")}
        for origin in ("https://evil.example", "null", ""):
            st, _, page = GW.form("/verify-email", fields, origin=origin)
            self.assertEqual(st, 403, origin)
        st, me = login(user["username"], PASSWORD)
        self.assertFalse(me["user"]["email_verified"])
        # A Referer from our own origin stands in for a missing Origin.
        st, _, page = GW.request("POST", "/verify-email",
                                 "token=%s&csrf=%s" % (token, fields["csrf"]),
                                 {"Content-Type": "application/x-www-form-urlencoded",
                                  "Referer": GW.base + "/verify-email?token=" + token})
        self.assertEqual(st, 200, page)

    def test_bad_requests_get_a_page_not_a_crash(self):
        st, _, html = GW.request("GET", "/verify-email")
        self.assertEqual(st, 400)
        self.assertIn("incomplete", html)
        st, _, _ = GW.request("GET", "/verify-email?token=%3Cscript%3E")
        self.assertEqual(st, 400)
        st, _, _ = GW.request("POST", "/verify-email", '{"token": "x"}',
                              {"Content-Type": "application/json", "Origin": GW.base})
        self.assertEqual(st, 415)
        st, _, _ = GW.form("/verify-email", {"token": "A" * 43, "pad": "x" * 5000})
        self.assertEqual(st, 413)


class ResetPage(unittest.TestCase):
    def forgot(self, user):
        st, _ = GW.json("POST", "/api/forgot-password", {"email": user["email"]})
        self.assertEqual(st, 202)
        return wait_mail(MAIL, user["email"], "reset-password")

    def test_reset_through_the_page_signs_other_sessions_out(self):
        user = register()
        st, old = login(user["username"], PASSWORD)
        self.assertEqual(st, 200)
        token = self.forgot(user)
        st, _, html = GW.request("GET", "/reset-password?token=" + token)  # a scanner
        st, _, html = GW.request("GET", "/reset-password?token=" + token)
        self.assertEqual(st, 200)
        self.assertIn('<label for="password">', html)
        self.assertIn('<label for="password2">', html)
        csrf = hidden(html, "csrf")
        # A mismatch, then the server's own rule, each re-render the form with the reason.
        st, _, html = GW.form("/reset-password", {"token": token, "csrf": csrf,
                                                  "password": "a long pass 1",
                                                  "password2": "a long pass 2"})
        self.assertEqual(st, 400)
        self.assertIn("do not match", html)
        st, _, html = GW.form("/reset-password", {"token": token, "csrf": hidden(html, "csrf"),
                                                  "password": "12345678", "password2": "12345678"})
        self.assertEqual(st, 400)
        self.assertIn('name="password"', html)
        self.assertRegex(html, r'class="box">[^<]*(numeric|common|short|similar)')
        new = "ocean marble 71 ferry"
        st, _, html = GW.form("/reset-password", {"token": token, "csrf": hidden(html, "csrf"),
                                                  "password": new, "password2": new})
        self.assertEqual(st, 200, html)
        self.assertIn("signed out", html)
        st, _ = login(user["username"], PASSWORD)
        self.assertEqual(st, 401)
        st, tokens = login(user["username"], new)
        self.assertEqual(st, 200)
        # The session from before the reset is gone: its refresh token no longer works.
        st, _ = GW.json("POST", "/api/token/refresh", {"refresh": old["refresh"]})
        self.assertEqual(st, 401)
        # Spent: the same link now says so and shows no form.
        st, _, html = GW.form("/reset-password", {"token": token, "csrf": csrf,
                                                  "password": new, "password2": new})
        self.assertEqual(st, 400)
        self.assertIn("<h1>This link was already used</h1>", html)
        self.assertNotIn('name="password"', html)
        st, problem = GW.json("POST", "/api/reset-password", {"token": token, "password": new})
        self.assertEqual((st, problem["code"]), (400, "token_used"))

    def test_expired_reset_link_says_expired(self):
        user = register()
        token = self.forgot(user)
        _, _, html = GW.request("GET", "/reset-password?token=" + token)
        expire_token(ENV, token)
        new = "harbor quilt 58 meadow"
        st, _, html = GW.form("/reset-password", {"token": token, "csrf": hidden(html, "csrf"),
                                                  "password": new, "password2": new})
        self.assertEqual(st, 400)
        self.assertIn("<h1>This link has expired</h1>", html)
        self.assertNotIn('name="password"', html)
        st, problem = GW.json("POST", "/api/reset-password", {"token": token, "password": new})
        self.assertEqual((st, problem["code"]), (400, "token_expired"))
        st, _ = login(user["username"], new)
        self.assertEqual(st, 401)


class ReferralAndSignup(unittest.TestCase):
    def test_referral_link_redirects_with_cookie_and_unknown_code_is_404(self):
        ref = register()
        code = ref["referral_code"]
        self.assertTrue(wait_for(lambda: member_known(code)))
        st, hd, _ = GW.request("GET", "/r/" + code.lower())
        self.assertEqual(st, 302)
        self.assertTrue(hd["location"].endswith("/signup?ref=" + code), hd["location"])
        cookie = hd["set-cookie"]
        self.assertIn("linktr_ref=" + code, cookie)
        for attr in ("Max-Age=2592000", "SameSite=Lax", "HttpOnly", "Path=/"):
            self.assertIn(attr, cookie)
        st, _, html = GW.request("GET", "/r/ZZZZZZZZ")
        self.assertEqual(st, 404)
        self.assertIn("does not work", html)
        st, _, _ = GW.request("GET", "/r/%3Cb%3E")
        self.assertEqual(st, 404)

    def test_signup_page_registers_with_the_code_and_shows_field_errors(self):
        ref = register()
        code = ref["referral_code"]
        st, _, html = GW.request("GET", "/signup?ref=" + code)
        self.assertEqual(st, 200)
        self.assertIn('value="%s"' % code, html)
        name = unique("su")
        fields = {"csrf": hidden(html, "csrf"), "username": name,
                  "email": name + "@example.com", "password": PASSWORD, "referral_code": code}
        st, _, page = GW.form("/signup", fields)
        self.assertEqual(st, 201, page)
        self.assertIn("Check your mail", page)
        st, tokens = login(name, PASSWORD)
        self.assertEqual(tokens["user"]["referred_by"], code)
        # The same again: duplicate username and email, each named, values kept and escaped.
        fields["username"] = name
        st, _, page = GW.form("/signup", fields)
        self.assertEqual(st, 409)
        self.assertIn("username already exists", page)
        self.assertIn("email already exists", page)
        self.assertIn('value="%s"' % name, page)
        self.assertNotIn(PASSWORD, page)
        evil = '"><b>x'
        st, _, page = GW.form("/signup", dict(fields, username=evil, email="a@example.com",
                                               password="123"))
        self.assertEqual(st, 400)
        self.assertNotIn("<b>x", page)
        self.assertIn("&quot;&gt;&lt;b&gt;x", page)

    def test_signup_takes_the_cookie_when_the_field_is_empty_and_the_field_wins(self):
        a, b = register(), register()
        _, _, html = GW.request("GET", "/signup", headers={"Cookie": "linktr_ref=" +
                                                             a["referral_code"]})
        self.assertIn('value="%s"' % a["referral_code"], html)
        csrf = hidden(html, "csrf")
        n1, n2 = unique("ck"), unique("ck")
        base = {"csrf": csrf, "password": PASSWORD}
        st, _, _ = GW.form("/signup", dict(base, username=n1, email=n1 + "@example.com",
                                           referral_code=""),
                           cookie="linktr_ref=" + a["referral_code"])
        self.assertEqual(st, 201)
        st, _, _ = GW.form("/signup", dict(base, username=n2, email=n2 + "@example.com",
                                           referral_code=b["referral_code"]),
                           cookie="linktr_ref=" + a["referral_code"])
        self.assertEqual(st, 201)
        self.assertEqual(login(n1, PASSWORD)[1]["user"]["referred_by"], a["referral_code"])
        self.assertEqual(login(n2, PASSWORD)[1]["user"]["referred_by"], b["referral_code"])

    def test_signup_post_without_csrf_or_from_elsewhere_is_refused(self):
        name = unique("cs")
        fields = {"username": name, "email": name + "@example.com", "password": PASSWORD}
        st, _, _ = GW.form("/signup", fields)
        self.assertEqual(st, 403)
        _, _, html = GW.request("GET", "/signup")
        st, _, _ = GW.form("/signup", dict(fields, csrf=hidden(html, "csrf")),
                           origin="https://evil.example")
        self.assertEqual(st, 403)
        self.assertEqual(login(name, PASSWORD)[0], 401)


class ReadYourWrites(unittest.TestCase):
    def test_the_code_shows_in_stats_right_after_registering(self):
        import base64
        user = register()
        st, tokens = login(user["username"], PASSWORD)
        self.assertEqual(st, 200)
        payload = tokens["access"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        self.assertEqual(claims["ref"], user["referral_code"])
        st, stats = GW.json("GET", "/api/referral-stats/", token=tokens["access"])
        self.assertEqual(st, 200)
        self.assertEqual(stats["referral_code"], user["referral_code"])
        self.assertTrue(stats["referral_link"].endswith("/r/" + user["referral_code"]))


BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


class ClicksAndFunnel(unittest.TestCase):
    def stats(self, access):
        st, body = GW.json("GET", "/api/referral-stats/", token=access)
        self.assertEqual(st, 200)
        return body

    def test_clicks_count_people_once_an_hour_and_feed_the_funnel(self):
        ref = register()
        code = ref["referral_code"]
        access = login(ref["username"], PASSWORD)[1]["access"]
        self.assertTrue(wait_for(lambda: member_known(code)))  # curl-like: not counted
        self.assertEqual(self.stats(access)["clicks"], 0)
        st, _, _ = GW.request("GET", "/r/" + code, headers={
            "User-Agent": BROWSER_UA, "Referer": "https://social.example/post/1"})
        self.assertEqual(st, 302)
        # Not counted: the same address within the hour, HEAD, a crawler.
        GW.request("GET", "/r/" + code, headers={"User-Agent": BROWSER_UA})
        st, _, _ = GW.request("HEAD", "/r/" + code, headers={"User-Agent": BROWSER_UA})
        self.assertEqual(st, 302)
        GW.request("GET", "/r/" + code, headers={"User-Agent": "Googlebot/2.1"})
        s = self.stats(access)
        self.assertEqual(s["clicks"], 1)
        self.assertEqual(s["funnel"], {"clicks": 1, "signups": 0, "successful": 0})
        register(code)
        s = wait_for(lambda: (lambda b: b if b["funnel"]["signups"] == 1 else None)(
            self.stats(access)))
        self.assertEqual(s["funnel"], {"clicks": 1, "signups": 1, "successful": 0})
        st, daily = GW.json("GET", "/api/referral-stats/daily/?days=7", token=access)
        self.assertEqual(st, 200)
        self.assertEqual(len(daily["days"]), 7)
        self.assertEqual(daily["days"][-1]["date"], time.strftime("%Y-%m-%d", time.gmtime()))
        self.assertEqual(daily["days"][-1]["clicks"], 1)
        self.assertEqual(daily["days"][-1]["signups"], 1)
        self.assertTrue(all(d["clicks"] == 0 for d in daily["days"][:-1]))
        dates = [d["date"] for d in daily["days"]]
        self.assertEqual(dates, sorted(dates))

    def test_daily_refuses_a_bad_days_and_needs_a_token(self):
        ref = register()
        access = login(ref["username"], PASSWORD)[1]["access"]
        for bad in ("0", "91", "abc", "-1", "1.5", ""):
            st, body = GW.json("GET", "/api/referral-stats/daily/?days=" + bad, token=access)
            self.assertEqual(st, 400, bad)
            self.assertIn("days", body["errors"])
        st, body = GW.json("GET", "/api/referral-stats/daily/", token=access)
        self.assertEqual(len(body["days"]), 30)
        st, body = GW.json("GET", "/api/referral-stats/daily/?days=90", token=access)
        self.assertEqual(len(body["days"]), 90)
        st, _ = GW.json("GET", "/api/referral-stats/daily/")
        self.assertEqual(st, 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
