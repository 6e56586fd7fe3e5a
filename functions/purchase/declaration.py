"""purchase's `Function` and the keys of the state its modules share (the ledger, Stripe, the rechecks).

Declared here, beneath both handler.py and operator.py, so that each registers its routes and
subscriptions on the one `function` without importing the other.
"""

from __future__ import annotations

from pathlib import Path

from functions.purchase.checkout import RecheckThrottle
from functions.purchase.ledger import Ledger
from studio.clients.stripe import StripePayments
from studio.runtime.function import Function, Key

function = Function(
    "purchase",
    migrations=Path(__file__).parent / "migrations",
    publishes=(
        "purchase.created",
        "purchase.completed",
        "purchase.failed",
        "purchase.revoked",
        "purchase.suspended",
        "purchase.restored",
        "purchase.flagged",
        "purchase.transferred",
        "payment.succeeded",  # the reconciliation repairs what a lost webhook never said
        "payment.failed",
        "payment.refunded",  # also a test purchase's rehearsed refund (no Stripe call)
        "payment.disputed",
        "payment.dispute_closed",
        "install.requested",
        "operator.catalog_changed",
        "operator.refund_requested",
        "operator.reconciled",
    ),
    asks=("installs.states", "installs.nodes", "accounts.emails"),
)

LEDGER = Key[Ledger]("ledger")
PAYMENTS = Key[StripePayments | None]("payments")
RECHECKS = Key[RecheckThrottle]("rechecks")


def payment_mode() -> str:
    """How paid models are sold now: "stripe", "test" (STUDIO_SKIP_PAYMENT) or "disabled" (no Stripe key)."""
    s = function.settings
    return "test" if s.skip_payment else "stripe" if s.stripe_secret_key else "disabled"
