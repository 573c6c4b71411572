"""The support console in a real browser (Debian's chromium through chromedriver, Selenium),
against a real processor, gateway, Kafka and Redis: as an agent would use it.

One browser session for the whole story (it is the slow part): sign in; look up a user who
started three sessions through the API (one on a device named `<img src=x onerror=alert(1)>`)
and see them, the hostile name as text; a fourth start denied, its reason and advice shown;
terminate one from the page (keyboard only), see it gone and the verdict, with issuedBy, on
the ledger; the chart's numbers equal the ledger's; a player's token refused; the page at
375 px wide without sideways scrolling; on a gateway whose Redis is away, the sessions said
to be stale. Throughout: no dialog opened, nothing in the browser's
console (a script refused by the CSP would be logged there), the token in no URL.

Selenium blocks, and the gateway and processor run on this test's event loop: every browser
step runs in a thread (asyncio.to_thread) while the loop serves.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import httpx
import jwt
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from compose.chromium import ensure_chromium
from tests.gateway_harness import GATEWAY_TEST_SECRET, bearer, running_gateway
from tests.harness import wait_until

HOSTILE = "<img src=x onerror=alert(1)>"
AGENT = "agent-7"
WAIT_S = 30
# Where the screenshots go (docs/console.md's come from a run with CONSOLE_SCREENSHOTS=docs).
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


def support_token() -> str:
    now = int(time.time())
    claims = {"sub": AGENT, "role": "support", "iat": now, "exp": now + 900}
    return jwt.encode(claims, GATEWAY_TEST_SECRET, algorithm="HS256")


def new_browser() -> webdriver.Chrome:
    browser, driver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


class Page:
    """The console page in the browser, with the waits an agent's eyes do."""

    def __init__(self, driver: webdriver.Chrome, url: str, shots: Path) -> None:
        self.d = driver
        self.url = url
        self.shots = shots
        self.console: list[dict] = []  # everything the browser logged

    def wait(self, condition, what: str, timeout: float = WAIT_S):
        return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(lambda _d: condition(), message=what)

    def text(self, element_id: str) -> str:
        return self.d.find_element(By.ID, element_id).text

    def check_quiet(self) -> None:
        """No dialog is open and no warning or error was logged to the console (a script the
        CSP refused, a failed load, an exception)."""
        with pytest.raises(NoAlertPresentException):
            self.d.switch_to.alert.text  # noqa: B018 - raises when no dialog is open
        self.console += [e for e in self.d.get_log("browser") if e["level"] in ("WARNING", "SEVERE")]
        assert self.console == [], self.console

    def shot(self, name: str) -> None:
        self.d.save_screenshot(str(self.shots / f"{name}.png"))

    def sign_in(self, token: str) -> None:
        self.d.get(self.url + "/console")
        field = self.wait(lambda: self.d.find_element(By.ID, "token"), "the sign-in form")
        assert not self.d.find_element(By.ID, "main").is_displayed()  # nothing before signing in
        field.send_keys(token + Keys.ENTER)  # the keyboard submits the form

    def texts(self, selector: str) -> list[str]:
        """The shown text of every element `selector` finds, read at once (the page refreshes)."""
        script = "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim())"
        return self.d.execute_script(script, selector)

    def sessions(self) -> list[list[str]]:
        rows = self.d.execute_script(
            "return [...document.querySelectorAll('#sessions tbody tr[data-session]')]"
            ".map(r => [...r.cells].map(c => c.innerText.trim()))"
        )
        return rows

    def look_up(self, user: str) -> None:
        field = self.d.find_element(By.ID, "user-id")
        field.clear()
        field.send_keys(user + Keys.ENTER)

    def terminate_with_keyboard(self, session: str) -> None:
        button = self.d.find_element(By.CSS_SELECTOR, f'#sessions tr[data-session="{session}"] button')
        button.send_keys(Keys.ENTER)
        self.wait(
            lambda: self.d.find_element(By.ID, "confirm").get_attribute("open") is not None, "the dialog"
        )
        assert self.d.switch_to.active_element == self.d.find_element(By.ID, "confirm-cancel")
        self.shot("console-confirm")
        self.d.switch_to.active_element.send_keys(Keys.TAB)  # Cancel -> Terminate
        self.d.switch_to.active_element.send_keys(Keys.ENTER)


def ledger_figures(verdicts: list[dict]) -> tuple[int, dict[str | None, int], int]:
    """(active streams, active by device class, denies) counted from the verdicts as a ledger
    consumer would: a lease begins with allow/started and ends with stopped, evicted,
    terminated or expired; the class is its start's."""
    active: dict[tuple[str, str], str | None] = {}
    for v in verdicts:
        key = (v["userId"], v["sessionId"])
        if (v["decision"], v["reason"]) == ("allow", "started"):
            active[key] = v.get("deviceClass")
        elif v["reason"] in ("stopped", "evicted", "terminated", "expired"):
            active.pop(key, None)
    by_class: dict[str | None, int] = {}
    for device_class in active.values():
        by_class[device_class] = by_class.get(device_class, 0) + 1
    return len(active), by_class, sum(1 for v in verdicts if v["decision"] == "deny")


async def test_an_agent_finds_why_a_start_was_denied_and_ends_a_session_in_a_real_browser(flow, tmp_path):
    user = f"u-console-{os.urandom(3).hex()}"
    shots = Path(SHOTS) if SHOTS else tmp_path
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as api:
        console = gw.app.state.console
        await wait_until(lambda: console.ledger_stale() is None, 60, what="the console's ledger live")
        player = bearer(user)
        devices = [("tv", HOSTILE, "tv", "Big Buck Bunny"), ("phone", "phone-1", "mobile", None)]
        devices.append(("laptop", "laptop-work", "web", "news-live"))
        for sid, device, device_class, content in devices:
            body = {"sessionId": sid, "deviceId": device, "deviceClass": device_class, "contentId": content}
            assert (await api.post("/v1/sessions", json=body, headers=player)).status_code == 200
        fourth = await api.post(
            "/v1/sessions", json={"sessionId": "tablet", "deviceId": "tablet"}, headers=player
        )
        assert fourth.status_code == 409 and fourth.json()["reason"] == "limit_exceeded"

        driver = await asyncio.to_thread(new_browser)
        page = Page(driver, gw.url, shots)
        try:
            await asyncio.to_thread(see_the_account_and_why_it_was_denied, page, user)
            await asyncio.to_thread(page.terminate_with_keyboard, "tv")
            await asyncio.to_thread(see_it_gone, page)
            ended = [v for v in flow.verdicts() if v.get("issuedBy")]
            assert [(v["decision"], v["reason"], v["sessionId"], v["issuedBy"]) for v in ended] == [
                ("allow", "terminated", "support-console", f"support:{AGENT}"),
                ("revoke", "terminated", "tv", f"support:{AGENT}"),
            ]
            await asyncio.to_thread(see_the_chart_match_the_ledger, page, flow)
            await asyncio.to_thread(see_it_at_phone_width, page)
            await asyncio.to_thread(see_the_token_in_no_url, page)
            await asyncio.to_thread(see_a_player_token_refused, page, player["Authorization"][7:])
            with socket.socket() as sock:  # a port nothing listens on: Redis is away
                sock.bind(("127.0.0.1", 0))
                dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
            async with running_gateway(flow, redis_url=dead) as blind:
                page.url = blind.url
                await asyncio.to_thread(see_sessions_stale_without_redis, page, user)
        finally:
            await asyncio.to_thread(driver.quit)


def see_the_account_and_why_it_was_denied(page: Page, user: str) -> None:
    page.sign_in(support_token())
    page.wait(lambda: page.text("principal") == f"support:{AGENT}", "signed in")
    page.look_up(user)
    page.wait(lambda: len(page.sessions()) == 3, "three sessions shown")
    rows = page.sessions()
    assert [r[:4] for r in rows] == [
        ["tv", HOSTILE, "tv", "Big Buck Bunny"],
        ["phone", "phone-1", "mobile", "—"],
        ["laptop", "laptop-work", "web", "news-live"],
    ]
    assert page.d.find_elements(By.CSS_SELECTOR, "#sessions img, #decisions img") == []  # text, not markup
    assert all(r[5].endswith(" s") for r in rows)  # the lease counts down
    page.wait(lambda: "limit_exceeded" in page.text("decisions"), "the deny in the recent decisions")
    [deny] = page.texts('#decisions li[data-reason="limit_exceeded"]')
    assert "start → deny (limit_exceeded)" in deny and "3/3 streams" in deny
    assert "Held by:" in deny and HOSTILE in deny and "phone-1" in deny
    assert "A slot frees at" in deny
    policy = dict(zip(page.texts("#account-policy dt"), page.texts("#account-policy dd"), strict=True))
    assert (policy["Policy"], policy["Limit"], policy["Overflow"]) == ("settings", "3", "reject")
    page.wait(lambda: "Live:" in page.text("live-status"), "the live picture")
    page.shot("console-account")
    page.check_quiet()


def see_it_gone(page: Page) -> None:
    page.wait(lambda: [r[0] for r in page.sessions()] == ["phone", "laptop"], "the terminated session gone")
    assert "tv: terminated (issued by support:agent-7)" in page.text("terminate-result")
    page.wait(lambda: "issued by support:agent-7" in page.text("decisions"), "the terminate on the ledger")
    page.check_quiet()


def see_the_chart_match_the_ledger(page: Page, flow) -> None:
    def matches() -> bool:
        active, by_class, denies = ledger_figures(flow.verdicts())
        legend = {}
        for item in page.texts("#live-classes li[data-class]"):
            name, _, count = item.rpartition(": ")
            legend[name] = count
        shown = (page.text("live-active"), page.text("live-denies-hour"))
        wanted = {("no class" if c is None else c): str(n) for c, n in by_class.items()}
        classes = all(legend.get(c) == wanted.get(c, "0") for c in {*legend, *wanted})
        return shown == (str(active), str(denies)) and classes

    page.wait(matches, "the chart's numbers equal the ledger's")
    active, by_class, denies = ledger_figures(flow.verdicts())
    assert (active, by_class, denies) == (2, {"mobile": 1, "web": 1}, 1)
    lines = page.d.execute_script("return document.querySelectorAll('#chart-active polyline').length")
    assert lines == 1 + len(page.texts("#live-classes li[data-class]"))  # all, then one per class
    page.shot("console-live")
    page.check_quiet()


def see_it_at_phone_width(page: Page) -> None:
    page.d.set_window_size(375, 800)
    page.wait(lambda: page.d.execute_script("return window.innerWidth") <= 375, "a phone-sized viewport")
    page.shot("console-phone")
    width = page.d.execute_script("return document.documentElement.scrollWidth")
    wide = page.d.execute_script(
        "return [...document.querySelectorAll('body *')].filter(e => !e.closest('.scroll'))"
        ".filter(e => e.getBoundingClientRect().right > 376)"
        ".slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"
    )
    assert width <= 375, f"the page scrolls sideways at 375 px ({width} px wide): {wide}"
    button = page.d.find_element(By.CSS_SELECTOR, "#sessions tr[data-session] button")
    page.d.execute_script("arguments[0].scrollIntoView()", button)
    assert button.is_displayed()
    page.shot("console-phone")
    page.d.set_window_size(1280, 1000)
    page.check_quiet()


def see_the_token_in_no_url(page: Page) -> None:
    token = page.d.execute_script("return sessionStorage.getItem('console.token')")
    assert token
    urls = page.d.execute_script("return [location.href, ...performance.getEntries().map(e => e.name)]")
    assert any("/console/api/" in u for u in urls)
    assert not [u for u in urls if token in u or token[-20:] in u]
    assert page.d.get_cookies() == []


def see_a_player_token_refused(page: Page, player_token: str) -> None:
    page.d.find_element(By.ID, "sign-out").send_keys(Keys.ENTER)
    page.wait(lambda: page.d.find_element(By.ID, "token").is_displayed(), "signed out")
    page.check_quiet()
    page.sign_in(player_token)
    page.wait(lambda: "role claim is 'support'" in page.text("sign-in-error"), "the player's token refused")
    assert not page.d.find_element(By.ID, "main").is_displayed()
    # The 403 itself is the one line the browser logs (a refused fetch); nothing else.
    logged = page.d.get_log("browser")
    assert [e["level"] for e in logged] == ["SEVERE"] and "403" in logged[0]["message"], logged


def see_sessions_stale_without_redis(page: Page, user: str) -> None:
    """A gateway whose Redis is away: the page says the sessions are stale, shows none as live."""
    page.sign_in(support_token())
    page.wait(lambda: page.text("principal") == f"support:{AGENT}", "signed in")
    page.look_up(user)
    page.wait(lambda: "STALE" in page.text("account-status"), "the sessions shown as stale")
    assert "sessions: cannot read the sessions from Redis" in page.text("account-status")
    assert page.sessions() == []  # nothing old shown as live (a fresh page had none to keep)
    assert "stale" in page.d.find_element(By.ID, "sessions").get_attribute("class")
    page.shot("console-stale")
    page.check_quiet()
