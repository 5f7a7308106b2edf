"""Deterministic demo data for the embedded helpdesk.

`seed` fills an empty helpdesk database with Northwind's plans, customers and their billing histories, and
the knowledge base. The same rows come out on every run: randomness comes from a fixed seed and every date is
derived from `SEED_EPOCH`, never from the wall clock.

A payment's status follows its succeeded refunds (``refunded`` when they add up to the amount,
``partially_refunded`` below it); a pending refund leaves the payment ``succeeded``.

The customers in `DEMO_CUSTOMERS` are a public contract, like a payment provider's test cards: their ids and
the history each exercises are stable, so tests, evals and the README can rely on them.
"""

from __future__ import annotations

import json
import random
from dataclasses import astuple, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from importlib import resources

import aiosqlite

from triage.taxonomy import Route

__all__ = ["DEMO_CUSTOMERS", "SEED_EPOCH", "SEED_VERSION", "DemoCustomer", "load_articles", "seed"]

SEED_VERSION: int = 1
"""Bumped whenever the seeded rows change, so a stale demo database can be recognised."""

SEED_EPOCH = datetime(2026, 9, 1, tzinfo=UTC)
"""The demo's 'now': every seeded date lies before it."""

_RANDOM_SEED = 20260901
_ORDINARY_CUSTOMERS = 60
_ORDINARY_NOTE = "Ordinary history."


@dataclass(frozen=True)
class DemoCustomer:
    """A documented scenario customer and the ticket it typically sends.

    Attributes:
        id: The customer id in the seeded database, e.g. ``cus_small_dup``.
        scenario: One line on what the customer's history exercises.
        route: The route a typical ticket from this customer takes.
        example_subject: Subject of an example ticket.
        example_body: Body of an example ticket.
    """

    id: str
    scenario: str
    route: Route
    example_subject: str
    example_body: str


DEMO_CUSTOMERS: tuple[DemoCustomer, ...] = (
    DemoCustomer(
        id="cus_small_dup",
        scenario="Starter plan; the August $19.00 invoice was charged twice, three minutes apart.",
        route="billing",
        example_subject="Charged twice this month",
        example_body=(
            "Hi, I was billed $19 twice for my Starter plan on my card ending 4242. Can you refund the extra one?"
        ),
    ),
    DemoCustomer(
        id="cus_mid_dup",
        scenario="Team plan; a $240.00 store order (2 docking hubs) was charged twice.",
        route="billing",
        example_subject="Double charge for my docking hub order",
        example_body=(
            "Hello, I ordered two ND-8 docking hubs on August 19 for $240 and my card ending 5556 shows "
            "two charges of $240.00. Please refund the duplicate."
        ),
    ),
    DemoCustomer(
        id="cus_large_dup",
        scenario="Business plan; a $1,200.00 store order (8 headsets) was charged twice.",
        route="billing",
        example_subject="Duplicate $1,200 charge on our headset order",
        example_body=(
            "Our finance team noticed that the order for 8 H2 headsets was charged twice, $1,200.00 each "
            "time, on the Amex ending 0005. We need the second charge reversed."
        ),
    ),
    DemoCustomer(
        id="cus_failed_pay",
        scenario="Team plan; every attempt to collect the August invoice failed, subscription past due.",
        route="billing",
        example_subject="Payment failed but my card is fine",
        example_body=(
            "I got an email that my payment failed and my workspace is past due. My card ending 1881 "
            "works everywhere else. What is going on and how do I pay?"
        ),
    ),
    DemoCustomer(
        id="cus_refunded",
        scenario="Returned a $150.00 headset; the refund succeeded on Aug 24 (payment status refunded).",
        route="billing",
        example_subject="Where is my refund?",
        example_body=(
            "I sent back my H2 headset and you said the $150 refund was issued, but I still don't see it "
            "on my card ending 4444. When will I get it?"
        ),
    ),
    DemoCustomer(
        id="cus_partial_refund",
        scenario="Bought 3 card readers for $177.00; one was refunded ($59.00), payment partially refunded.",
        route="billing",
        example_subject="Only part of my refund arrived",
        example_body=(
            "I returned two of the three CR-1 card readers I bought in July, but only $59 came back to my "
            "card. Where is the refund for the second reader?"
        ),
    ),
    DemoCustomer(
        id="cus_locked",
        scenario="Starter plan; account locked after 5 failed sign-in attempts.",
        route="account",
        example_subject="Locked out of my account",
        example_body=(
            "I forgot my password, tried a few times and now it says my account is temporarily locked. "
            "Can you send me a password reset link?"
        ),
    ),
    DemoCustomer(
        id="cus_suspended",
        scenario="Business plan, paid up; account suspended after unusual sign-ins, pending verification.",
        route="account",
        example_subject="Why is my account suspended?",
        example_body=(
            "When I sign in it says 'Account suspended'. We have paid every invoice. "
            "Please tell me what you need from me to reactivate it."
        ),
    ),
    DemoCustomer(
        id="cus_plan_team",
        scenario="Team plan for six months, all paid; wants to change plan.",
        route="account",
        example_subject="Upgrade from Team to Business",
        example_body=(
            "We need SSO now, so we'd like to move from the Team plan to Business. "
            "How does the upgrade work and what will we pay this month?"
        ),
    ),
    DemoCustomer(
        id="cus_enterprise",
        scenario="Enterprise plan paid by bank transfer, plus a $10,800.00 hardware order.",
        route="billing",
        example_subject="VAT invoices for Q3",
        example_body=(
            "Please send us the invoices for June to August with our VAT number DE123456789 on them. "
            "Our accounts payable team needs them for the quarter close."
        ),
    ),
    DemoCustomer(
        id="cus_new",
        scenario="Trialing the Team plan since Aug 25; no invoices or payments yet.",
        route="general",
        example_subject="What are your opening hours?",
        example_body=(
            "Hi, I'm trialling the Team plan. What are your support opening hours, "
            "and is there a phone number I can call?"
        ),
    ),
    DemoCustomer(
        id="cus_angry",
        scenario="Team plan, normal history except one duplicated $49.00 charge; repeat contact, threatens.",
        route="escalation",
        example_subject="THIRD time asking - refund the double charge or I call my lawyer",
        example_body=(
            "This is the third time I'm writing about being charged $49 twice in August and nobody has "
            "fixed it. If the money isn't back this week I'm filing a chargeback and my lawyer will be "
            "in touch."
        ),
    ),
    DemoCustomer(
        id="cus_sync_502",
        scenario="Team plan, ordinary paid history; sync fails with Error 502.",
        route="technical",
        example_subject="Sync stopped working, Error 502",
        example_body=(
            "Since this morning the desktop app says 'Sync paused' and the web app shows Error 502 "
            "Bad Gateway. My changes are not reaching my laptop. Is something down?"
        ),
    ),
    DemoCustomer(
        id="cus_dock_issue",
        scenario="Starter plan; bought one ND-8 docking hub on Aug 22 that the laptop does not detect.",
        route="technical",
        example_subject="New docking hub not detected",
        example_body=(
            "The ND-8 dock I received yesterday isn't detected by my laptop. The light is amber and "
            "none of the USB ports or the monitor work."
        ),
    ),
    DemoCustomer(
        id="cus_leaving",
        scenario="Starter plan canceled after July; wants a copy of their data and then account deletion.",
        route="account",
        example_subject="Export my data, then delete my account",
        example_body=(
            "I've cancelled my subscription. Please send me a full export of my data and then delete my "
            "account and everything in it."
        ),
    ),
)


def load_articles() -> list[dict[str, object]]:
    """Read the knowledge-base articles shipped with the package.

    Returns:
        The articles from ``kb_articles.json``, each with ``slug``, ``title``, ``category``, ``tags``,
        ``summary`` and ``steps``.

    Raises:
        ValueError: If the file is not a JSON list of objects.
    """
    text = resources.files("triage.helpdesk").joinpath("kb_articles.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("kb_articles.json must contain a JSON list of article objects")
    articles: list[dict[str, object]] = data
    return articles


async def seed(conn: aiosqlite.Connection, *, articles: list[dict[str, object]] | None = None) -> None:
    """Insert the demo data into an empty helpdesk database.

    Inserts plans, customers, subscriptions, invoices, payments, refunds and knowledge-base articles, rebuilds
    the full-text index and records `SEED_VERSION` in ``meta``. The caller owns the transaction: nothing is
    committed here.

    Args:
        conn: A connection to a database that already has ``schema.sql`` applied and no demo rows.
        articles: The knowledge-base articles (read with `load_articles` when not given).
    """
    ledger = _build_ledger()
    await conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [("seed_version", str(SEED_VERSION)), ("seed_epoch", _iso(SEED_EPOCH))],
    )
    await conn.executemany("INSERT INTO plans (id, name, monthly_price_cents, description) VALUES (?, ?, ?, ?)", _PLANS)
    await _insert_rows(conn, "customers", _Customer, [astuple(row) for row in ledger.customers])
    await _insert_rows(conn, "subscriptions", _Subscription, [astuple(row) for row in ledger.subscriptions])
    await _insert_rows(conn, "invoices", _Invoice, [astuple(row) for row in ledger.invoices])
    await _insert_rows(conn, "payments", _Payment, [astuple(row) for row in ledger.payments])
    await _insert_rows(conn, "refunds", _Refund, [astuple(row) for row in ledger.refunds])
    await conn.executemany(
        "INSERT INTO kb_articles (id, slug, title, category, tags, summary, steps) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                number,
                str(article["slug"]),
                str(article["title"]),
                str(article["category"]),
                str(article["tags"]),
                str(article["summary"]),
                json.dumps(article["steps"], ensure_ascii=False),
            )
            for number, article in enumerate(articles if articles is not None else load_articles(), start=1)
        ],
    )
    await conn.execute("INSERT INTO kb_fts(kb_fts) VALUES('rebuild')")


_PLANS: tuple[tuple[str, str, int, str], ...] = (
    ("free", "Free", 0, "Up to 2 members and 5 GB of storage; Notes, Tasks, Calendar, Files and Chat."),
    ("starter", "Starter", 1900, "Up to 5 members, 100 GB of storage, integrations and email support."),
    (
        "team",
        "Team",
        4900,
        "Up to 25 members, 1 TB of storage, shared workspaces, API and webhooks, chat support.",
    ),
    (
        "business",
        "Business",
        9900,
        "Up to 100 members, 5 TB of storage, SSO/SAML, audit log and phone support.",
    ),
    (
        "enterprise",
        "Enterprise",
        49900,
        "Unlimited members, custom storage, 24/7 support, a 99.9% SLA and a dedicated account manager.",
    ),
)
_PLAN_PRICE = {plan_id: price for plan_id, _, price, _ in _PLANS}
_PLAN_NAME = {plan_id: name for plan_id, name, _, _ in _PLANS}

_HARDWARE = {
    "dock": ("Northwind Dock ND-8", 12000),
    "headset": ("Northwind H2 wireless headset", 15000),
    "reader": ("Northwind CR-1 card reader", 5900),
}


@dataclass
class _Customer:
    id: str
    name: str
    email: str
    phone: str | None
    country: str
    status: str
    failed_login_attempts: int
    created_at: str
    notes: str


@dataclass
class _Subscription:
    id: str
    customer_id: str
    plan_id: str
    status: str
    started_at: str
    renews_at: str | None


@dataclass
class _Invoice:
    id: str
    customer_id: str
    subscription_id: str | None
    amount_cents: int
    currency: str
    status: str
    description: str
    issued_at: str


@dataclass
class _Payment:
    id: str
    customer_id: str
    invoice_id: str | None
    amount_cents: int
    currency: str
    status: str
    method: str
    card_last4: str | None
    failure_reason: str | None
    created_at: str


@dataclass
class _Refund:
    id: str
    payment_id: str
    customer_id: str
    amount_cents: int
    reason: str
    status: str
    created_at: str
    thread_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class _Method:
    kind: str
    last4: str | None = None


@dataclass
class _Ledger:
    """Accumulates rows in insertion order and hands out zero-padded ids."""

    customers: list[_Customer] = field(default_factory=list)
    subscriptions: list[_Subscription] = field(default_factory=list)
    invoices: list[_Invoice] = field(default_factory=list)
    payments: list[_Payment] = field(default_factory=list)
    refunds: list[_Refund] = field(default_factory=list)
    _counters: dict[str, int] = field(default_factory=dict)

    def next_id(self, prefix: str) -> str:
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}_{self._counters[prefix]:04d}"

    def customer(self, row: _Customer) -> _Customer:
        self.customers.append(row)
        return row

    def note(self, customer_id: str, text: str) -> None:
        """Record in the customer's notes what their history exercises."""
        customer = next(row for row in self.customers if row.id == customer_id)
        customer.notes = text if customer.notes == _ORDINARY_NOTE else f"{customer.notes} {text}"

    def monthly_billing(
        self,
        customer_id: str,
        plan_id: str,
        start: datetime,
        method: _Method,
        *,
        canceled_after: int | None = None,
    ) -> tuple[_Subscription, list[tuple[_Invoice, _Payment]]]:
        """Subscribe a customer and bill every monthly anniversary before the epoch, each paid at once.

        With ``canceled_after``, billing stops after that many invoices and the subscription is canceled.
        """
        subscription = _Subscription(self.next_id("sub"), customer_id, plan_id, "active", _iso(start), renews_at=None)
        self.subscriptions.append(subscription)
        billed: list[tuple[_Invoice, _Payment]] = []
        price = _PLAN_PRICE[plan_id]
        month = 0
        while price and _add_months(start, month) < SEED_EPOCH:
            if canceled_after is not None and month >= canceled_after:
                break
            period_start = _add_months(start, month)
            period_end = _add_months(start, month + 1)
            invoice = self.invoice(
                customer_id,
                price,
                f"Northwind {_PLAN_NAME[plan_id]} plan, monthly ({period_start:%Y-%m-%d} to {period_end:%Y-%m-%d})",
                period_start,
                subscription_id=subscription.id,
            )
            billed.append((invoice, self.pay(invoice, method, period_start + timedelta(minutes=2))))
            month += 1
        if canceled_after is not None:
            subscription.status = "canceled"
        elif price:
            subscription.renews_at = _iso(_add_months(start, month))
        return subscription, billed

    def invoice(
        self,
        customer_id: str,
        amount_cents: int,
        description: str,
        issued_at: datetime,
        *,
        subscription_id: str | None = None,
    ) -> _Invoice:
        row = _Invoice(
            self.next_id("in"),
            customer_id,
            subscription_id,
            amount_cents,
            "usd",
            "paid",
            description,
            _iso(issued_at),
        )
        self.invoices.append(row)
        return row

    def pay(
        self,
        invoice: _Invoice,
        method: _Method,
        at: datetime,
        *,
        failure_reason: str | None = None,
    ) -> _Payment:
        row = _Payment(
            self.next_id("pay"),
            invoice.customer_id,
            invoice.id,
            invoice.amount_cents,
            "usd",
            "failed" if failure_reason else "succeeded",
            method.kind,
            method.last4,
            failure_reason,
            _iso(at),
        )
        self.payments.append(row)
        return row

    def fail_collection(self, invoice: _Invoice, payment: _Payment, reasons: list[str]) -> list[_Payment]:
        """Turn a paid invoice into one whose every collection attempt failed, 3, 5 and 7 days apart."""
        invoice.status = "open"
        payment.status = "failed"
        payment.failure_reason = reasons[0]
        attempts = [payment]
        first = _parse(payment.created_at)
        for reason, days in zip(reasons[1:], (3, 8, 15), strict=False):
            retry_at = first + timedelta(days=days)
            if retry_at >= SEED_EPOCH:
                break
            method = _Method(payment.method, payment.card_last4)
            attempts.append(self.pay(invoice, method, retry_at, failure_reason=reason))
        return attempts

    def recover_after_failure(self, invoice: _Invoice, payment: _Payment, reason: str) -> _Payment:
        """Make the first attempt fail and a retry three days later succeed."""
        payment.status = "failed"
        payment.failure_reason = reason
        method = _Method(payment.method, payment.card_last4)
        return self.pay(invoice, method, _parse(payment.created_at) + timedelta(days=3))

    def duplicate(self, payment: _Payment, minutes_later: int) -> _Payment:
        """Charge the same invoice a second time, a few minutes after the first charge."""
        row = _Payment(
            self.next_id("pay"),
            payment.customer_id,
            payment.invoice_id,
            payment.amount_cents,
            payment.currency,
            "succeeded",
            payment.method,
            payment.card_last4,
            None,
            _iso(_parse(payment.created_at) + timedelta(minutes=minutes_later)),
        )
        self.payments.append(row)
        return row

    def hardware_order(
        self, customer_id: str, items: list[tuple[str, int]], at: datetime, method: _Method
    ) -> tuple[_Invoice, _Payment]:
        """Invoice and charge a store order of ``(product, quantity)`` items."""
        order_number = 10400 + self._counters.get("order", 0) + 1
        self._counters["order"] = self._counters.get("order", 0) + 1
        lines = ", ".join(f"{quantity} x {_HARDWARE[product][0]}" for product, quantity in items)
        amount = sum(_HARDWARE[product][1] * quantity for product, quantity in items)
        invoice = self.invoice(customer_id, amount, f"Northwind Store order NW-{order_number}: {lines}", at)
        return invoice, self.pay(invoice, method, at + timedelta(minutes=1))

    def refund(
        self, payment: _Payment, amount_cents: int, reason: str, at: datetime, *, status: str = "succeeded"
    ) -> _Refund:
        """Refund part or all of a payment and keep the payment's status consistent with its refunds."""
        already = sum(r.amount_cents for r in self.refunds if r.payment_id == payment.id and r.status != "failed")
        if payment.status == "failed" or already + amount_cents > payment.amount_cents:
            raise ValueError(f"cannot refund {amount_cents} of {payment.id}")
        row = _Refund(self.next_id("re"), payment.id, payment.customer_id, amount_cents, reason, status, _iso(at))
        self.refunds.append(row)
        refunded = sum(r.amount_cents for r in self.refunds if r.payment_id == payment.id and r.status == "succeeded")
        if refunded == payment.amount_cents:
            payment.status = "refunded"
        elif refunded:
            payment.status = "partially_refunded"
        return row


async def _insert_rows(conn: aiosqlite.Connection, table: str, row_type: type, rows: list[tuple[object, ...]]) -> None:
    columns = [column.name for column in fields(row_type)]
    placeholders = ", ".join("?" for _ in columns)
    await conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _add_months(moment: datetime, months: int) -> datetime:
    """Shift by whole months; demo start days are at most the 28th so no clamping is needed."""
    index = moment.month - 1 + months
    return moment.replace(year=moment.year + index // 12, month=index % 12 + 1)


def _build_ledger() -> _Ledger:
    ledger = _Ledger()
    _add_scenario_customers(ledger)
    _add_ordinary_customers(ledger, random.Random(_RANDOM_SEED))
    return ledger


def _scenario_customer(
    ledger: _Ledger,
    customer_id: str,
    *,
    name: str,
    email: str,
    phone: str | None,
    country: str,
    created_at: str,
    notes: str,
    status: str = "active",
    failed_login_attempts: int = 0,
) -> str:
    ledger.customer(
        _Customer(
            customer_id,
            name,
            email,
            phone,
            country,
            status,
            failed_login_attempts,
            _iso(_at(created_at)),
            notes,
        )
    )
    return customer_id


def _add_scenario_customers(ledger: _Ledger) -> None:
    """Hand-written histories for `DEMO_CUSTOMERS`; generated before the random ones so their ids stay put."""
    c = _scenario_customer(
        ledger,
        "cus_small_dup",
        name="Priya Raman",
        email="priya.raman@example.com",
        phone="+1-555-0142",
        country="US",
        created_at="2026-04-14T09:05:00",
        notes="Starter plan on card 4242; the 2026-08-14 invoice ($19.00) has two succeeded payments 3 minutes apart.",
    )
    _, billed = ledger.monthly_billing(c, "starter", _at("2026-04-14T09:12:00"), _Method("card", "4242"))
    ledger.duplicate(billed[-1][1], minutes_later=3)

    c = _scenario_customer(
        ledger,
        "cus_mid_dup",
        name="Tomás Álvarez",
        email="tomas.alvarez@example.org",
        phone=None,
        country="ES",
        created_at="2026-05-06T17:40:00",
        notes="Team plan; store order of 2 docking hubs ($240.00) on 2026-08-19 has two succeeded payments.",
    )
    card = _Method("card", "5556")
    ledger.monthly_billing(c, "team", _at("2026-05-06T17:48:00"), card)
    _, payment = ledger.hardware_order(c, [("dock", 2)], _at("2026-08-19T11:20:00"), card)
    ledger.duplicate(payment, minutes_later=4)

    c = _scenario_customer(
        ledger,
        "cus_large_dup",
        name="Grace Okafor",
        email="grace.okafor@example.com",
        phone="+44 20 7946 0318",
        country="GB",
        created_at="2026-03-22T08:30:00",
        notes="Business plan on Amex 0005; store order of 8 headsets ($1,200.00) on 2026-08-21 charged twice.",
    )
    amex = _Method("card", "0005")
    ledger.monthly_billing(c, "business", _at("2026-03-22T08:41:00"), amex)
    _, payment = ledger.hardware_order(c, [("headset", 8)], _at("2026-08-21T14:02:00"), amex)
    ledger.duplicate(payment, minutes_later=6)

    c = _scenario_customer(
        ledger,
        "cus_failed_pay",
        name="Lukas Brenner",
        email="lukas.brenner@example.org",
        phone="+49 30 23125 417",
        country="DE",
        created_at="2026-04-10T06:55:00",
        notes="Team plan on card 1881; all three attempts to collect the 2026-08-10 invoice failed, "
        "invoice open, subscription past_due.",
    )
    subscription, billed = ledger.monthly_billing(c, "team", _at("2026-04-10T07:03:00"), _Method("card", "1881"))
    invoice, payment = billed[-1]
    ledger.fail_collection(invoice, payment, ["insufficient_funds", "insufficient_funds", "card_declined"])
    subscription.status = "past_due"

    c = _scenario_customer(
        ledger,
        "cus_refunded",
        name="Hannah Kim",
        email="hannah.kim@example.com",
        phone="+1-555-0117",
        country="US",
        created_at="2026-05-02T19:10:00",
        notes="Starter plan on card 4444; returned a $150.00 headset, refund succeeded 2026-08-24 (payment refunded).",
    )
    card = _Method("card", "4444")
    ledger.monthly_billing(c, "starter", _at("2026-05-02T19:14:00"), card)
    _, payment = ledger.hardware_order(c, [("headset", 1)], _at("2026-07-30T10:05:00"), card)
    ledger.refund(payment, 15000, "hardware return RMA-20817 (H2 headset)", _at("2026-08-24T15:30:00"))

    c = _scenario_customer(
        ledger,
        "cus_partial_refund",
        name="Olivier Moreau",
        email="olivier.moreau@example.org",
        phone="+33 1 99 00 27 64",
        country="FR",
        created_at="2026-04-20T12:00:00",
        notes="Starter plan on card 8210; bought 3 card readers ($177.00), one return refunded ($59.00), "
        "payment partially_refunded; says he returned two.",
    )
    card = _Method("card", "8210")
    ledger.monthly_billing(c, "starter", _at("2026-04-20T12:06:00"), card)
    _, payment = ledger.hardware_order(c, [("reader", 3)], _at("2026-07-09T16:45:00"), card)
    ledger.refund(payment, 5900, "hardware return RMA-20764 (1 of 3 CR-1 card readers)", _at("2026-08-12T09:20:00"))

    c = _scenario_customer(
        ledger,
        "cus_locked",
        name="Ben Carter",
        email="ben.carter@example.com",
        phone="+1-555-0163",
        country="US",
        created_at="2026-05-27T21:15:00",
        notes="Starter plan, paid up; status locked after 5 failed sign-in attempts.",
        status="locked",
        failed_login_attempts=5,
    )
    ledger.monthly_billing(c, "starter", _at("2026-05-27T21:20:00"), _Method("card", "3220"))

    c = _scenario_customer(
        ledger,
        "cus_suspended",
        name="Aisha Rahman",
        email="aisha.rahman@example.org",
        phone="+44 20 7946 0552",
        country="GB",
        created_at="2026-04-03T10:00:00",
        notes="Business plan paid by PayPal, no billing problems; suspended after sign-ins from unusual "
        "locations, pending identity verification.",
        status="suspended",
    )
    ledger.monthly_billing(c, "business", _at("2026-04-03T10:09:00"), _Method("paypal"))

    c = _scenario_customer(
        ledger,
        "cus_plan_team",
        name="Jonas Berg",
        email="jonas.berg@example.com",
        phone=None,
        country="NL",
        created_at="2026-03-15T13:25:00",
        notes="Team plan for six months, all paid on card 1117; wants to move to Business.",
    )
    ledger.monthly_billing(c, "team", _at("2026-03-15T13:30:00"), _Method("card", "1117"))

    c = _scenario_customer(
        ledger,
        "cus_enterprise",
        name="Ingrid Vogel",
        email="ingrid.vogel@example.org",
        phone="+49 30 23125 090",
        country="DE",
        created_at="2026-03-05T08:00:00",
        notes="Enterprise plan ($499.00/month) paid by bank transfer, plus a $10,800.00 hardware order on 2026-06-11.",
    )
    transfer = _Method("bank_transfer")
    ledger.monthly_billing(c, "enterprise", _at("2026-03-05T08:00:00"), transfer)
    ledger.hardware_order(c, [("headset", 40), ("dock", 40)], _at("2026-06-11T09:30:00"), transfer)

    c = _scenario_customer(
        ledger,
        "cus_new",
        name="Sofia Marin",
        email="sofia.marin@example.com",
        phone="+1-555-0188",
        country="CA",
        created_at="2026-08-25T16:38:00",
        notes="Trialing the Team plan since 2026-08-25; no invoices or payments yet.",
    )
    ledger.subscriptions.append(
        _Subscription(ledger.next_id("sub"), c, "team", "trialing", "2026-08-25T16:40:00Z", "2026-09-08T16:40:00Z")
    )

    c = _scenario_customer(
        ledger,
        "cus_angry",
        name="Derek Holloway",
        email="derek.holloway@example.com",
        phone="+1-555-0129",
        country="US",
        created_at="2026-03-09T15:45:00",
        notes="Team plan on card 9424, normal history except the 2026-08-09 invoice ($49.00) charged twice; "
        "has written about it before and is angry.",
    )
    _, billed = ledger.monthly_billing(c, "team", _at("2026-03-09T15:50:00"), _Method("card", "9424"))
    ledger.duplicate(billed[-1][1], minutes_later=2)

    c = _scenario_customer(
        ledger,
        "cus_sync_502",
        name="Mei Chen",
        email="mei.chen@example.org",
        phone="+61 2 5550 1283",
        country="AU",
        created_at="2026-06-02T01:10:00",
        notes="Team plan paid by PayPal, ordinary history; reports sync failing with Error 502.",
    )
    ledger.monthly_billing(c, "team", _at("2026-06-02T01:15:00"), _Method("paypal"))

    c = _scenario_customer(
        ledger,
        "cus_dock_issue",
        name="Rafael Souza",
        email="rafael.souza@example.com",
        phone="+1-555-0151",
        country="US",
        created_at="2026-05-18T18:00:00",
        notes="Starter plan on card 0341; bought one ND-8 docking hub ($120.00) on 2026-08-22, not detected.",
    )
    card = _Method("card", "0341")
    ledger.monthly_billing(c, "starter", _at("2026-05-18T18:04:00"), card)
    ledger.hardware_order(c, [("dock", 1)], _at("2026-08-22T20:12:00"), card)

    c = _scenario_customer(
        ledger,
        "cus_leaving",
        name="Eleanor Walsh",
        email="eleanor.walsh@example.org",
        phone=None,
        country="IE",
        created_at="2026-03-28T11:00:00",
        notes="Starter plan by SEPA debit, canceled after the July invoice; wants a data export, then deletion.",
    )
    ledger.monthly_billing(c, "starter", _at("2026-03-28T11:02:00"), _Method("sepa_debit"), canceled_after=5)


_FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Ethan", "Chloe", "Lucas", "Isabel", "Mateo",
    "Zoe", "Samuel", "Amara", "Daniel", "Leah", "Marcus", "Freya", "Kenji", "Nadia", "Oscar",
    "Ruth", "Arjun", "Clara", "Felix", "Ines", "Hugo", "Lena", "Tariq", "Maren", "Diego",
    "Yuki", "Elena", "Kwame", "Sara", "Patrick", "Fatima", "Julia", "Victor", "Anika", "Callum",
)  # fmt: skip
_LAST_NAMES = (
    "Anderson", "Baker", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hughes", "Ivanova", "Jensen",
    "Kowalski", "Lambert", "Mensah", "Nakamura", "O'Brien", "Patel", "Quinn", "Rossi", "Schmidt", "Thompson",
    "Usman", "Vasquez", "Weber", "Young", "Zimmermann", "Bianchi", "Costa", "Dalton", "Ferreira", "Gallagher",
    "Haddad", "Kaur", "Lindgren", "Murphy", "Novak", "Osei", "Petrova", "Reyes", "Sato", "Walker",
)  # fmt: skip
_COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "IE")
_COUNTRY_WEIGHTS = (38, 15, 10, 8, 8, 6, 6, 5, 4)
_PLAN_CHOICES = ("free", "starter", "team", "business", "enterprise")
_PLAN_WEIGHTS = (14, 34, 27, 18, 7)
_CARD_LAST4 = ("4242", "4444", "1881", "5556", "0005", "8210", "3220", "1117", "0341", "9424", "6789", "2719")
_SEPA_COUNTRIES = frozenset({"DE", "FR", "NL", "ES", "IE"})
_DECLINE_REASONS = ("card_declined", "insufficient_funds", "expired_card", "processing_error")


def _phone(rng: random.Random, country: str) -> str | None:
    """A number from ranges reserved for fiction where one exists; None for one customer in five."""
    if rng.random() < 0.2:
        return None
    number = rng.randrange(1000)
    formats = {
        "US": f"+1-555-01{number % 100:02d}",
        "CA": f"+1-555-01{number % 100:02d}",
        "GB": f"+44 20 7946 0{number:03d}",
        "DE": f"+49 30 23125 {number:03d}",
        "FR": f"+33 1 99 00 {number // 10 % 100:02d} {number % 100:02d}",
        "AU": f"+61 2 5550 {number:04d}",
    }
    return formats.get(country)


def _payment_method(rng: random.Random, country: str) -> _Method:
    roll = rng.random()
    if country in _SEPA_COUNTRIES and roll < 0.3:
        return _Method("sepa_debit")
    if roll > 0.85:
        return _Method("paypal")
    return _Method("card", rng.choice(_CARD_LAST4))


def _add_ordinary_customers(ledger: _Ledger, rng: random.Random) -> None:
    """Random but seeded customers, with a fixed share of them given billing incidents."""
    used_emails = {customer.email for customer in ledger.customers}
    profiles: list[tuple[str, str, _Method, list[tuple[_Invoice, _Payment]], _Subscription]] = []
    closed = set(rng.sample(range(1, _ORDINARY_CUSTOMERS + 1), 4))
    for number in range(1, _ORDINARY_CUSTOMERS + 1):
        customer_id = f"cus_{number:04d}"
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        local = f"{first}.{last}".lower().replace("'", "")
        domain = rng.choice(("example.com", "example.org"))
        email, suffix = f"{local}@{domain}", 2
        while email in used_emails:
            email, suffix = f"{local}{suffix}@{domain}", suffix + 1
        used_emails.add(email)
        country = rng.choices(_COUNTRIES, _COUNTRY_WEIGHTS)[0]
        plan_id = rng.choices(_PLAN_CHOICES, _PLAN_WEIGHTS)[0]
        start = _add_months(SEED_EPOCH, -rng.randint(3, 6)) + timedelta(
            days=rng.randrange(27), hours=rng.randrange(24), minutes=rng.randrange(60)
        )
        created = start - timedelta(days=rng.randrange(0, 21), minutes=rng.randrange(5, 50))
        ledger.customer(
            _Customer(
                customer_id,
                f"{first} {last}",
                email,
                _phone(rng, country),
                country,
                "closed" if number in closed else "active",
                rng.choice((0, 0, 0, 0, 1, 2)),
                _iso(created),
                "Canceled the subscription and closed the account." if number in closed else _ORDINARY_NOTE,
            )
        )
        method = _payment_method(rng, country)
        canceled_after = rng.randint(2, 3) if number in closed else None
        subscription, billed = ledger.monthly_billing(
            customer_id, plan_id, start, method, canceled_after=canceled_after
        )
        if billed and number not in closed:
            profiles.append((customer_id, plan_id, method, billed, subscription))

    incidents = (
        ["duplicate"] * 3
        + ["duplicate_refunded"] * 3
        + ["failed_then_paid"] * 6
        + ["past_due"] * 3
        + ["full_refund"] * 3
        + ["partial_refund"] * 3
    )
    chosen = rng.sample(profiles, len(incidents))
    for incident, (customer_id, _, _, billed, subscription) in zip(incidents, chosen, strict=True):
        invoice, payment = rng.choice(billed[:-1] or billed)
        if incident == "duplicate":
            second = ledger.duplicate(payment, minutes_later=rng.randint(2, 9))
            ledger.note(customer_id, f"Duplicate charge: {payment.id} and {second.id} both paid {invoice.id}.")
        elif incident == "duplicate_refunded":
            second = ledger.duplicate(payment, minutes_later=rng.randint(2, 9))
            refund = ledger.refund(
                second,
                second.amount_cents,
                "duplicate charge",
                _parse(second.created_at) + timedelta(days=rng.randint(1, 4)),
            )
            ledger.note(customer_id, f"Duplicate charge on {invoice.id}, already refunded ({refund.id}).")
        elif incident == "failed_then_paid":
            retry = ledger.recover_after_failure(invoice, payment, rng.choice(_DECLINE_REASONS))
            ledger.note(customer_id, f"Failed payment {payment.id} on {invoice.id}, paid by retry {retry.id}.")
        elif incident == "past_due":
            latest_invoice, latest_payment = billed[-1]
            ledger.fail_collection(latest_invoice, latest_payment, rng.sample(_DECLINE_REASONS, 3))
            subscription.status = "past_due"
            ledger.note(customer_id, f"Latest invoice {latest_invoice.id} unpaid after failed payments; past_due.")
        elif incident == "full_refund":
            refund = ledger.refund(
                payment,
                payment.amount_cents,
                "refund requested within 30 days",
                _parse(payment.created_at) + timedelta(days=rng.randint(2, 20)),
            )
            ledger.note(customer_id, f"Full refund {refund.id} of {payment.id}.")
        else:
            amount = payment.amount_cents * rng.choice((20, 25, 50)) // 100
            refund = ledger.refund(
                payment,
                amount,
                "goodwill credit after a service disruption",
                _parse(payment.created_at) + timedelta(days=rng.randint(2, 20)),
            )
            ledger.note(customer_id, f"Partial refund {refund.id} ({amount} cents) of {payment.id}.")

    _add_store_orders(ledger, rng, profiles)


def _add_store_orders(
    ledger: _Ledger,
    rng: random.Random,
    profiles: list[tuple[str, str, _Method, list[tuple[_Invoice, _Payment]], _Subscription]],
) -> None:
    """Hardware orders for about a quarter of paying customers, some returned for a refund."""
    buyers = [profile for profile in profiles if rng.random() < 0.25]
    returned = set(rng.sample(range(len(buyers)), min(4, len(buyers))))
    for index, (customer_id, plan_id, method, billed, _) in enumerate(buyers):
        large = plan_id in ("business", "enterprise")
        product = rng.choice(tuple(_HARDWARE))
        quantity = rng.randint(5, 10) if large else rng.randint(1, 3)
        first_billed = _parse(billed[0][0].issued_at)
        at = first_billed + timedelta(days=rng.randint(3, 50), hours=rng.randint(0, 10))
        if at >= SEED_EPOCH:
            at = SEED_EPOCH - timedelta(days=rng.randint(2, 6), hours=rng.randint(1, 8))
        invoice, payment = ledger.hardware_order(customer_id, [(product, quantity)], at, method)
        ledger.note(customer_id, f"Store order {invoice.id} ({quantity} x {product}).")
        if index in returned:
            unit = _HARDWARE[product][1]
            refunded_units = quantity if index % 2 else max(1, quantity // 2)
            # The first return is still in flight, so one refund is pending at the epoch.
            in_flight = index == min(returned)
            refund_at = at + timedelta(days=rng.randint(8, 20))
            if refund_at >= SEED_EPOCH:
                refund_at = at + (SEED_EPOCH - at) / 2
            if in_flight:
                refund_at = max(at + (SEED_EPOCH - at) / 2, SEED_EPOCH - timedelta(days=1))
            refund = ledger.refund(
                payment,
                unit * refunded_units,
                f"hardware return RMA-{21000 + index} ({refunded_units} x {_HARDWARE[product][0]})",
                refund_at,
                status="pending" if in_flight else "succeeded",
            )
            ledger.note(customer_id, f"Return refunded by {refund.id} ({refund.status}).")
