"""MongoDB collections: names, owners (the only service that writes them) and indexes, in one place.

One writer per collection keeps us correct on FerretDB, whose conditional updates are not atomic:
a writer never races another writer on the same document. Readers may be anyone.

| collection | written by | _id | what |
|---|---|---|---|
| accounts | admin CLI | account id | profile, status |
| api_keys | admin CLI | sha256 hex of the key | account, prefix, revoked_at |
| wabas | admin CLI | WABA id | account, portfolio |
| phone_numbers | admin CLI | Meta phone number id | account, WABA, encrypted token |
| templates | admin CLI sync; status | waba:name:language | category, status, params |
| idempotency_keys | ingest | account:key:24 h bucket | keyed request's message, body hash; 48 h |
| messages | status | message id | request, state, history |
| balances | billing | account id | available, reserved, applied |
| ledger | billing | entry key | every credit movement |
| billing_checkpoints | billing | job name | where the sweeper and reconciler got to |
| sends | sender | message id | the send attempt (`sending` guard) or an unsent outcome |
| send_outcomes | sender | message id | the outcome of a send attempt, wamid |
| tier_usage | sender | portfolio:recipient | business-initiated sends 24 h |
| wamid_index | status | wamid | message id, account |
| parked_statuses | status | wamid:status | statuses of unknown wamids |
| conversations | status | phone_number_id:wa_id | contact who wrote: last inbound (24 h window) |
| inbound_messages | status | wamid | users' messages; app-sent echoes |
| user_preferences | status | phone_number_id:wa_id:category | a user's marketing stop/resume |
| number_states | status | phone number id | Meta's word on a number: tier, name, ban |
| media | ingest | Meta media id | media a client uploaded through us: account, number, type, size |
| dlq_replays | admin CLI | dlq topic:partition:offset | dead letters replayed; unique `source` |
| audit_log | admin CLI (console later) | `aud_…` | who, what, target, when, where; inserts only |
| webhook_endpoints | ingest, admin CLI | endpoint id (`we_…`) | url, events, secrets |
| endpoint_states | notify | endpoint id | health: failing since, disabled (410, 3 days failing) |
| notify_events | notify | event id (`evt_…`) | every client event, as delivered (replay source) |
| deliveries | notify | endpoint id:event id | one event to one endpoint: state, next try |
| delivery_attempts | notify | endpoint id:event id:n | each attempt: time, status, latency, error |
| email_alerts | notify | alert key | alert emails sent (one per crossing / change) |
| suppressions | status | phone_number_id:wa_id | a contact's marketing opt-out (or back in) |
| opt_out_keywords | ingest, admin CLI | account id | the account's STOP/START words |
| blocked_recipients | ingest, admin CLI | account:E.164 | numbers the account never sends to |
| account_holds | guard | account id | fraud and spam holds, the last release |
| guard_states | guard | account id | the rules' sliding windows and the input positions applied |
| guard_recipients | guard | account:keyed hash | recipients the account has sent to (first seen) |

`messages` has one writer, status's state writer: it creates a message's document from the
SendRequested that ingest published (ingest answers 202 once that event is durable) and applies
every later status, so no two writers ever race on one document.

`inbound_messages` documents (status's processor is their only writer; ingest reads them):
`_id` wamid, `account_id`, `waba_id`, `phone_number_id`, `wa_id` (the contact, digits as Meta sends
it), `direction` ("inbound", or "echo" for a message the business sent from the WhatsApp Business
app), `type` (Meta's), `content` (JSON text of Meta's item for that message, as it came),
`media_id` (for image/video/audio/document/sticker, else absent), `context_wamid`, `contact_name`,
`sent_at` (ms, Meta's timestamp), `received_at` (ms). A received media id belongs to the account of
the inbound message that carried it. Also `opens_window` (whether it opened the 24 h window),
`user_id` (the user's BSUID), `group_id`, `referral: true` (a Click-to-WhatsApp entry; the
referral itself is in `content`). Past retention, status's sweeper removes `content`,
`contact_name` and `user_id`, hashes `wa_id` and sets `anonymised_at`.

`conversations` (status's processor): `_id` phone_number_id:wa_id, `account_id`, `waba_id`,
`phone_number_id`, `wa_id`, `contact_name`, `user_id`, `last_message_at` (any direction),
`last_inbound_at` and `window_expires_at` (only messages that open the window), all ms and only
moving forward. `user_preferences` (status): `_id` phone_number_id:wa_id:category, `account_id`,
`wa_id`, `category`, `value` (stop, resume, ...), `at` (ms, the latest wins), `detail`.
`number_states` (status): per phone number id `messages_per_second`/`mps_at`,
`messaging_limit`/`limit_at` (what the last ThroughputChanged carried), quality and name
decisions; per WABA (`_id` "waba:<id>") `holds` ({banned|deleted|partner_removed|
app_uninstalled: {on, at}}), `held`, and the latest account_update, review, alert, security and
capability facts.

`webhook_endpoints` documents (written by ingest's client API, and by the admin CLI acting for
a client, both through the rules of `shared/webhook_endpoints.py`; notify reads them):
`_id` `we_` + 26 chars, `account_id`, `url`, `events` (event types, `<prefix>.*` or `*`; see
`shared/client_events.py`), `format` ("standard" | "meta"), `description`, `enabled` (the client's
switch; false once deleted), `enabled_at` (ms, set at creation and whenever the client enables
it), `secrets`: a list of `{"id", "encrypted", "created_at", "expires_at"}` (`encrypted`: the
whole `whsec_…` string, Fernet under `HALA_TOKEN_KEYS`; times in ms; the current secret has
`expires_at: null`; a rotated-out one signs too until its `expires_at`, 24 h on; expired ones
are dropped at the next rotation), `created_at`, `updated_at`, `deleted_at` (ms, null until the
soft delete). notify's own verdict lives in `endpoint_states`
(`disabled_at`, `disabled_reason`, `failing_since`, `last_success_at`): an endpoint receives while
`enabled` and not (`disabled_at` after `enabled_at`), so each collection keeps one writer and a
client re-enabling a disabled endpoint needs no write of notify's.

notify's documents (notify is their only writer; ingest reads attempts and states): `notify_events`:
`_id` event id (`evt_…`, derived from the source event, so a redelivered record is the same event),
`account_id`, `type` (a client event type, or `meta.<field>` for a Meta payload), `format`
("standard" | "meta"), `at` (ms, when it happened), `source_at` (ms, when its source record was
written to Kafka), `created_at` (ms), `payload` (the exact JSON text every attempt sends),
`message_id` (message events). Only accounts with an endpoint of that format get their events
stored. `deliveries`: `_id` endpoint id:event id (a replay: endpoint id:event id: request id),
`endpoint_id`, `event_id`, `event_type`, `account_id`, `kind` (live | replay | test), `state`
(pending | delivered | failed: retries exhausted | cancelled: endpoint deleted or disabled),
`attempts`, `next_at` (ms), `created_at`, `source_at`, `last_status`, `last_error`, `done_at`.
`delivery_attempts` (ingest's `GET /v1/webhook-endpoints/{id}/deliveries` and `hala webhooks
deliveries` read them, newest first by `at`): `_id` delivery id:attempt, `endpoint_id`, `event_id`,
`event_type`, `account_id`, `kind`, `attempt` (1, 2, …), `at` (ms, when the attempt started),
`http_status` (or null when no answer came), `latency_ms`, `outcome` (delivered | http_error |
throttled | gone | timeout | connection_error | blocked), `error` (null on success, else a short
reason), `response` (at most the first 1 KiB of the answer's body, text), `next_at` (ms of the retry
it scheduled, or null). `endpoint_states`: `_id` endpoint id, `account_id`, `failing_since` (ms of
the first failure after the last success, or null), `last_success_at`, `last_failure_at`,
`disabled_at`, `disabled_reason` (gone: the endpoint answered 410; failing: no success for 3 days).
`email_alerts`: `_id` the alert key (`balance_low:<event id>`, `template:<event id>`,
`quality:<event id>`, `endpoint_disabled:<endpoint>:<at>`), `account_id`, `kind`, `subject`, `text`,
`html`, `state` (pending | sent | failed), `attempts`, `next_at`, `created_at`, `sent_at`,
`recipients`, `message_id` (the mail's Message-ID, the same on every try).

`audit_log` (append-only; services/admin/audit.py is the only code that touches it, with
inserts and finds): `_id` `aud_` + ULID, `at` (date), `operator` {name (HALA_OPERATOR or the OS
user), os_user, host, remote_address (the SSH client, when over SSH)}, `command` ("accounts
create"), `arguments` (secrets redacted), `target` {account_id, waba_id, phone_number_id, key,
topic, ... as the command names them}, `outcome` ok | error, `error` {code, message}.

`suppressions` (status's processor, the only writer; ingest and the admin CLI read it; clients
and operators change it through `suppressions.change-requested.v1`): `_id`
phone_number_id:wa_id, `account_id`, `phone_number_id`, `wa_id` (the contact as Meta names it),
`suppressed` (true: no marketing templates from this number to this contact), `source`
(keyword | user_preferences | meta: a 131050 failure | api | operator), `at` (ms of the fact:
the user's message, Meta's preference or status, the request; the latest wins whatever the
source), `keyword` (the opt-out or opt-in
word, normalised, for source keyword), `detail` (Meta's detail, a client's or operator's note),
`operator`, `updated_at`. A document with `suppressed: false` is kept: an older STOP delivered
late must not undo a newer START.

`opt_out_keywords` (ingest's `PUT /v1/opt-out-keywords` and `hala accounts update
--opt-out-keywords`, each replacing the whole document; status reads it): `_id` account id,
`account_id`, `opt_out`, `opt_in` (lists of words as written, or null for that list's defaults:
shared/opt_out.py), `updated_at`. `blocked_recipients` (ingest's `/v1/blocked-recipients` and
`hala blocks`, inserts and deletes only): `_id` account:E.164, `account_id`, `recipient`
(E.164), `note`, `source` (api | operator), `created_at` (ms); plus one marker per account
that ever blocked a number (`_id` account:*, `marker: true`), so a send of an account without
one needs no lookup of its recipient.

`account_holds` (guard; ingest and the admin CLI read it): `_id` account id, `account_id`,
`holds` {rule: {at (ms: when the rule fired, from its evidence's times), reason, observed,
event_id}}, `released_at` (ms of the latest release), `released_by`, `release_reason`,
`updated_at`. The account is held while some rule's `at` is after `released_at`
(shared/holds.py); each rule's hold is its own field, so writes never need to be conditional.
`guard_states` (guard): `_id` account id, `account_id`, the rules' windows (`minutes`: counts
per minute by counter; `hours`: sends per hour for the 7-day baseline), `first_at`,
`latest_at`, `fired` (rules that held it since the last release), `released_at`, `applied`
[{position: "topic:partition", next: offset}] written in the same update (a replayed record
is skipped), `updated_at`. `guard_recipients` (guard): `_id` account:keyed hash of the
recipient, `account_id`, `first_seen` (ms), `message_id` (the send that found it new);
deleted `GUARD_RECIPIENT_MEMORY_DAYS` after first seen.

`billing_checkpoints` (billing): `_id` the job (`reservation_sweep`, `reconcile`), `position`
{at, key} in the ledger's (at, _id) order, and for the reconciler `totals` per account of every
entry up to it and `pending` (keys of entries behind it that their balance had not applied).

`templates` has two writers by design: the CLI's sync copies Meta's list and the status service
applies Meta's template webhooks (status, quality, category, components); both write Meta's
truth, so the later write is the right one. A webhook for a template the sync never saw creates
a minimal document (`shape_known: false`, no components) that the next sync replaces;
`needs_sync: true` marks a template whose components Meta changed since the sync.
"""

from __future__ import annotations

from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

ACCOUNTS = "accounts"
API_KEYS = "api_keys"
WABAS = "wabas"
PHONE_NUMBERS = "phone_numbers"
TEMPLATES = "templates"
IDEMPOTENCY_KEYS = "idempotency_keys"
MESSAGES = "messages"
BALANCES = "balances"
LEDGER = "ledger"
BILLING_CHECKPOINTS = "billing_checkpoints"
SENDS = "sends"
SEND_OUTCOMES = "send_outcomes"
TIER_USAGE = "tier_usage"
WAMID_INDEX = "wamid_index"
PARKED_STATUSES = "parked_statuses"
CONVERSATIONS = "conversations"
INBOUND_MESSAGES = "inbound_messages"
USER_PREFERENCES = "user_preferences"
NUMBER_STATES = "number_states"
MEDIA = "media"
WEBHOOK_ENDPOINTS = "webhook_endpoints"
ENDPOINT_STATES = "endpoint_states"
NOTIFY_EVENTS = "notify_events"
DELIVERIES = "deliveries"
DELIVERY_ATTEMPTS = "delivery_attempts"
EMAIL_ALERTS = "email_alerts"
DLQ_REPLAYS = "dlq_replays"
AUDIT_LOG = "audit_log"
SUPPRESSIONS = "suppressions"
OPT_OUT_KEYWORDS = "opt_out_keywords"
BLOCKED_RECIPIENTS = "blocked_recipients"
ACCOUNT_HOLDS = "account_holds"
GUARD_STATES = "guard_states"
GUARD_RECIPIENTS = "guard_recipients"

INDEXES: dict[str, list[IndexModel]] = {
    API_KEYS: [IndexModel([("account_id", ASCENDING)])],
    PHONE_NUMBERS: [
        IndexModel([("account_id", ASCENDING)]),
        IndexModel([("display_phone_number", ASCENDING)]),
    ],
    TEMPLATES: [
        IndexModel(
            [("waba_id", ASCENDING), ("name", ASCENDING), ("language", ASCENDING)], unique=True
        )
    ],
    MESSAGES: [
        IndexModel([("account_id", ASCENDING), ("created_at", DESCENDING)]),
        IndexModel([("created_at", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("status_at", ASCENDING)]),  # status's sweeper
        # one contact's messages, for /v1/conversations/{wa_id}/messages
        IndexModel(
            [("account_id", ASCENDING), ("recipient", ASCENDING), ("created_at", DESCENDING)]
        ),
    ],
    INBOUND_MESSAGES: [
        IndexModel([("account_id", ASCENDING), ("wa_id", ASCENDING), ("sent_at", DESCENDING)]),
        IndexModel([("media_id", ASCENDING)]),
        IndexModel([("received_at", ASCENDING)]),  # retention sweep
    ],
    CONVERSATIONS: [
        IndexModel([("account_id", ASCENDING), ("last_inbound_at", DESCENDING)]),
        # the account's contacts, latest first (GET /v1/conversations); status's sweeper
        IndexModel([("account_id", ASCENDING), ("last_message_at", DESCENDING)]),
        IndexModel([("last_message_at", ASCENDING)]),
    ],
    USER_PREFERENCES: [IndexModel([("account_id", ASCENDING), ("wa_id", ASCENDING)])],
    MEDIA: [IndexModel([("account_id", ASCENDING)])],
    IDEMPOTENCY_KEYS: [IndexModel([("created_at", ASCENDING)])],  # ingest's sweeper
    # A record dead-lettered twice (read again after a stop) is replayed once.
    DLQ_REPLAYS: [
        IndexModel([("source", ASCENDING)], unique=True),
        IndexModel([("dlq_topic", ASCENDING)]),
    ],
    AUDIT_LOG: [
        IndexModel([("at", DESCENDING)]),
        IndexModel([("target.account_id", ASCENDING), ("at", DESCENDING)]),
    ],
    LEDGER: [
        IndexModel([("account_id", ASCENDING), ("at", ASCENDING)]),
        # billing's paged readers (the reconciler, the reservation sweeper) go in this
        # order from where they got to
        IndexModel([("at", ASCENDING), ("_id", ASCENDING)]),
    ],
    PARKED_STATUSES: [IndexModel([("wamid", ASCENDING)])],
    # notify: replays by account and time, retention sweeps, due deliveries and alerts, and
    # ingest's list of an endpoint's attempts (newest first)
    NOTIFY_EVENTS: [
        IndexModel([("account_id", ASCENDING), ("at", ASCENDING)]),
        IndexModel([("created_at", ASCENDING)]),
    ],
    DELIVERIES: [
        IndexModel([("state", ASCENDING), ("next_at", ASCENDING)]),
        IndexModel([("created_at", ASCENDING)]),
    ],
    DELIVERY_ATTEMPTS: [
        IndexModel([("endpoint_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("at", ASCENDING)]),
    ],
    EMAIL_ALERTS: [IndexModel([("state", ASCENDING), ("next_at", ASCENDING)])],
    # an account's endpoints, newest first (GET /v1/webhook-endpoints)
    WEBHOOK_ENDPOINTS: [IndexModel([("account_id", ASCENDING), ("created_at", DESCENDING)])],
    # an account's lists, newest first (GET /v1/suppressions, /v1/blocked-recipients)
    SUPPRESSIONS: [IndexModel([("account_id", ASCENDING), ("at", DESCENDING)])],
    BLOCKED_RECIPIENTS: [IndexModel([("account_id", ASCENDING), ("created_at", DESCENDING)])],
    # guard's retention pass and the erasure of an account
    GUARD_RECIPIENTS: [
        IndexModel([("first_seen", ASCENDING)]),
        IndexModel([("account_id", ASCENDING)]),
    ],
}


# Indexes an earlier version created that would now refuse valid writes: dropped at start.
# (messages no longer hold an idempotency key: a unique index on it would see every keyless
# message of an account as the same null key.)
RETIRED_INDEXES: dict[str, list[str]] = {MESSAGES: ["account_id_1_idempotency_key_1"]}


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]], *names: str) -> None:
    """Create the indexes of the named collections and drop their retired ones (idempotent;
    run at service start).

    One index per command: FerretDB 1.24 drops the connection when a single createIndexes
    re-creates several indexes that already exist. Building an index takes longer than a
    request's operation may (ingest's deadline is under a second): the pass gets a minute."""
    with pymongo.timeout(INDEX_TIMEOUT_S):
        await _ensure_indexes(db, names)


INDEX_TIMEOUT_S = 60.0


async def _ensure_indexes(db: AsyncDatabase[dict[str, Any]], names: tuple[str, ...]) -> None:
    for name in names:
        retired = set(RETIRED_INDEXES.get(name, []))
        if retired:
            existing = await db[name].index_information()
            for index in retired & set(existing):
                await db[name].drop_index(index)
        for model in INDEXES.get(name, []):
            await db[name].create_indexes([model])
