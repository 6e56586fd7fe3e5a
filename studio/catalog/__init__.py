"""The catalog: the models for sale. Shared by every function that needs to know what a model is.

A JSON file (`models.json` beside this module, or the operator's own at STUDIO_CATALOG) with a list
of entries; `id` is the Ollama library name with its tag. Loading validates every entry and stops
start-up with a message naming the entry and the field.

What a model can do is stated per entry, in Ollama's words (`/api/show`): `capabilities` (any of
completion, vision, tools, thinking, embedding; default ["completion"]), `context_length` (tokens) and
`quantization` (e.g. Q4_K_M). The install function compares them with `/api/show` once a model is installed.

Hybrid (off unless an entry says so): `fallback: {"base_url", "model"}` names an OpenAI-compatible
cloud API that answers for the model when every local Ollama node is saturated (the key is the
setting STUDIO_FALLBACK_API_KEY, never the catalog).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from studio.clients.ollama import SAFE_MODEL_NAME

DEFAULT_PATH = Path(__file__).parent / "models.json"
_CURRENCY = re.compile(r"[a-z]{3}")
_QUANTIZATION = re.compile(r"[A-Za-z0-9_]{1,20}")
CAPABILITIES = ("completion", "vision", "tools", "thinking", "embedding")


class CatalogError(ValueError):
    """The catalog file cannot be used; the message names the entry and the field."""


@dataclass(frozen=True)
class Fallback:
    """An OpenAI-compatible API that answers for a model when the local nodes are saturated."""

    base_url: str  # e.g. https://api.openai.com/v1 (the API's root: /chat/completions is added)
    model: str  # the model's name there


@dataclass(frozen=True)
class CatalogModel:
    id: str
    name: str
    description: str
    family: str
    parameter_size: str
    download_bytes: int
    ram_bytes: int
    license: str
    price_cents: int
    currency: str
    featured: bool = False
    capabilities: tuple[str, ...] = ("completion",)
    context_length: int | None = None  # tokens; None: not stated
    quantization: str = ""
    fallback: Fallback | None = None

    @property
    def free(self) -> bool:
        return self.price_cents == 0

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def chat(self) -> bool:
        """Whether the chat can talk with it (an embedding-only model cannot)."""
        return self.can("completion")

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "capabilities": list(self.capabilities), "free": self.free}
        if self.fallback is None:
            del out["fallback"]
        return out


@dataclass(frozen=True)
class Catalog:
    path: Path
    models: tuple[CatalogModel, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.id.lower(): m for m in self.models})

    def get(self, model_id: str) -> CatalogModel | None:
        return self._by_id.get(model_id.strip().lower())  # type: ignore[attr-defined]

    def __contains__(self, model_id: str) -> bool:
        return self.get(model_id) is not None

    def __iter__(self):
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    # The operator's changes (console: price, featured, description; models added or removed) are laid
    # over the file's entries in place, so every holder of this process's catalog sees them at once.

    def put(self, model: CatalogModel) -> None:
        """Add `model`, or replace the entry with its id (keeping its place in the list)."""
        models = list(self.models)
        index = next((i for i, m in enumerate(models) if m.id == model.id), None)
        if index is None:
            models.append(model)
        else:
            models[index] = model
        object.__setattr__(self, "models", tuple(models))
        self._by_id[model.id] = model  # type: ignore[attr-defined]

    def remove(self, model_id: str) -> None:
        key = model_id.strip().lower()
        object.__setattr__(self, "models", tuple(m for m in self.models if m.id != key))
        self._by_id.pop(key, None)  # type: ignore[attr-defined]

    def apply(self, model_id: str, entry: dict[str, Any] | None) -> None:
        """One stored change: the model's whole new entry, or None when it was removed."""
        if entry is None:
            self.remove(model_id)
        else:
            self.put(entry_of(entry, "catalog change"))


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "name": str,
    "description": str,
    "family": str,
    "parameter_size": str,
    "download_bytes": int,
    "ram_bytes": int,
    "license": str,
    "price_cents": int,
    "currency": str,
}


def _entry(raw: Any, index: int, where: str) -> CatalogModel:
    label = f"{where}: entry {index + 1}"
    if not isinstance(raw, dict):
        raise CatalogError(f"{label} is not an object")
    if isinstance(raw.get("id"), str):
        label += f" ({raw['id']})"
    for name, kind in _FIELDS.items():
        if name not in raw:
            raise CatalogError(f"{label}: field '{name}' is missing")
        value = raw[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CatalogError(f"{label}: field '{name}' must be {'a whole number' if kind is int else 'text'}")
        if isinstance(value, str) and not value.strip():
            raise CatalogError(f"{label}: field '{name}' is empty")
    model_id = raw["id"]
    last = model_id.rsplit("/", 1)[-1]
    if not SAFE_MODEL_NAME.fullmatch(model_id) or ":" not in last:
        raise CatalogError(f"{label}: field 'id' must be an Ollama library name with a tag, such as llama3.2:3b")
    if raw["price_cents"] < 0:
        raise CatalogError(f"{label}: field 'price_cents' must be 0 (free) or more")
    if 0 < raw["price_cents"] < 50:
        raise CatalogError(f"{label}: field 'price_cents' must be 0 (free) or at least 50 (Stripe's minimum)")
    if not _CURRENCY.fullmatch(raw["currency"]):
        raise CatalogError(f"{label}: field 'currency' must be a lower-case ISO code such as usd")
    for name in ("download_bytes", "ram_bytes"):
        if raw[name] <= 0:
            raise CatalogError(f"{label}: field '{name}' must be greater than 0")
    if "featured" in raw and not isinstance(raw["featured"], bool):
        raise CatalogError(f"{label}: field 'featured' must be true or false")
    unknown = set(raw) - set(_FIELDS) - set(_OPTIONAL)
    if unknown:
        raise CatalogError(f"{label}: unknown field(s) {', '.join(sorted(unknown))}")
    return CatalogModel(**{**raw, "id": model_id.lower(), **_abilities(raw, label)})


_OPTIONAL = ("featured", "capabilities", "context_length", "quantization", "fallback")


def _abilities(raw: dict[str, Any], label: str) -> dict[str, Any]:
    """capabilities, context_length and quantization, checked (what the model can do, as Ollama says it)."""
    out: dict[str, Any] = {}
    if "capabilities" in raw:
        caps = raw["capabilities"]
        if (
            not isinstance(caps, list)
            or not caps
            or not all(isinstance(c, str) and c in CAPABILITIES for c in caps)
            or len(set(caps)) != len(caps)
        ):
            raise CatalogError(
                f"{label}: field 'capabilities' must be a non-empty list without repeats of {', '.join(CAPABILITIES)}"
            )
        out["capabilities"] = tuple(caps)
    if "context_length" in raw:
        ctx = raw["context_length"]
        if not isinstance(ctx, int) or isinstance(ctx, bool) or ctx < 1:
            raise CatalogError(f"{label}: field 'context_length' must be a whole number of tokens, at least 1")
    if "quantization" in raw:
        quant = raw["quantization"]
        if not isinstance(quant, str) or not _QUANTIZATION.fullmatch(quant):
            raise CatalogError(f"{label}: field 'quantization' must be Ollama's name for it, such as Q4_K_M or F16")
    if raw.get("fallback") is not None:
        out["fallback"] = _fallback(raw["fallback"], label)
    return out


def _fallback(raw: Any, label: str) -> Fallback:
    if not isinstance(raw, dict) or set(raw) != {"base_url", "model"}:
        raise CatalogError(f"{label}: field 'fallback' must be an object with exactly base_url and model")
    url, model = raw["base_url"], raw["model"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CatalogError(
            f"{label}: field 'fallback.base_url' must be an http(s) URL such as https://api.openai.com/v1"
        )
    if not isinstance(model, str) or not model.strip():
        raise CatalogError(f"{label}: field 'fallback.model' must be the model's name at that API")
    return Fallback(url.rstrip("/"), model.strip())


def entry_of(raw: Any, where: str = "catalog entry") -> CatalogModel:
    """One entry, validated as the file's are (CatalogError names the field), and no registry host."""
    model = _entry(raw, 0, where)
    head = model.id.split("/", 1)[0] if "/" in model.id else ""
    if "." in head or ":" in head or head == "localhost":
        raise CatalogError(f"{where}: field 'id' names a registry host ({head}); only Ollama library names are sold")
    return model


def parse(text: str, where: str = "catalog") -> Catalog:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{where} is not valid JSON: {exc}") from None
    entries = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f'{where} must be an object with a non-empty "models" list')
    models = tuple(_entry(raw, i, where) for i, raw in enumerate(entries))
    seen: set[str] = set()
    for m in models:
        if m.id in seen:
            raise CatalogError(f"{where}: model {m.id} is listed twice")
        seen.add(m.id)
    return Catalog(Path(where), models)


def load(path: Path | None = None) -> Catalog:
    """The catalog at `path` (default: the one shipped with the studio), validated."""
    path = Path(path) if path else DEFAULT_PATH
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"the catalog {path} cannot be read: {exc.strerror}; check STUDIO_CATALOG") from None
    catalog = parse(text, str(path))
    return Catalog(path, catalog.models)


@lru_cache(maxsize=4)
def cached(path: Path | None = None) -> Catalog:
    """`load`, once per path per process."""
    return load(path)
