"""purchase's HTTP contract: the bodies it takes (decoded and checked by the runtime) and the answers it
gives (for the API reference), as types. The routes that use them declare them (`@function.route`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

OptionalText = str | None


class Install(Struct):
    state: Annotated[str, Meta(description="not_installed, queued, pulling, verifying, installed, failed")]
    install_id: OptionalText = None
    updated_at: OptionalText = None
    nodes: Annotated[
        dict[str, str], Meta(description="The operator only: the state on each Ollama node, by the node's URL")
    ] = {}


class Model(Struct):
    id: str
    name: str
    price_cents: Annotated[int, Meta(ge=0)]
    currency: str
    free: bool
    owned: bool
    install: Install
    description: str = ""
    family: str = ""
    parameter_size: str = ""
    download_bytes: int = 0
    ram_bytes: int = 0
    license: str = ""
    featured: bool = False


class Catalog(Struct):
    models: list[Model]
    payments: Literal["stripe", "test", "disabled"]


class Purchase(Struct):
    id: str
    model: str
    kind: Literal["free", "test", "stripe"]
    status: Literal["pending", "paid", "failed", "refunded"]
    amount_cents: int
    currency: str
    failure_reason: OptionalText = None
    created_at: str = ""
    completed_at: OptionalText = None


class Purchases(Struct):
    purchases: list[Purchase]


class PurchaseAnswer(Struct):
    status: Literal["success", "checkout"]
    purchase_id: str
    model: str
    checkout_url: OptionalText = None
    owned: bool = False
    message: str = ""


class IsOperator(Struct):
    operator: bool


class Removed(Struct):
    model: str
    removed: bool


class ReconcileRequest(Struct):
    since: Annotated[str, Meta(description="how far back: 7d, 24h, 30m, or an ISO date")] = "7d"
    fix: Annotated[bool, Meta(description="repair what differs, through events")] = False


class RefundRequest(Struct):
    codes: ClassVar[dict[str, str]] = {"confirm": "confirmation_required"}
    confirm: Annotated[bool, Meta(description='a refund gives the money back: send {"confirm": true}')]


class CatalogChange(Struct, forbid_unknown_fields=True):
    """price_cents, featured, description: one or more."""

    noun: ClassVar[str] = "a catalog change"
    codes: ClassVar[dict[str, str]] = {
        "unknown_field": "invalid_catalog_change",
        "price_cents": "invalid_catalog_entry",
        "featured": "invalid_catalog_entry",
        "description": "invalid_catalog_entry",
    }
    price_cents: int | UnsetType = UNSET
    featured: bool | UnsetType = UNSET
    description: str | UnsetType = UNSET


CatalogEntry = Annotated[
    dict[str, Any],
    Meta(description="a catalog entry, as STUDIO_CATALOG's file has them (id, name, price_cents, currency, ...)"),
]
