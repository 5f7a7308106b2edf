"""The inbox in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium) against
`triage serve` on a free loopback port: sign in, decide, see the result, sign out.

Screenshots of the inbox and the thread page go to reports/screenshots/ (or $TRIAGE_SCREENSHOTS).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from tests.integration.web.conftest import DUPLICATE_CHARGE, PASSWORDS
from tests.local_services import apt_install
from triage import TriageApp
from triage.settings import Settings
from triage.web.app import web_store_path
from triage.web.store import WebStore

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("TRIAGE_SCREENSHOTS", Path(__file__).resolve().parents[3] / "reports" / "screenshots"))


def ensure_chromium() -> None:
    """Install Debian's Chromium and its driver when they are missing (never a downloaded browser build)."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    try:
        apt_install("chromium", "chromium-driver", recommends=True)  # fonts come as recommendations
    except RuntimeError as exc:
        pytest.skip(str(exc))


def seed(settings: Settings) -> dict[str, str]:
    """Threads paused on approvals, by what the test does with them."""
    tickets = {
        "single": ("cus_mid_dup", "Charged twice", DUPLICATE_CHARGE),
        "edit": ("cus_large_dup", "Charged twice", DUPLICATE_CHARGE),
        "dual": ("cus_plan_team", "My data", "Please export all my personal data, GDPR request."),
        "reject": ("cus_plan_team", "Close it", "Please delete my account and all my data permanently."),
    }

    async def run() -> dict[str, str]:
        app = TriageApp(settings)
        try:
            threads = {}
            for name, (customer, subject, body) in tickets.items():
                result = await app.arun({"customer_id": customer, "subject": subject, "body": body})
                assert result.status == "awaiting_approval", (name, result.status_reason)
                threads[name] = result.thread_id
            return threads
        finally:
            await app.aclose()

    threads = asyncio.run(run())
    store = WebStore(web_store_path(settings))
    for approver, password in PASSWORDS.items():
        store.set_password(approver, password)
    return threads


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, dict[str, str]]]:
    """`triage serve --port 0` on a seeded home; yields its base URL and the seeded threads."""
    ensure_chromium()
    threads = seed(settings)
    env = {**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)}
    server = subprocess.Popen(
        [sys.executable, "-m", "triage", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "http://127.0.0.1:" in line, server.stderr.read() if server.stderr else line
        yield line.split()[3].removesuffix("/inbox"), threads
    finally:
        server.terminate()
        server.communicate(timeout=20)


def browser(width: int = 1280, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(5)
    return driver


def sign_in(driver: Any, base: str, approver: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/inbox/login")
    driver.find_element(By.ID, "approver").send_keys(approver)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[approver])
    driver.find_element(By.CSS_SELECTOR, "form[action='/inbox/login'] button").click()
    assert driver.find_element(By.ID, "signed-in-as").get_attribute("textContent") == approver


def sign_out(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "form.who button").click()
    assert driver.find_element(By.CSS_SELECTOR, "form[action='/inbox/login']")


def card(driver: Any, thread: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"li[data-thread='{thread}']")


def approve(driver: Any, base: str, thread: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/inbox")
    card(driver, thread).find_element(By.CSS_SELECTOR, "button.approve").click()


def status(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "thread-status").text)


def refusal(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "refusal").text)


def test_approvers_work_the_queue_in_a_browser(served: tuple[str, dict[str, str]], settings: Settings) -> None:
    from selenium.webdriver.common.by import By

    base, threads = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    first, second = browser(), browser()
    try:
        first.get(f"{base}/inbox")
        assert first.find_element(By.CSS_SELECTOR, "form[action='/inbox/login']")  # refused without a session
        sign_in(first, base, "alice")
        assert first.title.startswith("Inbox (4 pending, 0 overdue)")
        first.save_screenshot(str(SHOTS / "inbox.png"))
        sign_in(second, base, "bob")

        # Both have the single-tier refund open; alice approves, bob's click comes second and is refused.
        second.get(f"{base}/inbox")
        stale = card(second, threads["single"]).find_element(By.CSS_SELECTOR, "button.approve")
        approve(first, base, threads["single"])
        assert status(first) == "completed"
        assert "refund $240.00" in first.find_element(By.ID, "actions").text
        assert "reply sent" in first.find_element(By.ID, "decided").text
        first.save_screenshot(str(SHOTS / "thread.png"))
        stale.click()
        assert "not awaiting approval" in refusal(second) or "decided" in refusal(second)

        # Dual: alice approves, bob (another agent) cannot complete it, sam (a supervisor) does.
        approve(first, base, threads["dual"])
        assert status(first) == "awaiting approval"
        approve(second, base, threads["dual"])
        assert "a dual approval needs a supervisor" in refusal(second)

        # Reject with a reason.
        first.get(f"{base}/inbox")
        rejecting = card(first, threads["reject"])
        rejecting.find_element(By.TAG_NAME, "summary").click()
        rejecting.find_element(By.CSS_SELECTOR, "input[name='reason'][required]").send_keys("customer withdrew it")
        rejecting.find_element(By.CSS_SELECTOR, "button.reject").click()
        assert status(first) == "completed"
        assert "customer withdrew it" in first.find_element(By.ID, "audit").text

        sign_out(first)
        sign_in(first, base, "sam")
        approve(first, base, threads["dual"])
        assert status(first) == "completed"
        audit = first.find_element(By.ID, "audit").text
        assert "alice" in audit and "sam" in audit and "bob" in audit  # bob's refusal is on the record

        # Edit a $1,200 refund down to $450.50 (a single-tier amount: sam's edit is its approval).
        first.get(f"{base}/inbox")
        editing = card(first, threads["edit"])
        editing.find_elements(By.TAG_NAME, "summary")[1].click()
        amount = editing.find_element(By.CSS_SELECTOR, "input[name='amount']")
        amount.clear()
        amount.send_keys("450.50")
        editing.find_element(By.CSS_SELECTOR, "button[id^='edit-']").click()
        assert status(first) == "completed"
        assert "refund $450.50" in first.find_element(By.ID, "actions").text
        first.get(f"{base}/inbox")
        assert first.title.startswith("Inbox (0 pending")

        # Signed out, the inbox is refused and the old page's forms no longer work.
        second.get(f"{base}/inbox/threads/{threads['edit']}")
        sign_out(second)
        second.back()
        second.refresh()
        assert second.find_element(By.CSS_SELECTOR, "form[action='/inbox/login']")
        phone = browser(390, 844)
        try:
            sign_in(phone, base, "alice")
            phone.get(f"{base}/inbox/threads/{threads['dual']}")
            phone.save_screenshot(str(SHOTS / "thread-phone.png"))
        finally:
            phone.quit()
    finally:
        first.quit()
        second.quit()
    query = "SELECT amount_cents FROM refunds WHERE thread_id = ?"
    paid = {name: [r["amount_cents"] for r in rows(settings.helpdesk_path, query, (t,))] for name, t in threads.items()}
    assert paid == {"single": [24000], "edit": [45050], "dual": [], "reject": []}
