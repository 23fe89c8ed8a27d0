#!/usr/bin/env python3
"""The pages for people in a real browser (Debian's chromium + chromium-driver).

A person follows a referral link, signs up through the page, opens the
verification link from the Maildir (a scanner fetched it first), confirms;
then does forgot → reset through the pages and logs in with the new
password through the API; changes the email address through the confirm
page and cancels a second change through the cancel page. Forms sent from another origin or without their
CSRF token are refused. A screenshot of every page, at a phone's size, goes
to $LINKTR_SCREENSHOT_DIR.
"""
import os
import shutil
import tempfile
import unittest

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from pagelib import Http, expire_token, stack_env, unique, wait_for, wait_mail

ENV = stack_env()
BASE = ENV["GATEWAY_URL"]
GW = Http(BASE)
MAIL = ENV["MAIL_DIR"]
SHOTS = os.environ.get("LINKTR_SCREENSHOT_DIR", os.path.join(os.getcwd(), "screenshots"))
PASSWORD = "violet tractor 93 lantern"
# A phone's viewport: the pages must read well there.
PHONE = (412, 915)


def gone(element):
    """True once element left the document. chromedriver reports a node of a page that was
    replaced either as stale or, mid-navigation, as "does not belong to the document"."""
    try:
        element.is_enabled()
        return False
    except WebDriverException:  # StaleElementReferenceException is one
        # Chromium may also answer "does not belong to the document", or a
        # plain WebDriverException, while the old page is torn down.
        return True


def chromium_driver(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--user-data-dir=" + profile,
              "--window-size=%d,%d" % PHONE):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


class InTheBrowser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(SHOTS, exist_ok=True)
        cls.profile = tempfile.mkdtemp(prefix="linktr-chromium-")
        cls.driver = chromium_driver(cls.profile)
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        shutil.rmtree(cls.profile, ignore_errors=True)

    def shot(self, name):
        self.driver.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def h1(self):
        return self.driver.find_element(By.TAG_NAME, "h1").text

    def fill(self, **fields):
        for name, value in fields.items():
            el = self.driver.find_element(By.NAME, name)
            el.clear()
            el.send_keys(value)

    def submit(self):
        """Clicks the form's button and waits until the answer's page has loaded."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(self.driver, 20).until(lambda _: gone(old))
        WebDriverWait(self.driver, 20).until(
            EC.presence_of_element_located((By.TAG_NAME, "h1")))

    def referrer(self):
        name = unique("br")
        st, user = GW.json("POST", "/api/register", {"username": name,
                                                     "email": name + "@example.com",
                                                     "password": PASSWORD})
        self.assertEqual(st, 201)
        code = user["referral_code"]
        self.assertTrue(wait_for(lambda: GW.request("GET", "/r/" + code)[0] == 302))
        return user

    def test_1_referral_signup_and_verification(self):
        d = self.driver
        code = self.referrer()["referral_code"]
        d.get(BASE + "/r/" + code)
        self.assertIn("/signup?ref=" + code, d.current_url)
        self.assertEqual(self.h1(), "Create your account")
        self.assertEqual(d.find_element(By.NAME, "referral_code").get_attribute("value"), code)
        self.shot("01-signup")
        name = unique("pb")
        self.fill(username=name, email=name + "@example.com", password="12345678")
        self.submit()
        self.assertIn("numeric", d.page_source)
        self.assertEqual(d.find_element(By.NAME, "username").get_attribute("value"), name)
        self.shot("02-signup-weak-password")
        self.fill(password=PASSWORD)
        self.submit()
        self.assertEqual(self.h1(), "Check your mail")
        self.shot("03-check-your-mail")

        token = wait_mail(MAIL, name + "@example.com", "verify-email")
        link = BASE + "/verify-email?token=" + token
        st, _, html = GW.request("GET", "/verify-email?token=" + token)  # a mail scanner
        self.assertEqual(st, 200)
        d.get(link)
        self.assertEqual(self.h1(), "Confirm your email")
        self.shot("04-verify-confirm")
        self.submit()
        self.assertEqual(self.h1(), "Email verified")
        self.shot("05-verified")
        st, tokens = GW.json("POST", "/api/login", {"username_or_email": name,
                                                   "password": PASSWORD})
        self.assertEqual(st, 200)
        self.assertTrue(tokens["user"]["email_verified"])
        self.assertEqual(tokens["user"]["referred_by"], code)
        d.get(link)  # the link again, now spent
        self.submit()
        self.assertEqual(self.h1(), "This link was already used")
        self.assertIn("nothing more to do", d.page_source)
        self.shot("06-verify-already-used")

    def test_2_forgot_and_reset_through_the_pages(self):
        d = self.driver
        name = unique("rs")
        email = name + "@example.com"
        st, _ = GW.json("POST", "/api/register", {"username": name, "email": email,
                                                  "password": PASSWORD})
        self.assertEqual(st, 201)
        st, _ = GW.json("POST", "/api/forgot-password", {"email": email})
        self.assertEqual(st, 202)
        token = wait_mail(MAIL, email, "reset-password")
        self.assertEqual(GW.request("GET", "/reset-password?token=" + token)[0], 200)  # scanner
        d.get(BASE + "/reset-password?token=" + token)
        self.assertEqual(self.h1(), "Choose a new password")
        self.shot("07-reset-form")
        self.fill(password="ocean marble 71 ferry", password2="ocean marble 71 berry")
        self.submit()
        self.assertIn("do not match", d.page_source)
        self.shot("08-reset-mismatch")
        new = "ocean marble 71 ferry"
        self.fill(password=new, password2=new)
        self.submit()
        self.assertEqual(self.h1(), "Password changed")
        self.assertIn("signed out", d.page_source)
        self.shot("09-reset-done")
        st, _ = GW.json("POST", "/api/login", {"username_or_email": email, "password": new})
        self.assertEqual(st, 200)
        st, _ = GW.json("POST", "/api/login", {"username_or_email": email, "password": PASSWORD})
        self.assertEqual(st, 401)

    def test_3_forms_without_csrf_or_from_elsewhere_are_refused(self):
        d = self.driver
        name = unique("cf")
        email = name + "@example.com"
        GW.json("POST", "/api/register", {"username": name, "email": email,
                                          "password": PASSWORD})
        token = wait_mail(MAIL, email, "verify-email")
        # Our own page with its CSRF field taken out.
        d.get(BASE + "/verify-email?token=" + token)
        d.execute_script("document.querySelector('input[name=csrf]').remove()")
        self.submit()
        self.assertEqual(self.h1(), "Request refused")
        self.shot("10-refused-no-csrf")
        # A page elsewhere that posts a valid-looking form to us: its Origin is not ours.
        _, _, html = GW.request("GET", "/verify-email?token=" + token)
        csrf = html.split('name="csrf" value="')[1].split('"')[0]
        evil = ("data:text/html,<form method=post action='%s/verify-email'>"
                "<input name=token value='%s'><input name=csrf value='%s'>"
                "<button type=submit>win a prize</button></form>" % (BASE, token, csrf))
        d.get(evil)
        self.submit()
        self.assertEqual(self.h1(), "Request refused")
        self.shot("11-refused-other-origin")
        st, tokens = GW.json("POST", "/api/login", {"username_or_email": name,
                                                   "password": PASSWORD})
        self.assertFalse(tokens["user"]["email_verified"])

    def test_5_an_expired_verify_link_says_expired_not_used(self):
        d = self.driver
        name = unique("ex")
        email = name + "@example.com"
        st, _ = GW.json("POST", "/api/register", {"username": name, "email": email,
                                                  "password": PASSWORD})
        self.assertEqual(st, 201)
        token = wait_mail(MAIL, email, "verify-email")
        d.get(BASE + "/verify-email?token=" + token)
        self.assertEqual(self.h1(), "Confirm your email")
        expire_token(ENV, token)  # the person comes back after the link's lifetime
        self.submit()
        self.assertEqual(self.h1(), "This link has expired")
        self.assertIn("ask for a new verification email", d.page_source)
        self.shot("19-verify-expired")

    def test_4_an_unknown_referral_code_gets_a_friendly_404(self):
        self.driver.get(BASE + "/r/ZZZZZZZZ")
        self.assertIn("does not work", self.h1())
        self.shot("12-unknown-code")

    def test_5_email_change_confirm_and_cancel_pages(self):
        d = self.driver
        name = unique("ec")
        old = name + "@example.com"
        st, _ = GW.json("POST", "/api/register", {"username": name, "email": old,
                                                  "password": PASSWORD})
        self.assertEqual(st, 201)
        st, tokens = GW.json("POST", "/api/login", {"username_or_email": old,
                                                   "password": PASSWORD})
        self.assertEqual(st, 200)
        new = "new." + old
        st, _ = GW.json("POST", "/api/email", {"password": PASSWORD, "new_email": new},
                        token=tokens["access"])
        self.assertEqual(st, 202)
        confirm = wait_mail(MAIL, new, "confirm-email")
        cancel = wait_mail(MAIL, old, "cancel-email-change")
        self.assertEqual(GW.request("GET", "/confirm-email?token=" + confirm)[0], 200)  # scanner
        d.get(BASE + "/confirm-email?token=" + confirm)
        self.assertEqual(self.h1(), "Confirm your new email")
        self.shot("13-email-confirm")
        self.submit()
        self.assertEqual(self.h1(), "Email address changed")
        self.assertIn(new, d.page_source)
        self.shot("14-email-changed")
        st, _ = GW.json("POST", "/api/login", {"username_or_email": new, "password": PASSWORD})
        self.assertEqual(st, 200)
        # The old address's cancel link comes too late now.
        d.get(BASE + "/cancel-email-change?token=" + cancel)
        self.assertEqual(self.h1(), "Cancel the email change")
        self.shot("15-email-cancel")
        self.submit()
        self.assertEqual(self.h1(), "The change was already confirmed")
        self.shot("16-email-cancel-too-late")
        # Another change, cancelled from the old (now: current) address before it is confirmed.
        other = "other." + old
        st, _ = GW.json("POST", "/api/email", {"password": PASSWORD, "new_email": other},
                        token=tokens["access"])
        self.assertEqual(st, 202)
        confirm = wait_mail(MAIL, other, "confirm-email")
        cancel = wait_mail(MAIL, new, "cancel-email-change")
        d.get(BASE + "/cancel-email-change?token=" + cancel)
        self.submit()
        self.assertEqual(self.h1(), "Email change cancelled")
        self.shot("17-email-change-cancelled")
        d.get(BASE + "/confirm-email?token=" + confirm)
        self.submit()
        self.assertEqual(self.h1(), "This change was cancelled")
        self.shot("18-email-confirm-after-cancel")
        st, _ = GW.json("POST", "/api/login", {"username_or_email": other, "password": PASSWORD})
        self.assertEqual(st, 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
