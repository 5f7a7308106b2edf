-- The embedded helpdesk: customers, their money, the knowledge base, and what triage writes back.
-- Money is stored in integer cents. Timestamps are ISO-8601 UTC text. Rows that triage writes carry an
-- idempotency_key with a UNIQUE constraint so that a re-run node returns the first receipt instead of writing twice.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS plans (
    id                  TEXT PRIMARY KEY,            -- e.g. 'starter'
    name                TEXT NOT NULL,
    monthly_price_cents INTEGER NOT NULL CHECK (monthly_price_cents >= 0),
    description         TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS customers (
    id                    TEXT PRIMARY KEY,          -- e.g. 'cus_0001', or a documented scenario id like 'cus_small_dup'
    name                  TEXT NOT NULL,
    email                 TEXT NOT NULL UNIQUE,
    phone                 TEXT,
    country               TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('active', 'locked', 'suspended', 'closed')),
    failed_login_attempts INTEGER NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL,
    notes                 TEXT NOT NULL DEFAULT ''   -- what the demo history of this customer exercises
);

CREATE TABLE IF NOT EXISTS subscriptions (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    plan_id     TEXT NOT NULL REFERENCES plans(id),
    status      TEXT NOT NULL CHECK (status IN ('active', 'past_due', 'canceled', 'trialing')),
    started_at  TEXT NOT NULL,
    renews_at   TEXT
);

CREATE TABLE IF NOT EXISTS invoices (
    id              TEXT PRIMARY KEY,                -- e.g. 'in_0001'
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    subscription_id TEXT REFERENCES subscriptions(id),
    amount_cents    INTEGER NOT NULL CHECK (amount_cents >= 0),
    currency        TEXT NOT NULL DEFAULT 'usd',
    status          TEXT NOT NULL CHECK (status IN ('paid', 'open', 'void', 'uncollectible')),
    description     TEXT NOT NULL,
    issued_at       TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS payments (
    id             TEXT PRIMARY KEY,                 -- e.g. 'pay_0001'
    customer_id    TEXT NOT NULL REFERENCES customers(id),
    invoice_id     TEXT REFERENCES invoices(id),
    amount_cents   INTEGER NOT NULL CHECK (amount_cents > 0),
    currency       TEXT NOT NULL DEFAULT 'usd',
    status         TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'refunded', 'partially_refunded')),
    method         TEXT NOT NULL,                    -- 'card', 'paypal', 'sepa_debit', ...
    card_last4     TEXT,
    failure_reason TEXT,
    created_at     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS refunds (
    id              TEXT PRIMARY KEY,                -- e.g. 're_0001'
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    amount_cents    INTEGER NOT NULL CHECK (amount_cents > 0),
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT,
    idempotency_key TEXT UNIQUE
);

-- A refund a specialist asks for; a human (or, later, the approval flow) turns it into a refund.
CREATE TABLE IF NOT EXISTS refund_requests (
    id              TEXT PRIMARY KEY,                -- e.g. 'rr_1f3a...'
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    amount_cents    INTEGER NOT NULL CHECK (amount_cents > 0),
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'executed')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

-- Account changes that need a human or a confirmation step (password reset links, email changes, deletions, ...).
CREATE TABLE IF NOT EXISTS account_requests (
    id              TEXT PRIMARY KEY,                -- e.g. 'ar_1f3a...'
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    kind            TEXT NOT NULL CHECK (kind IN ('password_reset', 'account_unlock', 'email_change',
                                                  'profile_update', 'plan_change', 'account_deletion',
                                                  'data_export')),
    details         TEXT NOT NULL DEFAULT '{}',      -- JSON
    status          TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'rejected')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS kb_articles (
    id       INTEGER PRIMARY KEY,
    slug     TEXT NOT NULL UNIQUE,
    title    TEXT NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('technical', 'account', 'billing', 'general')),
    tags     TEXT NOT NULL DEFAULT '',               -- space-separated search terms
    summary  TEXT NOT NULL,
    steps    TEXT NOT NULL DEFAULT '[]'              -- JSON list of strings
);

CREATE VIRTUAL TABLE IF NOT EXISTS kb_fts USING fts5(
    title, summary, tags, steps,
    content='kb_articles', content_rowid='id',
    tokenize='porter unicode61'
);

CREATE TABLE IF NOT EXISTS tickets (
    id              TEXT PRIMARY KEY,                -- e.g. 'TCK-1f3a...'
    customer_id     TEXT REFERENCES customers(id),
    queue           TEXT NOT NULL CHECK (queue IN ('engineering', 'human', 'billing', 'account')),
    priority        TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    subject         TEXT NOT NULL,
    summary         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'solved')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

-- Notes on a ticket for the person who handles it (e.g. a release that fixed what the ticket asks about).
CREATE TABLE IF NOT EXISTS ticket_notes (
    id              TEXT PRIMARY KEY,                -- e.g. 'note_1f3a...'
    ticket_id       TEXT NOT NULL REFERENCES tickets(id),
    note            TEXT NOT NULL,
    author          TEXT NOT NULL,                   -- the node that wrote it
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS outbox (
    id              TEXT PRIMARY KEY,                -- e.g. 'msg_1f3a...'
    customer_id     TEXT REFERENCES customers(id),
    to_address      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    template        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

CREATE INDEX IF NOT EXISTS payments_by_customer ON payments(customer_id, created_at);
CREATE INDEX IF NOT EXISTS invoices_by_customer ON invoices(customer_id, issued_at);
CREATE INDEX IF NOT EXISTS refunds_by_customer ON refunds(customer_id, created_at);
CREATE INDEX IF NOT EXISTS tickets_by_thread ON tickets(thread_id);
CREATE INDEX IF NOT EXISTS outbox_by_thread ON outbox(thread_id);
CREATE INDEX IF NOT EXISTS notes_by_ticket ON ticket_notes(ticket_id);
-- At most one open refund request per payment: of two tickets racing for one duplicate charge, one requests the
-- refund and the other is told it is already requested (request_refund turns the conflict into that answer).
CREATE UNIQUE INDEX IF NOT EXISTS one_open_refund_request_per_payment
    ON refund_requests(payment_id) WHERE status IN ('requested', 'approved');

-- Every tool call refused by the permission policy: which node asked for what, in which run.
CREATE TABLE IF NOT EXISTS policy_violations (
    id              INTEGER PRIMARY KEY,
    thread_id       TEXT NOT NULL,
    node            TEXT NOT NULL,
    tool            TEXT NOT NULL,
    scope           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    idempotency_key TEXT  -- the refused call's: a step run again after a crash records it once (NULL before)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_violation_per_call ON policy_violations(idempotency_key);

-- Account changes carried out step by step (a plan change, an account closure). Each row is one step's effect,
-- written once per idempotency key; its compensation marks it `reversed` and puts back what it changed.
CREATE TABLE IF NOT EXISTS subscription_changes (
    id              TEXT PRIMARY KEY,                -- e.g. 'sc_1f3a...'
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
    from_plan       TEXT NOT NULL,
    to_plan         TEXT NOT NULL,
    from_status     TEXT NOT NULL,
    to_status       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('applied', 'reversed')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

-- Prorated credits (negative: money owed to the customer) and charges (positive) on the next invoice.
CREATE TABLE IF NOT EXISTS account_credits (
    id              TEXT PRIMARY KEY,                -- e.g. 'cr_1f3a...'
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    amount_cents    INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('posted', 'voided')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

-- Seats of a subscription; a missing row means the plan's default.
CREATE TABLE IF NOT EXISTS subscription_seats (
    subscription_id TEXT PRIMARY KEY REFERENCES subscriptions(id),
    seats           INTEGER NOT NULL CHECK (seats > 0)
);

CREATE TABLE IF NOT EXISTS seat_changes (
    id              TEXT PRIMARY KEY,                -- e.g. 'se_1f3a...'
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
    from_seats      INTEGER,                         -- NULL: the plan's default (no row in subscription_seats)
    to_seats        INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('applied', 'reversed')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

-- Refunds of an unused period: pending until the closure is confirmed, canceled if it is rolled back.
CREATE TABLE IF NOT EXISTS period_refunds (
    id              TEXT PRIMARY KEY,                -- e.g. 'pr_1f3a...'
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    amount_cents    INTEGER NOT NULL CHECK (amount_cents > 0),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'settled', 'canceled')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

-- Data export and deletion jobs a closure schedules (a worker outside triage runs them when due).
CREATE TABLE IF NOT EXISTS data_jobs (
    id              TEXT PRIMARY KEY,                -- e.g. 'dj_1f3a...'
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    export_after    TEXT NOT NULL,
    delete_after    TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('scheduled', 'canceled')),
    created_at      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);

-- Incidents of the service status page (fed by the status page or an operator; none on a new helpdesk).
CREATE TABLE IF NOT EXISTS service_incidents (
    id          TEXT PRIMARY KEY,
    component   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('investigating', 'identified', 'monitoring', 'resolved')),
    title       TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    resolved_at TEXT
);
