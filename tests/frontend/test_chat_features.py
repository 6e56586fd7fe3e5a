"""The chat page's everyday features: images for a vision model, a thinking model's collapsed thoughts,
regenerate, edit and resend, per-conversation settings, export, import and search."""

from __future__ import annotations

import base64
import json
import re

import pytest
from playwright.sync_api import expect

from tests.doubles.ollama import DEFAULT_THINKING
from tests.frontend.conftest import new_context
from tests.frontend.support import answers, install_for_everyone, send
from tests.support import wait_sync

STUDIO = {"skip_payment": True, "tokens_per_s": 200}
FREE = "tinyllama:latest"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def installed(studio):
    install_for_everyone(studio, FREE)
    return FREE


def own(page, studio, model: str) -> None:
    """Buy `model` as this page's visitor (test mode) and wait until the server has installed it."""
    page.goto(studio.url + "/")
    assert page.request.post(f"{studio.url}/api/models/purchase/{model}").status == 200

    def installed() -> bool:
        models = page.request.get(f"{studio.url}/api/models").json()["models"]
        return next(m for m in models if m["id"] == model)["install"]["state"] == "installed"

    wait_sync(installed, timeout=30, interval=0.1, message=f"{model} installed")


def last_chat(studio) -> dict:
    return studio.call(lambda: studio.ollama.chat_requests[-1])


def chats(studio) -> int:
    return studio.call(lambda: len(studio.ollama.chat_requests))


def test_a_vision_model_is_shown_an_attached_image(studio, installed, page):
    own(page, studio, "llava:7b")
    page.goto(studio.url + "/chat?model=llava:7b")
    expect(page.get_by_role("heading", name="Chat with LLaVA 7B")).to_be_visible()
    attach = page.get_by_role("button", name="Attach images")
    expect(attach).to_be_visible()
    page.locator("#image-input").set_input_files({"name": "dot.png", "mimeType": "image/png", "buffer": PNG})
    expect(page.get_by_role("list", name="Attached images").locator("img")).to_have_count(1)

    send(page, "What is in this picture?")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    expect(page.locator(".message.user").get_by_role("list", name="Images sent").locator("img")).to_have_count(1)
    expect(page.get_by_role("list", name="Attached images")).to_be_hidden()
    sent = last_chat(studio)["messages"][-1]
    assert sent["content"] == "What is in this picture?" and base64.b64decode(sent["images"][0]) == PNG

    page.reload()  # images stay with the conversation in this browser
    expect(page.locator(".message.user .thumbnails img")).to_have_count(1)
    page.get_by_label("Model").select_option(FREE)  # no vision: no attachment button
    expect(attach).to_be_hidden()


def test_a_thinking_models_thoughts_are_collapsed_above_the_answer_and_not_copied(studio, installed, browser, watch):
    ctx = new_context(browser, watch, permissions=["clipboard-read", "clipboard-write"])
    try:
        page = ctx.new_page()
        own(page, studio, "deepseek-r1:7b")
        page.goto(studio.url + "/chat?model=deepseek-r1:7b")
        send(page, "Hello there")
        answer = answers(page).nth(0)
        expect(answer.locator(".meta")).to_contain_text("tokens")
        thought = answer.locator("details.thought")
        expect(thought.locator("summary")).to_have_text(re.compile(r"^Thought for \d+ s$"))
        assert thought.evaluate("el => el.open") is False
        expect(answer.locator(".bubble")).not_to_contain_text(DEFAULT_THINKING)
        thought.locator("summary").click()
        expect(thought.locator(".thought-text")).to_have_text(DEFAULT_THINKING)
        answer.get_by_role("button", name="Copy answer").click()
        copied = page.evaluate("() => navigator.clipboard.readText()")
        assert copied.startswith("Sure! Here is") and DEFAULT_THINKING not in copied
        page.reload()
        expect(answers(page).nth(0).locator("details.thought summary")).to_have_text(re.compile(r"^Thought for"))
    finally:
        ctx.close()


def test_regenerate_and_edit_and_resend_replace_the_later_turns(studio, installed, page):
    page.goto(studio.url + "/chat")
    send(page, "First question")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    before = chats(studio)
    answers(page).nth(0).get_by_role("button", name="Regenerate").click()
    expect(answers(page)).to_have_count(1)
    expect(answers(page).nth(0).get_by_role("button", name="Regenerate")).to_be_visible()
    assert chats(studio) == before + 1
    assert last_chat(studio)["messages"] == [{"role": "user", "content": "First question"}]

    send(page, "Second question")
    expect(answers(page)).to_have_count(2)
    expect(answers(page).nth(1).locator(".meta")).to_contain_text("tokens")
    expect(answers(page).nth(0).get_by_role("button", name="Regenerate")).to_have_count(0)  # only the last
    page.locator(".message.user").nth(0).get_by_role("button", name="Edit this message").click()
    box = page.get_by_label("Edit message")
    box.fill("An edited question")
    page.get_by_role("button", name="Send edited message").click()
    expect(page.locator(".message.user .bubble")).to_have_text(["An edited question"])
    expect(answers(page)).to_have_count(1)
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    assert last_chat(studio)["messages"] == [{"role": "user", "content": "An edited question"}]
    expect(page.locator("#conversations .title").nth(0)).to_have_text("An edited question")


def test_settings_are_sent_and_kept_with_the_conversation(studio, installed, page):
    page.goto(studio.url + "/chat")
    page.locator("#chat-settings summary").click()
    page.get_by_label("System prompt").fill("Answer in French.")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("Max tokens").fill("50")
    page.get_by_label("Max tokens").blur()
    send(page, "Bonjour")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    sent = last_chat(studio)
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Bonjour"},
    ]
    assert sent["options"]["temperature"] == 0.3 and sent["options"]["num_predict"] == 50

    page.reload()
    expect(page.get_by_label("System prompt")).to_have_value("Answer in French.")
    expect(page.get_by_label("Max tokens")).to_have_value("50")
    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_label("System prompt")).to_have_value("")


def test_export_markdown_and_json_then_import_and_search(studio, installed, page, tmp_path):
    page.goto(studio.url + "/chat")
    send(page, "Tell me about exports")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")

    with page.expect_download() as md:
        page.get_by_role("button", name="Export Markdown").click()
    text = open(md.value.path()).read()
    assert md.value.suggested_filename == "tell-me-about-exports.md"
    assert text.startswith("# Tell me about exports") and "## You\n\nTell me about exports" in text
    assert "## TinyLlama" in text
    with page.expect_download() as js:
        page.get_by_role("button", name="Export JSON").click()
    doc = json.loads(open(js.value.path()).read())
    assert doc["format"] == "local-ai-studio.conversation" and doc["conversation"]["model"] == FREE
    assert [m["role"] for m in doc["conversation"]["messages"]] == ["user", "assistant"]

    doc["conversation"]["title"] = "A copy from elsewhere"
    page.locator("#import-file").set_input_files(
        {"name": "copy.json", "mimeType": "application/json", "buffer": json.dumps(doc).encode()}
    )
    conversations = page.locator("#conversations li")
    expect(conversations.locator(".title").nth(0)).to_have_text("A copy from elsewhere")
    expect(page.locator(".message.user .bubble")).to_have_text(["Tell me about exports"])
    page.locator("#import-file").set_input_files(
        {"name": "bad.json", "mimeType": "application/json", "buffer": b'{"not": "a conversation"}'}
    )
    expect(page.locator("#undo")).to_contain_text("not a conversation exported from Local AI Studio")

    page.get_by_label("Search conversations").fill("elsewhere")
    expect(conversations).to_have_count(1)
    page.get_by_label("Search conversations").fill("exports")  # the text of the messages is searched too
    expect(conversations).to_have_count(2)
    page.get_by_label("Search conversations").fill("nothing like this")
    expect(page.get_by_text("No conversation matches this search.")).to_be_visible()


def test_the_oldest_turns_are_left_out_when_the_context_is_full_and_the_page_says_so_once(studio, installed, page):
    page.goto(studio.url + "/chat")  # TinyLlama reads 2K tokens
    page.locator("#chat-settings summary").click()
    page.get_by_label("System prompt").fill("Be brief.")
    page.get_by_label("System prompt").blur()
    send(page, "word " * 1500)  # about 1,900 tokens: alone, it is sent
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    assert len(last_chat(studio)["messages"]) == 2
    note = page.locator(".context-note")
    expect(note).to_have_count(0)

    send(page, "And now?")
    expect(answers(page).nth(1).locator(".meta")).to_contain_text("tokens")
    expect(note).to_have_count(1)
    expect(note).to_contain_text("its oldest messages are left out")
    assert last_chat(studio)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "And now?"},
    ]
    send(page, "Once more")
    expect(answers(page).nth(2).locator(".meta")).to_contain_text("tokens")
    expect(note).to_have_count(1)  # said once
    assert last_chat(studio)["messages"][0] == {"role": "system", "content": "Be brief."}


def test_images_can_be_pasted_or_dropped_and_other_files_are_refused(studio, installed, page):
    own(page, studio, "llava:7b")
    page.goto(studio.url + "/chat?model=llava:7b")
    expect(page.get_by_role("button", name="Attach images")).to_be_visible()
    attached = page.get_by_role("list", name="Attached images").locator("img")
    give = """([kind, type, bytes]) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], "picture", { type }));
        const target = kind === "paste" ? document.getElementById("prompt") : document.getElementById("composer");
        const event = kind === "paste"
          ? new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true })
          : new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true });
        target.dispatchEvent(event);
    }"""
    page.evaluate(give, ["paste", "image/png", list(PNG)])
    expect(attached).to_have_count(1)
    page.evaluate(give, ["drop", "image/png", list(PNG)])
    expect(attached).to_have_count(2)
    page.evaluate(give, ["drop", "image/svg+xml", list(b"<svg/>")])
    expect(page.locator(".attach-note")).to_contain_text("is not a PNG, JPEG, WebP or GIF image")
    expect(attached).to_have_count(2)
    page.get_by_role("button", name="Remove image picture").nth(0).click()
    expect(attached).to_have_count(1)
    send(page, "Two views?")
    expect(answers(page).nth(0).locator(".meta")).to_contain_text("tokens")
    assert len(last_chat(studio)["messages"][-1]["images"]) == 1
