"""The markdown renderer for model answers (frontend/assets/js/markdown.js), run in the browser as the chat
page loads it: whatever the model writes, its HTML characters come out as text and only http(s) links
survive."""

from __future__ import annotations

import pytest

STUDIO = {"skip_payment": True}

RENDER = """async (text) => {
  const { renderMarkdown } = await import('/assets/js/markdown.js');
  const box = document.createElement('div');
  box.append(renderMarkdown(text));
  return box.innerHTML;
}"""
LINK = 'rel="noopener noreferrer nofollow" target="_blank"'
COPY = '<button type="button" class="button small ghost copy">Copy code</button>'

CASES = {
    "html is text": (
        "<script>alert(1)</script> and <img src=x onerror=alert(1)>",
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; and &lt;img src=x onerror=alert(1)&gt;</p>",
    ),
    "only http(s) links": (
        "[click](javascript:alert(1)) [data](data:text/html,hi) [site](https://example.com/a?b=1&c=2) "
        "see https://example.org/x.",
        f'<p>click data <a href="https://example.com/a?b=1&amp;c=2" {LINK}>site</a> see '
        f'<a href="https://example.org/x" {LINK}>https://example.org/x</a>.</p>',
    ),
    "inline styles": (
        "**bold** and *it* and `co<de>` and snake_case_name and __b__ ~~gone~~ \\*not em\\*",
        "<p><strong>bold</strong> and <em>it</em> and <code>co&lt;de&gt;</code> and snake_case_name and "
        "<strong>b</strong> <del>gone</del> *not em*</p>",
    ),
    "fenced code keeps its characters": (
        "```html\n<b>hi</b>\n```\nafter",
        '<div class="codeblock"><div class="codeblock-bar"><span class="codeblock-lang">html</span>'
        f'{COPY}</div><pre tabindex="0"><code data-lang="html">&lt;b&gt;hi&lt;/b&gt;</code></pre></div><p>after</p>',
    ),
    "an unclosed fence (still streaming) is code": (
        "text\n```js\nlet x = 1;",
        '<p>text</p><div class="codeblock"><div class="codeblock-bar"><span class="codeblock-lang">js</span>'
        f'{COPY}</div><pre tabindex="0"><code data-lang="js">let x = 1;</code></pre></div>',
    ),
    "lists, nested and numbered": (
        "- a\n  - b\n- c\n\n3. x\n4. y",
        '<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul><ol start="3"><li>x</li><li>y</li></ol>',
    ),
    "headings, quotes, rules, tables": (
        "# Title\n\n> quoted\n\n---\n\n| a | b |\n|---|--:|\n| 1 | <i>2</i> |",
        '<h3>Title</h3><blockquote><p>quoted</p></blockquote><hr><div class="table-scroll" tabindex="0"><table>'
        '<thead><tr><th scope="col">a</th><th scope="col" class="align-right">b</th></tr></thead><tbody><tr>'
        '<td>1</td><td class="align-right">&lt;i&gt;2&lt;/i&gt;</td></tr></tbody></table></div>',
    ),
    "line breaks and paragraphs": ("line one\nline two\n\npara two", "<p>line one<br>line two</p><p>para two</p>"),
    "attribute injection through a link": (
        '[x](https://example.com/"onmouseover="alert(1))',
        f'<p><a href="https://example.com/%22onmouseover=%22alert(1)" {LINK}>x</a></p>',
    ),
}


@pytest.fixture(scope="module")
def renderer(studio, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(studio.url + "/chat")
    yield lambda text: page.evaluate(RENDER, text)
    context.close()


@pytest.mark.parametrize("case", list(CASES))
def test_markdown_renders_as_dom_with_every_model_character_as_text(renderer, case):
    text, expected = CASES[case]
    assert renderer(text) == expected
