"""The chat page: its empty state, conversations kept in the browser, copying, and a clear message for
every error the chat API returns (from the real studio where it can be caused, else replayed with the
API's own error bodies)."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.frontend.conftest import new_context
from tests.frontend.support import answers, install_for_everyone, send

STUDIO = {"skip_payment": True, "tokens_per_s": 40}
MODEL = "tinyllama:latest"  # free: every visitor may chat with it once it is installed


@pytest.fixture(scope="module")
def installed(studio):
    install_for_everyone(studio, MODEL)
    return MODEL


def test_without_an_installed_model_the_chat_points_to_the_marketplace(studio, page):
    page.goto(studio.url + "/chat")
    expect(page.get_by_role("heading", name="You don't own any installed models yet")).to_be_visible()
    expect(page.get_by_role("link", name="Browse the marketplace")).to_have_attribute("href", "/marketplace")
    expect(page.get_by_label("Message", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Send")).to_be_disabled()


def test_conversations_are_kept_in_the_browser_listed_reopened_and_deleted(studio, installed, page):
    page.goto(studio.url + "/chat")
    expect(page.get_by_role("heading", name="Chat with TinyLlama")).to_be_visible()
    send(page, "First question")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_role("heading", name="Chat with TinyLlama")).to_be_visible()
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    send(page, "Second question")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")

    conversations = page.locator("#conversations li")
    expect(conversations).to_have_count(2)
    expect(conversations.locator(".title")).to_have_text(["Second question", "First question"])

    page.reload()  # the open conversation comes back, and the list
    expect(conversations).to_have_count(2)
    expect(page.locator(".message.user .bubble")).to_have_text(["Second question"])
    page.get_by_role("button", name=re.compile("^First question")).click()
    expect(page.locator(".message.user .bubble")).to_have_text(["First question"])
    send(page, "A follow-up")  # a second turn in the same conversation
    expect(answers(page).nth(1).locator(".meta")).to_contain_text("tokens")
    expect(conversations.locator(".title")).to_have_text(["First question", "Second question"])

    page.get_by_role("button", name="Delete conversation: Second question").click()
    expect(conversations).to_have_count(1)
    page.get_by_role("button", name="Undo").click()
    expect(conversations).to_have_count(2)
    page.get_by_role("button", name="Delete conversation: Second question").click()
    page.reload()
    expect(conversations.locator(".title")).to_have_text(["First question"])


def test_the_last_turns_are_sent_as_the_conversation(studio, installed, page):
    page.goto(studio.url + "/chat")
    sent = []
    page.on("request", lambda r: r.url.endswith("/api/chat") and sent.append(json.loads(r.post_data)))
    send(page, "One")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    send(page, "Two")
    expect(answers(page).nth(1).locator(".meta")).to_contain_text("tokens")
    assert [m["role"] for m in sent[1]["messages"]] == ["user", "assistant", "user"]
    assert sent[1]["messages"][2] == {"role": "user", "content": "Two"}
    assert sent[1]["model"] == MODEL and sent[1]["stream"] is True


def test_shift_enter_makes_a_new_line_and_escape_stops(studio, installed, page):
    page.goto(studio.url + "/chat")
    box = page.get_by_label("Message", exact=True)
    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two, and make it long")
    expect(box).to_have_value("line one\nline two, and make it long")
    box.press("Enter")
    expect(page.locator(".message.user .bubble")).to_have_text("line one\nline two, and make it long")
    expect(answers(page).nth(0).locator(".bubble")).to_contain_text("on and on")
    page.keyboard.press("Escape")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("Stopped")


def test_code_and_answers_can_be_copied(studio, installed, browser, watch):
    ctx = new_context(browser, watch, permissions=["clipboard-read", "clipboard-write"])
    try:
        page = ctx.new_page()
        page.goto(studio.url + "/chat")
        send(page, "Some code please")
        answer = answers(page).nth(0)
        expect(answer.locator(".meta")).to_contain_text("tokens")
        answer.get_by_role("button", name="Copy code").click()
        expect(answer.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("() => navigator.clipboard.readText()") == 'def greet(name):\n    return f"Hello, {name}!"'
        answer.get_by_role("button", name="Copy answer").click()
        assert page.evaluate("() => navigator.clipboard.readText()").startswith("Sure! Here is **a short answer**")
    finally:
        ctx.close()


def test_ollama_being_down_is_explained_and_try_again_works(studio, installed, page, watch):
    watch.allow(r"status of 503")
    page.goto(studio.url + "/chat")
    expect(page.get_by_role("heading", name="Chat with TinyLlama")).to_be_visible()
    studio.call(studio.ollama.go_down)
    try:
        send(page, "Are you there?")
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("The model server is unavailable")
        expect(alert).to_contain_text("Ollama, which runs the models, cannot be reached")
    finally:
        studio.call(studio.ollama.come_back)
    alert.get_by_role("button", name="Try again").click()
    expect(alert).to_have_count(0)
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")


def test_an_error_in_the_middle_of_an_answer_keeps_what_was_written(studio, installed, page):
    page.goto(studio.url + "/chat")
    studio.call(lambda: studio.ollama.fail_next_chats(1, after_tokens=6))
    send(page, "Start answering, then fail")
    answer = answers(page).nth(0)
    expect(answer.locator(".meta")).to_contain_text("Cut short: the model failed to answer")
    expect(answer.locator(".bubble")).to_contain_text("Sure! Here is")


API_ERRORS = [  # (status, code, message as the chat function words it, headers, what the page adds)
    (
        403,
        "not_owned",
        "you do not own Llama 3.2 3B (llama3.2:3b); buy it in the marketplace to chat with it",
        {},
        "Buy it in the marketplace",
    ),
    (
        409,
        "not_installed",
        "llama3.2:3b is not installed on this server yet: install it and chat with it once the install has finished",
        {},
        "Install it in the marketplace",
    ),
    (
        429,
        "rate_limited",
        "too many chat requests: at most 20 a minute; try again in 7 s",
        {"Retry-After": "7"},
        "Try again in 7 s",
    ),
    (
        503,
        "ollama_busy",
        "Ollama is busy with other requests (its queue is full); try again in a few seconds",
        {"Retry-After": "5"},
        "Try again",
    ),
]


@pytest.mark.parametrize(("status", "code", "message", "headers", "action"), API_ERRORS, ids=[e[1] for e in API_ERRORS])
def test_each_chat_error_gets_a_clear_message(studio, installed, page, watch, status, code, message, headers, action):
    watch.allow(rf"status of {status}")
    page.route(
        "**/api/chat",
        lambda route: route.fulfill(status=status, json={"error": {"code": code, "message": message}}, headers=headers),
    )
    page.goto(studio.url + "/chat")
    expect(page.get_by_role("heading", name="Chat with TinyLlama")).to_be_visible()
    send(page, "Hello?")
    alert = page.get_by_role("alert")
    as_sentence = message[0].upper() + message[1:] + "."  # the server's words, written as a sentence
    expect(alert).to_contain_text(as_sentence)
    expect(page.locator("#chat-status")).to_have_text(f"No answer: {as_sentence}")  # no longer "... is answering"
    expect(alert.get_by_role("link", name=action).or_(alert.get_by_role("button", name=action))).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.locator(".message.user .bubble")).to_have_text(["Hello?"])  # the question stays
