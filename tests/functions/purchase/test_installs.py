"""The marketplace's install states: the newest fact wins, whether stored or only seen live yet."""

from __future__ import annotations

from events.catalog import InstallCompleted, InstallProgressed, InstallStarted
from functions.purchase.installs import InstallBoard


def stored(state: str, event_time: str) -> dict:
    return {
        "model": "llama3.2:3b",
        "state": state,
        "install_id": "ins_1",
        "reason": None,
        "will_retry": 0,
        "retry_in_s": None,
        "event_time": event_time,
    }


def test_an_install_seen_live_shows_before_the_durable_record_applies_it() -> None:
    board = InstallBoard()
    board.saw(
        InstallCompleted(install_id="ins_1", model="llama3.2:3b", digest="d", size_bytes=1), "2026-01-01T00:00:05.000Z"
    )

    view = board.view("llama3.2:3b", stored("pulling", "2026-01-01T00:00:01.000Z"))

    assert view["state"] == "installed" and view["updated_at"] == "2026-01-01T00:00:05.000Z"


def test_a_late_live_event_never_overrides_a_newer_stored_state() -> None:
    board = InstallBoard()
    board.saw(InstallStarted(install_id="ins_1", model="llama3.2:3b", attempt=1), "2026-01-01T00:00:01.000Z")

    assert board.view("llama3.2:3b", stored("installed", "2026-01-01T00:00:05.000Z"))["state"] == "installed"


def test_progress_shows_on_a_pull_in_progress() -> None:
    board = InstallBoard()
    board.saw(InstallStarted(install_id="ins_1", model="llama3.2:3b", attempt=1), "2026-01-01T00:00:01.000Z")
    board.remember_progress(
        InstallProgressed(
            install_id="ins_1",
            model="llama3.2:3b",
            phase="downloading",
            completed_bytes=50,
            total_bytes=200,
            percent=25.0,
            bytes_per_s=10.0,
            eta_s=15.0,
        )
    )

    view = board.view("llama3.2:3b", None)

    assert (view["state"], view["percent"], view["eta_s"]) == ("pulling", 25.0, 15.0)
