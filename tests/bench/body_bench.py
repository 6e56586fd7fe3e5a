"""What decoding and checking a request body costs: /api/chat's, by its type (studio/runtime/bodies.py).

    .venv/bin/python -m tests.bench.body_bench [--number 20000]

For three /api/chat bodies (one question; a 10-turn conversation with options; the same with 200
turns), best of 5 rounds, microseconds per body:

- `json.loads`: the standard library's parse alone, the first step of the hand-written checks this
  replaced (the baseline: the old path cost this plus its checks);
- `msgspec untyped`: msgspec's parse into dicts, for scale;
- `typed decode`: `msgspec.json.decode(raw, type=ChatRequest)`, the body checked as it is parsed;
- `decode + conversation`: that, then what depends on the settings (`conversation.parse`): the
  whole cost of a chat body before the model is asked;
- `bad body -> 400`: a body whose 10th message has a wrong role, decoded until refused, with its
  message built (`bodies.refusal`).

Ratios are against `json.loads` in this same run.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable

import msgspec

from functions.chat.conversation import ChatRequest, parse
from studio.runtime import bodies
from studio.runtime.errors import BadRequest
from studio.runtime.settings import Settings

SETTINGS = Settings.from_env({}, chat_max_messages=256)


def conversation(turns: int) -> dict[str, object]:
    roles = ["user", "assistant"] * (turns // 2)
    return {
        "model": "tinyllama:latest",
        "messages": [{"role": r, "content": "Some words of one turn of the conversation. " * 6} for r in roles],
        "options": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 200, "stop": ["\n\n"]},
        "stream": True,
    }


BODIES: dict[str, dict[str, object]] = {
    "one question": {"model": "tinyllama:latest", "message": "Tell me a story."},
    "10 turns + options": conversation(10),
    "200 turns + options": conversation(200),
}


def refused(raw: bytes) -> None:
    try:
        bodies.decode(raw, ChatRequest)
    except BadRequest:
        return
    raise AssertionError("the bad body was accepted")


def best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20_000, help="bodies per round (fewer for the long one)")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.number = 20
    untyped = msgspec.json.Decoder()
    print(
        f"{'body':22} {'bytes':>7} {'json.loads':>11} {'msgspec untyped':>16} {'typed decode':>13} "
        f"{'decode + conversation':>22} {'bad body -> 400':>16}"
    )
    for name, body in BODIES.items():
        raw = json.dumps(body).encode()
        bad = dict(body)
        if "messages" in bad:
            bad["messages"] = [*body["messages"][:9], {"role": "robot", "content": "x"}]  # type: ignore[index]
        else:
            bad["message"] = 5
        bad_raw = json.dumps(bad).encode()
        n = max(200, args.number * 200 // max(len(raw), 200) // 4) if len(raw) > 5000 else args.number
        base = best_us(lambda raw=raw: json.loads(raw), n)  # type: ignore[misc]
        figures = [
            base,
            best_us(lambda raw=raw: untyped.decode(raw), n),  # type: ignore[misc]
            best_us(lambda raw=raw: bodies.decode(raw, ChatRequest), n),  # type: ignore[misc]
            best_us(lambda raw=raw: parse(bodies.decode(raw, ChatRequest), SETTINGS), n),  # type: ignore[misc]
            best_us(lambda bad_raw=bad_raw: refused(bad_raw), n),  # type: ignore[misc]
        ]
        cells = [f"{f:6.2f}us {f / base:4.2f}x" for f in figures]
        print(f"{name:22} {len(raw):>7} {cells[0]:>11} {cells[1]:>16} {cells[2]:>13} {cells[3]:>22} {cells[4]:>16}")


if __name__ == "__main__":
    main()
