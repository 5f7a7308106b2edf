import importlib.resources
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from triage.helpdesk.seed import DEMO_CUSTOMERS, SEED_EPOCH, SEED_VERSION, load_articles, seed
from triage.taxonomy import ROUTES

TABLES = ("meta", "plans", "customers", "subscriptions", "invoices", "payments", "refunds", "kb_articles")
KB_SEARCH = (
    "SELECT slug FROM kb_fts JOIN kb_articles ON kb_articles.id = kb_fts.rowid "
    "WHERE kb_fts MATCH ? ORDER BY bm25(kb_fts)"
)


async def _seeded(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path)
    schema = importlib.resources.files("triage.helpdesk").joinpath("schema.sql").read_text()
    await conn.executescript(schema)
    await seed(conn)
    await conn.commit()
    return conn


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await _seeded(tmp_path / "helpdesk.sqlite")
    yield conn
    await conn.close()


async def _rows(conn: aiosqlite.Connection, sql: str, *params: object) -> list[tuple[Any, ...]]:
    async with conn.execute(sql, params) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def _scalar(conn: aiosqlite.Connection, sql: str, *params: object) -> Any:
    rows = await _rows(conn, sql, *params)
    return rows[0][0]


async def _dump(conn: aiosqlite.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: await _rows(conn, f"SELECT * FROM {table} ORDER BY 1") for table in TABLES}


async def test_seeds_at_least_sixty_customers_with_example_emails(db: aiosqlite.Connection) -> None:
    assert await _scalar(db, "SELECT count(*) FROM customers") >= 60
    domains = {row[0] for row in await _rows(db, "SELECT substr(email, instr(email, '@') + 1) FROM customers")}
    assert domains <= {"example.com", "example.org"}


async def test_every_demo_customer_exists(db: aiosqlite.Connection) -> None:
    ids = {row[0] for row in await _rows(db, "SELECT id FROM customers")}
    assert {customer.id for customer in DEMO_CUSTOMERS} <= ids


def test_demo_customers_cover_every_route() -> None:
    assert {customer.route for customer in DEMO_CUSTOMERS} == set(ROUTES)
    assert len({customer.id for customer in DEMO_CUSTOMERS}) == len(DEMO_CUSTOMERS)


@pytest.mark.parametrize(
    ("customer_id", "amount_cents"),
    [("cus_small_dup", 1900), ("cus_mid_dup", 24000), ("cus_large_dup", 120000), ("cus_angry", 4900)],
)
async def test_duplicate_scenarios_have_two_succeeded_payments_for_one_invoice(
    db: aiosqlite.Connection, customer_id: str, amount_cents: int
) -> None:
    duplicated = await _rows(
        db,
        "SELECT invoice_id, amount_cents, count(*) FROM payments "
        "WHERE customer_id = ? AND status = 'succeeded' GROUP BY invoice_id HAVING count(*) > 1",
        customer_id,
    )
    assert len(duplicated) == 1
    invoice_id, amount, count = duplicated[0]
    assert (amount, count) == (amount_cents, 2)
    invoice_amount = await _scalar(db, "SELECT amount_cents FROM invoices WHERE id = ?", invoice_id)
    assert invoice_amount == amount_cents


async def test_failed_payment_scenario_is_past_due_with_open_invoice(db: aiosqlite.Connection) -> None:
    latest = await _rows(
        db,
        "SELECT status, failure_reason, invoice_id FROM payments WHERE customer_id = 'cus_failed_pay' "
        "ORDER BY created_at DESC LIMIT 1",
    )
    status, reason, invoice_id = latest[0]
    assert status == "failed"
    assert reason in {"card_declined", "insufficient_funds"}
    assert await _scalar(db, "SELECT status FROM invoices WHERE id = ?", invoice_id) == "open"
    assert await _scalar(db, "SELECT status FROM subscriptions WHERE customer_id = 'cus_failed_pay'") == "past_due"


async def test_refund_scenarios(db: aiosqlite.Connection) -> None:
    refunded = await _rows(
        db,
        "SELECT p.status, r.status FROM refunds r JOIN payments p ON p.id = r.payment_id "
        "WHERE r.customer_id = 'cus_refunded'",
    )
    assert refunded == [("refunded", "succeeded")]
    partial = await _rows(
        db,
        "SELECT p.status FROM refunds r JOIN payments p ON p.id = r.payment_id "
        "WHERE r.customer_id = 'cus_partial_refund'",
    )
    assert partial == [("partially_refunded",)]


async def test_account_status_scenarios(db: aiosqlite.Connection) -> None:
    locked = await _rows(db, "SELECT status, failed_login_attempts FROM customers WHERE id = 'cus_locked'")
    assert locked == [("locked", 5)]
    assert await _scalar(db, "SELECT status FROM customers WHERE id = 'cus_suspended'") == "suspended"
    assert await _scalar(db, "SELECT plan_id FROM subscriptions WHERE customer_id = 'cus_plan_team'") == "team"
    assert await _scalar(db, "SELECT plan_id FROM subscriptions WHERE customer_id = 'cus_enterprise'") == ("enterprise")
    new = await _rows(db, "SELECT status FROM subscriptions WHERE customer_id = 'cus_new'")
    assert new == [("trialing",)]
    assert await _scalar(db, "SELECT count(*) FROM payments WHERE customer_id = 'cus_new'") == 0


async def test_ordinary_customers_also_have_incidents(db: aiosqlite.Connection) -> None:
    ordinary = "customer_id LIKE 'cus\\_0%' ESCAPE '\\'"
    duplicates = await _scalar(
        db,
        f"SELECT count(*) FROM (SELECT invoice_id FROM payments WHERE {ordinary} "
        "AND status != 'failed' GROUP BY invoice_id HAVING count(*) > 1)",
    )
    failed = await _scalar(
        db, f"SELECT count(DISTINCT customer_id) FROM payments WHERE {ordinary} AND status = 'failed'"
    )
    refunds = await _scalar(db, f"SELECT count(*) FROM refunds WHERE {ordinary}")
    assert duplicates >= 3
    assert failed >= 3
    assert refunds >= 3


async def test_refunds_never_exceed_payments_and_match_payment_status(db: aiosqlite.Connection) -> None:
    rows = await _rows(
        db,
        "SELECT p.id, p.amount_cents, p.status, "
        "coalesce(sum(CASE WHEN r.status != 'failed' THEN r.amount_cents END), 0), "
        "coalesce(sum(CASE WHEN r.status = 'succeeded' THEN r.amount_cents END), 0), "
        "count(r.id), coalesce(sum(r.customer_id != p.customer_id), 0) "
        "FROM payments p LEFT JOIN refunds r ON r.payment_id = p.id GROUP BY p.id",
    )
    for payment_id, amount, status, claimed, succeeded, refund_count, foreign in rows:
        assert claimed <= amount, payment_id
        assert foreign == 0, payment_id
        if status == "refunded":
            assert succeeded == amount, payment_id
        elif status == "partially_refunded":
            assert 0 < succeeded < amount, payment_id
        else:
            assert succeeded == 0, payment_id
            if status == "failed":
                assert refund_count == 0, payment_id


async def test_payments_reference_invoices_of_the_same_customer(db: aiosqlite.Connection) -> None:
    mismatched = await _rows(
        db,
        "SELECT p.id FROM payments p LEFT JOIN invoices i ON i.id = p.invoice_id "
        "WHERE p.invoice_id IS NULL OR i.id IS NULL OR i.customer_id != p.customer_id "
        "OR i.amount_cents != p.amount_cents",
    )
    assert mismatched == []


async def test_foreign_keys_hold(db: aiosqlite.Connection) -> None:
    assert await _rows(db, "PRAGMA foreign_key_check") == []


async def test_ids_are_zero_padded_counters(db: aiosqlite.Connection) -> None:
    for table, prefix in (
        ("subscriptions", "sub"),
        ("invoices", "in"),
        ("payments", "pay"),
        ("refunds", "re"),
    ):
        ids = sorted(str(row[0]) for row in await _rows(db, f"SELECT id FROM {table}"))
        assert ids == [f"{prefix}_{number:04d}" for number in range(1, len(ids) + 1)], table


async def test_every_date_is_before_the_epoch(db: aiosqlite.Connection) -> None:
    epoch = SEED_EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ")
    for table, column in (
        ("customers", "created_at"),
        ("subscriptions", "started_at"),
        ("invoices", "issued_at"),
        ("payments", "created_at"),
        ("refunds", "created_at"),
    ):
        assert await _scalar(db, f"SELECT max({column}) FROM {table}") < epoch, table
    late_refunds = await _rows(
        db,
        "SELECT r.id FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.created_at <= p.created_at",
    )
    assert late_refunds == []


async def test_records_seed_version(db: aiosqlite.Connection) -> None:
    assert await _scalar(db, "SELECT value FROM meta WHERE key = 'seed_version'") == str(SEED_VERSION)


@pytest.mark.parametrize(
    ("query", "slug"),
    [
        ("sync", "sync-not-working"),
        ("password", "reset-password"),
        ('"Error 502"', "error-502-bad-gateway"),
        ("429", "error-429-rate-limited"),
        ("charged twice", "duplicate-charge-explained"),
        ("docking hub", "docking-hub-not-detected"),
        ("opening hours", "opening-hours-and-contact"),
        ("refund", "refund-policy"),
    ],
)
async def test_kb_full_text_search_ranks_the_right_article_first(
    db: aiosqlite.Connection, query: str, slug: str
) -> None:
    results = await _rows(db, KB_SEARCH, query)
    assert results[0] == (slug,)


async def test_seeding_is_deterministic(tmp_path: Path) -> None:
    first = await _seeded(tmp_path / "first.sqlite")
    second = await _seeded(tmp_path / "second.sqlite")
    try:
        assert await _dump(first) == await _dump(second)
    finally:
        await first.close()
        await second.close()


def test_articles_are_well_formed() -> None:
    articles = load_articles()
    assert len(articles) >= 45
    assert len({article["slug"] for article in articles}) == len(articles)
    for article in articles:
        assert article["category"] in {"technical", "account", "billing", "general"}, article["slug"]
        steps = article["steps"]
        assert isinstance(steps, list) and 3 <= len(steps) <= 7, article["slug"]
        assert all(isinstance(step, str) and step for step in steps), article["slug"]
        assert article["title"] and article["summary"] and article["tags"], article["slug"]
    counts = {category: 0 for category in ("technical", "account", "billing", "general")}
    for article in articles:
        counts[str(article["category"])] += 1
    assert counts["technical"] >= 20
    assert min(counts["account"], counts["billing"], counts["general"]) >= 8


async def test_articles_stored_with_steps_as_json(db: aiosqlite.Connection) -> None:
    stored = await _rows(db, "SELECT slug, steps FROM kb_articles ORDER BY id")
    assert [(article["slug"], article["steps"]) for article in load_articles()] == [
        (slug, json.loads(str(steps))) for slug, steps in stored
    ]
