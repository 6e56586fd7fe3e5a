"""The chat function's projection of who owns what, from purchase events: idempotent and order-safe."""

from __future__ import annotations

from functions.chat.entitlements import owns, record_purchase, restore_purchase, revoke_purchase
from studio.runtime.database import RUNTIME_MIGRATIONS, Database
from tests.functions.chat.conftest import chat


async def test_purchases_grant_revocations_take_back_and_redelivery_changes_nothing(db_target) -> None:
    db = Database(db_target)
    await db.open()
    try:
        assert chat.migrations is not None
        await db.migrate([RUNTIME_MIGRATIONS, chat.migrations or RUNTIME_MIGRATIONS])

        await record_purchase(db, "p1", "v_a", "Llama3.2:3b")
        await record_purchase(db, "p1", "v_a", "llama3.2:3b")  # redelivered
        assert await owns(db, "v_a", "llama3.2:3b") and not await owns(db, "v_b", "llama3.2:3b")

        await revoke_purchase(db, "p1", "v_a", "llama3.2:3b")
        await record_purchase(db, "p1", "v_a", "llama3.2:3b")  # a late redelivery cannot undo the refund
        assert not await owns(db, "v_a", "llama3.2:3b")

        await revoke_purchase(db, "p2", "v_a", "phi3:mini")  # the refund arrives before the purchase
        await record_purchase(db, "p2", "v_a", "phi3:mini")
        assert not await owns(db, "v_a", "phi3:mini")

        await record_purchase(db, "p3", "v_a", "llama3.2:3b")  # bought again
        assert await owns(db, "v_a", "llama3.2:3b")
    finally:
        await db.close()


async def test_suspensions_and_restorations_follow_event_time_not_arrival(db_target) -> None:
    db = Database(db_target)
    await db.open()
    try:
        await db.migrate([RUNTIME_MIGRATIONS, chat.migrations or RUNTIME_MIGRATIONS])
        t = [f"2026-01-01T00:00:0{i}Z" for i in range(4)]
        await record_purchase(db, "p1", "v_a", "mistral:7b", t[0])

        await revoke_purchase(db, "p1", "v_a", "mistral:7b", t[1])  # purchase.suspended: a dispute opened
        assert not await owns(db, "v_a", "mistral:7b")
        await restore_purchase(db, "p1", "v_a", "mistral:7b", t[2])  # purchase.restored: the dispute won
        assert await owns(db, "v_a", "mistral:7b")
        await revoke_purchase(db, "p1", "v_a", "mistral:7b", t[1])  # the suspension redelivered late
        assert await owns(db, "v_a", "mistral:7b")

        await restore_purchase(db, "p2", "v_a", "phi3:mini", t[3])  # a restoration seen before its refund
        await revoke_purchase(db, "p2", "v_a", "phi3:mini", t[2])
        assert await owns(db, "v_a", "phi3:mini")
    finally:
        await db.close()
