"""Web fixtures: the web app over a real app home, driven through httpx's ASGI transport."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from triage import TriageApp
from triage.settings import Settings
from triage.web import WebSettings, create_app
from triage.web.app import web_store_path
from triage.web.store import WebStore

INTAKE_TOKEN = "intake-token-for-tests-0123456789"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "sam": "sam-password-333"}
DUPLICATE_CHARGE = "You charged me twice for the same order."


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


class Web:
    """The web app on one home, with helpers to sign people in."""

    def __init__(self, triage: TriageApp, web_settings: WebSettings, address: str = "127.0.0.1") -> None:
        self.triage = triage
        self.api = create_app(web_settings=web_settings, triage=triage)
        self.store = WebStore(web_store_path(triage.settings))
        self.address = address
        for approver, password in PASSWORDS.items():
            self.store.set_password(approver, password)

    def client(self, address: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.api, client=(address or self.address, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)

    async def signed_in(self, approver: str, password: str | None = None) -> httpx.AsyncClient:
        client = self.client()
        form = await client.get("/inbox/login")
        done = await client.post(
            "/inbox/login",
            data={"approver": approver, "password": password or PASSWORDS[approver], "csrf": csrf_of(form.text)},
        )
        assert done.status_code == 303, done.text
        return client

    async def pause(self, customer_id: str) -> str:
        """Run a duplicate-charge ticket that pauses on a refund approval; its thread id."""
        result = await self.triage.arun(
            {"customer_id": customer_id, "subject": "Charged twice", "body": DUPLICATE_CHARGE}
        )
        assert result.status == "awaiting_approval", result
        return result.thread_id


@pytest.fixture
def web_settings() -> WebSettings:
    return WebSettings(intake_token=INTAKE_TOKEN, intake_max_bytes=64 * 1024, trusted_proxies={"10.9.8.7"})


@pytest.fixture
async def web(settings: Settings, web_settings: WebSettings) -> AsyncIterator[Web]:
    triage = TriageApp(settings)
    yield Web(triage, web_settings)
    await triage.aclose()


@pytest.fixture
def make_web(web_settings: WebSettings) -> Callable[[Settings], Web]:
    """A web app on other settings (e.g. another policy folder); the app is closed by the caller."""

    def make(settings: Settings) -> Web:
        return Web(TriageApp(settings), web_settings)

    return make
