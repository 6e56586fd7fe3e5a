"""Every event type of the studio, in one place: its name, whether it is durable, its data.

Event types are facts named `noun.past_tense`. Each is a frozen `msgspec.Struct` holding the event's
`data`, checked deeply when it is read (a `list[str]` is a list of strings; an `int` is not a bool or
a string; unknown fields are ignored); the AsyncAPI document of the catalog (events/asyncapi.py) is
generated from these types. `DURABLE` says where it travels:

- durable (JetStream stream `STUDIO_EVENTS`): stored on disk, replayable, consumed by durable pull
  consumers with acknowledgements. Anything that must not be lost.
- live-only (core NATS): high-rate or ephemeral facts (progress, heartbeats). Whoever listens now
  sees them; nobody can replay them.

Evolve additively: add optional fields with defaults, never rename or remove one. Unknown fields in
incoming data are ignored, so old consumers keep working.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import msgspec

from events.envelope import Event, InvalidEvent
from events.ids import install_id_for_purchase

EVENT_TYPES: dict[str, type[EventData]] = {}


class EventData(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event's data. Subclasses (`class X(EventData, frozen=True, kw_only=True)`) set TYPE and DURABLE;
    a subclass without TYPE is a base that events share fields through (ChatUsage)."""

    TYPE: ClassVar[str]
    DURABLE: ClassVar[bool]
    SUBJECT_FIELD: ClassVar[str | None] = None  # field used as the CloudEvents `subject`

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            if cls.TYPE in EVENT_TYPES:
                raise TypeError(f"event type {cls.TYPE!r} is declared twice")
            EVENT_TYPES[cls.TYPE] = cls

    def to_data(self) -> dict[str, Any]:
        # Shallow on purpose: fields hold JSON values already.
        return msgspec.structs.asdict(self)

    @property
    def subject(self) -> str | None:
        return None if self.SUBJECT_FIELD is None else str(getattr(self, self.SUBJECT_FIELD))

    @classmethod
    def from_event(cls, event: Event) -> Self:
        if event.type != cls.TYPE:
            raise InvalidEvent(f"expected {cls.TYPE}, got {event.type}")
        return cls.from_data(event.data)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        """The typed data, every field checked against its type all the way down; InvalidEvent says where not."""
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise InvalidEvent(f"{cls.TYPE}: {exc}") from None


def data_class_for(event_type: str) -> type[EventData] | None:
    return EVENT_TYPES.get(event_type)


def durable_types() -> list[str]:
    return sorted(t for t, cls in EVENT_TYPES.items() if cls.DURABLE)


# -- the runtime's own events ---------------------------------------------------------------------


class HeartbeatEmitted(EventData, frozen=True, kw_only=True):
    """A function instance is alive; carries its HTTP metrics snapshot for the monitor."""

    TYPE = "heartbeat.emitted"
    DURABLE = False
    SUBJECT_FIELD = "function"
    function: str
    instance: str
    pid: int
    started_at: str
    uptime_s: float
    inflight: int = 0
    http: dict[str, Any] = msgspec.field(default_factory=dict)
    load: dict[str, Any] = msgspec.field(default_factory=dict)  # e.g. chat: {"ollama_queue": {node: answers}}


class ServerReported(EventData, frozen=True, kw_only=True):
    """A gateway's load, every heartbeat: the monitor adds the servers up against the "when to scale"
    thresholds (functions/monitor/scale.py)."""

    TYPE = "server.reported"
    DURABLE = False
    SUBJECT_FIELD = "server"
    server: str  # host name: the CPU figure is the whole machine's
    instance: str
    visitors: int  # distinct visitors this gateway saw in the last five minutes
    live_streams: int = 0
    cpu_percent: float = 0.0


class ScaleThresholdCrossed(EventData, frozen=True, kw_only=True):
    """A "when to scale" signal went over its threshold: the operator should add a server or an Ollama
    node. Published by every monitor replica under one id per signal and quarter of an hour, so the
    stream keeps one and one replica posts the alert."""

    TYPE = "scale.threshold_crossed"
    DURABLE = True
    SUBJECT_FIELD = "signal"
    signal: str  # visitors | chat_requests_per_s | ollama_queue | cpu_percent
    key: str = ""  # the node or server it is about, when it is about one
    value: float
    threshold: float
    setting: str
    advice: str


class HeartbeatRequested(EventData, frozen=True, kw_only=True):
    """Someone (the health function at start-up) asks every instance to beat now."""

    TYPE = "heartbeat.requested"
    DURABLE = False
    requested_by: str


class ResourceExhausted(EventData, frozen=True, kw_only=True):
    """A process is short of a resource (disk low or full, open files): the operator must act.

    Live-only on purpose: with the disk full, JetStream could not store it. Announced at most once a
    minute per kind and process, with how often it happened since the last announcement."""

    TYPE = "resource.exhausted"
    DURABLE = False
    SUBJECT_FIELD = "kind"
    kind: str  # disk_low | disk_full | out_of_files | live_streams_full | database_unavailable | bus_unavailable
    message: str
    count: int = 1
    instance: str = ""


class ResourceRecovered(EventData, frozen=True, kw_only=True):
    """A shortage announced by `resource.exhausted` is over."""

    TYPE = "resource.recovered"
    DURABLE = False
    SUBJECT_FIELD = "kind"
    kind: str
    message: str
    instance: str = ""


class FunctionStarted(EventData, frozen=True, kw_only=True):
    TYPE = "function.started"
    DURABLE = True
    SUBJECT_FIELD = "function"
    function: str
    instance: str
    version: str


class FunctionStopped(EventData, frozen=True, kw_only=True):
    TYPE = "function.stopped"
    DURABLE = True
    SUBJECT_FIELD = "function"
    function: str
    instance: str
    uptime_s: float


class EventDeadLettered(EventData, frozen=True, kw_only=True):
    """A consumer gave up on an event: it was rejected as poison or failed on every attempt."""

    TYPE = "event.dead_lettered"
    DURABLE = True
    SUBJECT_FIELD = "event_type"
    event_id: str
    event_type: str
    consumer: str
    attempts: int
    reason: str
    error: str


class ConsumerFellBehind(EventData, frozen=True, kw_only=True):
    """A durable consumer's oldest unacknowledged event is older than the lag alert threshold."""

    TYPE = "consumer.fell_behind"
    DURABLE = True
    SUBJECT_FIELD = "consumer"
    consumer: str
    pending: int
    ack_pending: int
    oldest_pending_s: float
    threshold_s: float


class ConsumerCaughtUp(EventData, frozen=True, kw_only=True):
    """A consumer that fell behind is back under the lag alert threshold."""

    TYPE = "consumer.caught_up"
    DURABLE = True
    SUBJECT_FIELD = "consumer"
    consumer: str
    behind_for_s: float
    oldest_pending_s: float
    threshold_s: float


# -- purchases and payments -----------------------------------------------------------------------


class PurchaseCreated(EventData, frozen=True, kw_only=True):
    """A visitor started paying for a model (a Stripe Checkout Session is open)."""

    TYPE = "purchase.created"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    user_id: str
    model: str
    amount_cents: int
    currency: str


class PurchaseCompleted(EventData, frozen=True, kw_only=True):
    """A visitor owns a model now (paid, test mode, or free): it must end up installed."""

    TYPE = "purchase.completed"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    user_id: str
    model: str
    kind: str  # free | test | stripe
    amount_cents: int
    currency: str

    @property
    def install_id(self) -> str:
        """The install this purchase asks for (events/ids.py: derived from the purchase id)."""
        return install_id_for_purchase(self.purchase_id)


class PurchaseFailed(EventData, frozen=True, kw_only=True):
    """A pending purchase will not complete (payment failed, checkout expired)."""

    TYPE = "purchase.failed"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    user_id: str
    model: str
    reason: str


class PurchaseRevoked(EventData, frozen=True, kw_only=True):
    """Ownership was taken back (a full refund, or a dispute lost)."""

    TYPE = "purchase.revoked"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    user_id: str
    model: str
    reason: str


class PaymentSucceeded(EventData, frozen=True, kw_only=True):
    """Stripe says a Checkout Session is paid (from a verified webhook)."""

    TYPE = "payment.succeeded"
    DURABLE = True
    SUBJECT_FIELD = "session_id"
    stripe_event_id: str
    session_id: str
    purchase_id: str | None
    user_id: str | None
    model: str | None
    payment_intent: str | None
    amount_cents: int
    currency: str
    # No e-mail: the buyer's address stays with the purchase (purchase asks Stripe for it), never in the
    # event stream, which keeps events for 30 days and is read by every function and `events tail`.


class PaymentFailed(EventData, frozen=True, kw_only=True):
    """Stripe says a Checkout Session will not be paid (async payment failed, or it expired)."""

    TYPE = "payment.failed"
    DURABLE = True
    SUBJECT_FIELD = "session_id"
    stripe_event_id: str
    session_id: str
    purchase_id: str | None
    reason: str


class PaymentRefunded(EventData, frozen=True, kw_only=True):
    """Stripe says a charge was refunded (`full` when nothing of it is left)."""

    TYPE = "payment.refunded"
    DURABLE = True
    SUBJECT_FIELD = "payment_intent"
    stripe_event_id: str
    charge_id: str
    payment_intent: str | None
    amount_cents: int
    amount_refunded_cents: int
    full: bool
    stripe_created: int = 0  # the Stripe event's `created` (seconds): a later refund failure outranks it


class PurchaseSuspended(EventData, frozen=True, kw_only=True):
    """Access to a paid model is on hold while its payment is disputed (a chargeback is open)."""

    TYPE = "purchase.suspended"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    user_id: str
    model: str
    reason: str  # disputed


class PurchaseRestored(EventData, frozen=True, kw_only=True):
    """A suspended or revoked purchase is owned again (a dispute won, a refund that failed)."""

    TYPE = "purchase.restored"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    user_id: str
    model: str
    reason: str  # dispute won | refund failed


class PurchaseFlagged(EventData, frozen=True, kw_only=True):
    """A paid purchase needs the operator: its model could not be installed (the disk is full)."""

    TYPE = "purchase.flagged"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    user_id: str
    model: str
    reason: str


class PaymentDisputed(EventData, frozen=True, kw_only=True):
    """Stripe says the buyer disputed a charge (`charge.dispute.created`): access is suspended meanwhile."""

    TYPE = "payment.disputed"
    DURABLE = True
    SUBJECT_FIELD = "payment_intent"
    stripe_event_id: str
    dispute_id: str
    charge_id: str | None
    payment_intent: str
    amount_cents: int
    reason: str
    stripe_created: int = 0  # the Stripe event's `created` (seconds): orders facts that arrive out of order


class PaymentDisputeClosed(EventData, frozen=True, kw_only=True):
    """Stripe says a dispute is over (`charge.dispute.closed`): `won` restores access, `lost` revokes it."""

    TYPE = "payment.dispute_closed"
    DURABLE = True
    SUBJECT_FIELD = "payment_intent"
    stripe_event_id: str
    dispute_id: str
    charge_id: str | None
    payment_intent: str
    status: str  # won | lost | warning_closed (an inquiry closed without a chargeback: like won)
    stripe_created: int = 0


class PaymentRefundFailed(EventData, frozen=True, kw_only=True):
    """Stripe says a refund failed (`refund.failed`, `charge.refund.updated` with status failed): the money
    stayed with the studio, so a revoked purchase is owned again."""

    TYPE = "payment.refund_failed"
    DURABLE = True
    SUBJECT_FIELD = "payment_intent"
    stripe_event_id: str
    refund_id: str
    charge_id: str | None
    payment_intent: str
    amount_cents: int
    stripe_created: int = 0


class StripeEventIgnored(EventData, frozen=True, kw_only=True):
    """A verified Stripe event that is not the studio's (another product of the same Stripe account, a
    `stripe trigger` test) or of a type the studio does not handle. Live-only: the monitor counts it
    (`studio_events_total{type="stripe_event.ignored"}`); nothing else happens."""

    TYPE = "stripe_event.ignored"
    DURABLE = False
    SUBJECT_FIELD = "stripe_type"
    stripe_event_id: str
    stripe_type: str
    reason: str


# -- the operator ----------------------------------------------------------------------------------


class OperatorRefundRequested(EventData, frozen=True, kw_only=True):
    """The operator refunded a purchase through Stripe (console or API); Stripe's `charge.refunded`
    webhook then revokes it as for any refund. `operator` says who did it."""

    TYPE = "operator.refund_requested"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    operator: str
    purchase_id: str
    user_id: str
    model: str
    amount_cents: int
    refund_id: str


class OperatorInstallRequested(EventData, frozen=True, kw_only=True):
    """The operator asked for a model to be installed (console: Retry / Install now)."""

    TYPE = "operator.install_requested"
    DURABLE = True
    SUBJECT_FIELD = "model"
    operator: str
    model: str
    install_id: str


class OperatorReconciled(EventData, frozen=True, kw_only=True):
    """The operator ran a reconciliation with Stripe (console, CLI or API), and what it found."""

    TYPE = "operator.reconciled"
    DURABLE = True
    operator: str
    since: str
    fix: bool
    found: int
    fixed: int


class OperatorCatalogChanged(EventData, frozen=True, kw_only=True):
    """The operator changed the catalog (a price, featured, a description; a model added or removed).
    `entry` is the model's whole new catalog entry, None when removed; every process lays it over the
    STUDIO_CATALOG seed, so every replica sells the same thing without a restart."""

    TYPE = "operator.catalog_changed"
    DURABLE = True
    SUBJECT_FIELD = "model"
    operator: str
    model: str
    change: str  # updated | added | removed
    entry: dict[str, Any] | None


class OperatorDeadLetterRedriven(EventData, frozen=True, kw_only=True):
    """The operator put a dead-lettered event back into the stream after a fix (console or API)."""

    TYPE = "operator.dead_letter_redriven"
    DURABLE = True
    SUBJECT_FIELD = "event_type"
    operator: str
    event_id: str
    event_type: str
    consumer: str


# -- installs --------------------------------------------------------------------------------------


class InstallRequested(EventData, frozen=True, kw_only=True):
    """Install (again) a model: the owner retries a failed install, or the operator asks."""

    TYPE = "install.requested"
    DURABLE = True
    SUBJECT_FIELD = "model"
    install_id: str
    model: str
    requested_by: str
    reason: str  # retry | operator | restore


class InstallStarted(EventData, frozen=True, kw_only=True):
    TYPE = "install.started"
    DURABLE = True
    SUBJECT_FIELD = "model"
    install_id: str
    model: str
    attempt: int
    nodes: list[str] | None = None  # the Ollama nodes being pulled onto


class InstallProgressed(EventData, frozen=True, kw_only=True):
    """Overall progress of a pull across layers; at most about two a second (live-only)."""

    TYPE = "install.progressed"
    DURABLE = False
    SUBJECT_FIELD = "model"
    install_id: str
    model: str
    phase: str  # manifest | downloading | verifying | writing
    completed_bytes: int
    total_bytes: int
    percent: float
    bytes_per_s: float
    eta_s: float | None
    nodes: dict[str, Any] | None = None  # with a fleet: each node's {phase, percent, completed_bytes, total_bytes}


class InstallCompleted(EventData, frozen=True, kw_only=True):
    """The model is in Ollama (seen in /api/tags with this digest)."""

    TYPE = "install.completed"
    DURABLE = True
    SUBJECT_FIELD = "model"
    install_id: str
    model: str
    digest: str
    size_bytes: int
    node: str | None = None  # the Ollama node it landed on (a fleet announces each node)


class InstallFailed(EventData, frozen=True, kw_only=True):
    TYPE = "install.failed"
    DURABLE = True
    SUBJECT_FIELD = "model"
    install_id: str
    model: str
    reason: str
    will_retry: bool
    attempt: int
    retry_in_s: float | None = None


class InstallRemoved(EventData, frozen=True, kw_only=True):
    """The model is no longer in Ollama (the operator removed it, or it vanished)."""

    TYPE = "install.removed"
    DURABLE = True
    SUBJECT_FIELD = "model"
    model: str
    reason: str
    by_operator: bool = False  # False: it vanished (a restore onto an empty Ollama): owners get it back


# -- chat ------------------------------------------------------------------------------------------
# Usage facts only: never the conversation's content.


class ChatUsage(EventData, frozen=True, kw_only=True):
    """What every chat event says of one answer (a base: not an event type of its own)."""

    SUBJECT_FIELD = "model"
    model: str
    user_id: str
    completion_tokens: int
    duration_ms: float
    key_id: str | None = None  # the personal API key used (its id), if any
    thinking_tokens: int = 0  # of completion_tokens, a thinking model's reasoning
    node: str | None = None  # the Ollama node that answered (its URL), or "fallback"
    fallback: bool = False  # the model's cloud fallback answered (every node was saturated)
    api: str = "chat"  # the dialect asked: chat (/api/chat and /v1/chat/completions), responses, messages, ...


class ChatCompleted(ChatUsage, frozen=True, kw_only=True):
    """An answer was given in full (Ollama said it was done)."""

    TYPE = "chat.completed"
    DURABLE = True
    prompt_tokens: int
    time_to_first_token_ms: float | None
    tokens_per_s: float | None
    done_reason: str


class ChatFailed(ChatUsage, frozen=True, kw_only=True):
    """An answer broke off: Ollama failed or went away mid-answer (`reason` says how)."""

    TYPE = "chat.failed"
    DURABLE = True
    reason: str


class ChatCancelled(ChatUsage, frozen=True, kw_only=True):
    """The visitor stopped the answer (or left): generation was stopped."""

    TYPE = "chat.cancelled"
    DURABLE = True
    time_to_first_token_ms: float | None


# -- accounts --------------------------------------------------------------------------------------


class AccountCreated(EventData, frozen=True, kw_only=True):
    """Someone signed up (or the operator added an account with the CLI)."""

    TYPE = "account.created"
    DURABLE = True
    SUBJECT_FIELD = "account_id"
    account_id: str
    role: str  # user | operator
    by: str  # signup | cli


class AccountMerged(EventData, frozen=True, kw_only=True):
    """An anonymous visitor signed up or in: what they bought (and any pending checkout) is the account's now."""

    TYPE = "account.merged"
    DURABLE = True
    SUBJECT_FIELD = "account_id"
    account_id: str
    visitor_id: str


class AccountAccessChanged(EventData, frozen=True, kw_only=True):
    """Sessions or keys of an account ended, or its role changed: every gateway forgets what it cached.

    Live-only: a gateway that was away from NATS re-checks cached credentials within a minute anyway.
    """

    TYPE = "account.access_changed"
    DURABLE = False
    SUBJECT_FIELD = "account_id"
    account_id: str
    reason: str  # logout | logout_everywhere | password_changed | key_revoked | role_changed | disabled


class PurchaseTransferred(EventData, frozen=True, kw_only=True):
    """A paid purchase moved to another owner (a visitor's, into their account): ownership follows it."""

    TYPE = "purchase.transferred"
    DURABLE = True
    SUBJECT_FIELD = "purchase_id"
    purchase_id: str
    from_user_id: str
    user_id: str
    model: str
