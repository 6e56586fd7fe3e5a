"""The ids events carry, where one is made from another: one place, so the catalog can say it.

An install started by a purchase has the purchase's id with another prefix (`pur_<20 hex>` ->
`ins_<20 hex>`), so install and purchase find each other's record from an event without asking;
any other install (a retry, the operator's, a restore) gets a fresh id.
"""

from __future__ import annotations

from events.envelope import new_id

PURCHASE_PREFIX = "pur_"
INSTALL_PREFIX = "ins_"


def new_install_id() -> str:
    return INSTALL_PREFIX + new_id()[:20]


def install_id_for_purchase(purchase_id: str) -> str:
    """The id of the install a purchase asks for (`purchase.completed` carries it as `install_id`)."""
    return INSTALL_PREFIX + purchase_id.removeprefix(PURCHASE_PREFIX)


def purchase_id_of_install(install_id: str) -> str:
    """The purchase an install was started for: the inverse of `install_id_for_purchase`."""
    return PURCHASE_PREFIX + install_id.removeprefix(INSTALL_PREFIX)
