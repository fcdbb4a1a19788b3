"""Telegram text + entities ⇄ Matrix HTML: every entity type both ways, UTF-16 offsets,
escaping, Element's HTML, and properties (round trip, allowlist, splitting, robustness)."""

from __future__ import annotations

import re
from collections import defaultdict
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.networks.telegram.formatting import (
    MatrixText,
    matrix_to_telegram,
    split_entities,
    telegram_to_matrix,
)
from bridge.networks.telegram.text import utf16_len

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ent(type_: str, offset: int, length: int, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "offset": offset, "length": length, **extra}


def at(text: str, needle: str, type_: str, **extra: Any) -> dict[str, Any]:
    """An entity over the first occurrence of ``needle``, offsets in UTF-16 like Telegram's."""
    i = text.index(needle)
    return ent(type_, utf16_len(text[:i]), utf16_len(needle), **extra)


def covered(text: str, entity: dict[str, Any]) -> str:
    """The text an entity covers (UTF-16 offsets)."""
    units = text.encode("utf-16-le")
    return units[2 * entity["offset"] : 2 * (entity["offset"] + entity["length"])].decode("utf-16-le")


def html_of(text: str, *entities: dict[str, Any], **kwargs: Any) -> str | None:
    return telegram_to_matrix(text, list(entities), **kwargs).html


# --- Telegram → Matrix: entity types ----------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "extra", "expected"),
    [
        ("bold", {}, "<strong>word</strong>"),
        ("italic", {}, "<em>word</em>"),
        ("underline", {}, "<u>word</u>"),
        ("strikethrough", {}, "<del>word</del>"),
        ("spoiler", {}, "<span data-mx-spoiler>word</span>"),
        ("code", {}, "<code>word</code>"),
        ("pre", {}, "<pre><code>word\n</code></pre>"),
        ("pre", {"language": "python"}, '<pre><code class="language-python">word\n</code></pre>'),
        ("pre", {"language": 'c++"><script>'}, '<pre><code class="language-c++script">word\n</code></pre>'),
        (
            "text_link",
            {"url": "https://example.com/?a=1&b=2"},
            '<a href="https://example.com/?a=1&amp;b=2">word</a>',
        ),
        ("blockquote", {}, "<blockquote>word</blockquote>"),
        ("expandable_blockquote", {}, "<blockquote>word</blockquote>"),
    ],
)
def test_formatting_entity_types(type_: str, extra: dict[str, Any], expected: str) -> None:
    assert telegram_to_matrix("word", [ent(type_, 0, 4, **extra)]) == MatrixText("word", expected)


@pytest.mark.parametrize(
    ("text", "type_", "expected"),
    [
        ("https://example.com/x", "url", '<a href="https://example.com/x">https://example.com/x</a>'),
        ("example.com", "url", '<a href="https://example.com">example.com</a>'),
        ("HTTP://EXAMPLE.COM", "url", '<a href="HTTP://EXAMPLE.COM">HTTP://EXAMPLE.COM</a>'),
        ("a@example.com", "email", '<a href="mailto:a@example.com">a@example.com</a>'),
        ("+1 (555) 123-4567", "phone_number", '<a href="tel:+15551234567">+1 (555) 123-4567</a>'),
        ("@durov", "mention", '<a href="https://t.me/durov">@durov</a>'),
    ],
)
def test_link_like_entities(text: str, type_: str, expected: str) -> None:
    assert html_of(text, ent(type_, 0, utf16_len(text))) == expected


@pytest.mark.parametrize("type_", ["hashtag", "cashtag", "bot_command", "custom_emoji", "no_such_type"])
def test_plain_entities_leave_plain_text(type_: str) -> None:
    assert telegram_to_matrix("#tag $USD /start 😀", [ent(type_, 0, 4), ent(type_, 17, 2)]) == MatrixText(
        "#tag $USD /start 😀", None
    )


def test_custom_emoji_is_its_fallback_text_inside_other_formatting() -> None:
    text = "hi 😀"
    assert html_of(
        text, ent("bold", 0, 5), ent("custom_emoji", 3, 2, custom_emoji_id="5368324170671202286")
    ) == ("<strong>hi 😀</strong>")


def test_text_mention_uses_the_mention_url() -> None:
    text = "hey Alice!"
    mention = at(text, "Alice", "text_mention", user={"id": 42, "is_bot": False, "first_name": "Alice"})
    link = "https://matrix.to/#/@telegram_42:example.com"
    seen: list[dict[str, Any]] = []

    def mention_url(user: dict[str, Any]) -> str | None:
        seen.append(user)
        return link

    assert html_of(text, mention, mention_url=mention_url) == f'hey <a href="{link}">Alice</a>!'
    assert seen == [mention["user"]]
    assert telegram_to_matrix(text, [mention]) == MatrixText(text, None)
    assert telegram_to_matrix(text, [mention], mention_url=lambda user: None) == MatrixText(text, None)


def test_mention_that_is_not_a_username_stays_plain() -> None:
    assert html_of("@bad name", ent("mention", 0, 9)) is None


def test_plain_text_has_no_html_but_keeps_its_newlines() -> None:
    assert telegram_to_matrix("line one\nline <two>", []) == MatrixText("line one\nline <two>", None)
    assert telegram_to_matrix("x", None) == MatrixText("x", None)


def test_newlines_become_br_except_in_pre() -> None:
    text = "a\nb\ncode\nblock"
    assert html_of(text, at(text, "b", "bold"), at(text, "code\nblock", "pre")) == (
        "a<br><strong>b</strong><br><pre><code>code\nblock\n</code></pre>"
    )


def test_body_is_the_telegram_text() -> None:
    text = "see here"
    assert telegram_to_matrix(text, [at(text, "here", "text_link", url="https://x.y")]).body == text


# --- nesting and overlap ----------------------------------------------------------------------


def test_nested_entities_nest() -> None:
    text = "one two three"
    assert (
        html_of(text, ent("italic", 0, 13), at(text, "two", "bold"))
        == "<em>one <strong>two</strong> three</em>"
    )


def test_same_span_nests_with_links_outside_code() -> None:
    assert html_of("x", ent("code", 0, 1), ent("text_link", 0, 1, url="https://a.b"), ent("bold", 0, 1)) == (
        '<a href="https://a.b"><strong><code>x</code></strong></a>'
    )


def test_overlapping_entities_are_split_into_well_formed_html() -> None:
    assert (
        html_of("abcdefgh", ent("bold", 0, 5), ent("italic", 3, 5))
        == "<strong>abc<em>de</em></strong><em>fgh</em>"
    )


def test_inline_crossing_a_quote_is_split_not_the_quote() -> None:
    text = "ab\ncd"
    assert html_of(text, ent("bold", 0, 4), ent("blockquote", 3, 2)) == (
        "<strong>ab<br></strong><blockquote><strong>c</strong>d</blockquote>"
    )


def test_link_inside_link_keeps_only_the_first() -> None:
    text = "abcdef"
    assert html_of(text, ent("text_link", 0, 6, url="https://a.b"), ent("url", 2, 2)) == (
        '<a href="https://a.b">abcdef</a>'
    )


# --- UTF-16 offsets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("👍🏽 ok", "👍🏽 ok"),
        ("👍🏽 ok", "ok"),
        ("x 👨‍👩‍👧‍👦 family", "👨‍👩‍👧‍👦"),
        ("x 👨‍👩‍👧‍👦 family", "family"),
        ("日本語のテキスト", "テキスト"),
        ("café ok", "ok"),
        ("cafe\u0301 ok", "e\u0301"),
        ("🇩🇪🇫🇷 flags", "🇫🇷"),
        ("𝕏 math 𝕐", "𝕐"),
    ],
)
def test_utf16_offsets_land_right(text: str, needle: str) -> None:
    rendered = html_of(text, at(text, needle, "bold"))
    assert rendered is not None
    assert re.fullmatch(r"(.*)<strong>(.*)</strong>(.*)", rendered).groups() == tuple(text.partition(needle))
    back, entities = matrix_to_telegram(text, rendered)
    assert back == text
    assert [covered(back, e) for e in entities] == [needle]


def test_entity_splitting_a_surrogate_pair_widens_to_the_character() -> None:
    text = "a😀b"
    assert html_of(text, ent("bold", 2, 1)) == "a<strong>😀</strong>b"  # starts mid-pair
    assert html_of(text, ent("bold", 0, 2)) == "<strong>a😀</strong>b"  # ends mid-pair


@pytest.mark.parametrize(
    "entity",
    [
        ent("bold", -3, 5),
        ent("bold", 2, 100),
        ent("bold", 50, 3),
        ent("bold", 2, -1),
        ent("bold", 2, 0),
        {"type": "bold", "offset": "1", "length": 2},
        {"type": "bold", "offset": True, "length": 2},
        {"type": None, "offset": 0, "length": 2},
        {"offset": 0, "length": 2},
        {"type": "text_link", "offset": 0, "length": 2, "url": 7},
        {"type": "text_mention", "offset": 0, "length": 2, "user": "nope"},
        {"type": "pre", "offset": 0, "length": 2, "language": ["x"]},
    ],
)
def test_malformed_entities_are_clamped_or_dropped(entity: dict[str, Any]) -> None:
    result = telegram_to_matrix("abcd", [entity], mention_url=lambda user: "https://matrix.to/#/@x:y")
    assert result.body == "abcd"
    if result.html is not None:
        # A code block or quote in mid-line becomes its own line, nothing else changes.
        assert matrix_to_telegram(result.body, result.html)[0].replace("\n", "") == "abcd"


def test_clamped_examples() -> None:
    assert html_of("abcd", ent("bold", -3, 5)) == "<strong>ab</strong>cd"
    assert html_of("abcd", ent("bold", 2, 100)) == "ab<strong>cd</strong>"
    assert html_of("abcd", ent("bold", 50, 3)) is None


# --- escaping ---------------------------------------------------------------------------------


def test_text_is_escaped() -> None:
    text = '<script>alert(1)</script> &amp; "q"'
    rendered = html_of(text, ent("bold", 0, 1))
    assert rendered == '<strong>&lt;</strong>script&gt;alert(1)&lt;/script&gt; &amp;amp; "q"'
    assert matrix_to_telegram(text, rendered) == (text, [ent("bold", 0, 1)])


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>",
        "vbscript:x",
        "file:///etc/passwd",
    ],
)
def test_unsafe_text_link_is_text_only(url: str) -> None:
    text = "<script>alert(1)</script>"
    assert telegram_to_matrix(text, [ent("text_link", 0, 8, url=url)]) == MatrixText(text, None)


def test_link_url_is_escaped_in_the_attribute() -> None:
    rendered = html_of("x", ent("text_link", 0, 1, url='https://a.b/"><script>alert(1)</script>'))
    assert rendered == '<a href="https://a.b/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">x</a>'
    assert_allowlisted(rendered)


def test_url_entity_with_an_unsafe_scheme_is_text() -> None:
    assert html_of("ftp://x.y", ent("url", 0, 9)) is None
    assert html_of("javascript:alert(1)", ent("url", 0, 19)) == (
        '<a href="https://javascript:alert(1)">javascript:alert(1)</a>'
    )


def test_spaces_survive_html_collapsing() -> None:
    text = "a  b\n  c\td "
    rendered = html_of(text, ent("bold", 0, 1))
    assert rendered == "<strong>a</strong>&nbsp;&nbsp;b<br>&nbsp;&nbsp;c&#9;d&nbsp;"
    assert matrix_to_telegram(text, rendered) == ("a  b\n  c\td", [ent("bold", 0, 1)])


# --- Matrix → Telegram ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<b>x</b>", ent("bold", 0, 1)),
        ("<strong>x</strong>", ent("bold", 0, 1)),
        ("<i>x</i>", ent("italic", 0, 1)),
        ("<em>x</em>", ent("italic", 0, 1)),
        ("<u>x</u>", ent("underline", 0, 1)),
        ("<ins>x</ins>", ent("underline", 0, 1)),
        ("<s>x</s>", ent("strikethrough", 0, 1)),
        ("<del>x</del>", ent("strikethrough", 0, 1)),
        ("<strike>x</strike>", ent("strikethrough", 0, 1)),
        ("<span data-mx-spoiler>x</span>", ent("spoiler", 0, 1)),
        ('<span data-mx-spoiler="why">x</span>', ent("spoiler", 0, 1)),
        ("<font data-mx-spoiler>x</font>", ent("spoiler", 0, 1)),
        ("<code>x</code>", ent("code", 0, 1)),
        ("<pre>x</pre>", ent("pre", 0, 1)),
        ("<pre><code>x\n</code></pre>", ent("pre", 0, 1)),
        ('<pre><code class="language-rust">x\n</code></pre>', ent("pre", 0, 1, language="rust")),
        ('<a href="https://example.com">x</a>', ent("text_link", 0, 1, url="https://example.com")),
        ('<a href="mailto:a@b.c">x</a>', ent("text_link", 0, 1, url="mailto:a@b.c")),
        ("<blockquote>x</blockquote>", ent("blockquote", 0, 1)),
        ("<h1>x</h1>", ent("bold", 0, 1)),
        ("<h6>x</h6>", ent("bold", 0, 1)),
    ],
)
def test_matrix_tags(html: str, expected: dict[str, Any]) -> None:
    assert matrix_to_telegram("x", html) == ("x", [expected])


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<span>x</span>", "x"),
        ('<span data-mx-color="#ff0000">x</span>', "x"),
        ("<sup>x</sup>", "x"),
        ("<unknown-tag>x</unknown-tag>", "x"),
        ('<a href="javascript:alert(1)">x</a>', "x"),
        ("<a>x</a>", "x"),
        ("<script>alert(1)</script>x", "x"),
    ],
)
def test_matrix_tags_without_entities(html: str, text: str) -> None:
    assert matrix_to_telegram("body", html) == (text, [])


def test_no_html_means_the_body() -> None:
    assert matrix_to_telegram("a <b>  x  \n", None) == ("a <b>  x  \n", [])


def test_matrix_to_links_keep_only_their_text() -> None:
    html = (
        'Hi <a href="https://matrix.to/#/@alice:example.com">Alice</a>, '
        'see <a href="https://matrix.to/#/!r:x/$e">this</a>'
    )
    assert matrix_to_telegram("", html) == ("Hi Alice, see this", [])


def test_element_reply_fallback_is_dropped() -> None:
    html = (
        '<mx-reply><blockquote><a href="https://matrix.to/#/!room:example.com/$event">In reply to</a> '
        '<a href="https://matrix.to/#/@bob:example.com">@bob:example.com</a><br>original <b>text</b>'
        "</blockquote></mx-reply>the <b>answer</b>"
    )
    assert matrix_to_telegram("> <@bob:example.com> original\n\nthe answer", html) == (
        "the answer",
        [ent("bold", 4, 6)],
    )


def test_element_paragraphs_and_line_breaks() -> None:
    html = "<p>first line<br />\nsecond line</p>\n<p>next <em>paragraph</em></p>\n"
    text = "first line\nsecond line\n\nnext paragraph"
    assert matrix_to_telegram("", html) == (text, [at(text, "paragraph", "italic")])


def test_whitespace_collapses_like_a_browser() -> None:
    assert matrix_to_telegram("", "  a \n\t b  <b> c </b> d <br>  e  ") == ("a b c d\ne", [ent("bold", 4, 2)])


def test_nbsp_reference_is_a_space_but_a_literal_nbsp_stays() -> None:
    assert matrix_to_telegram("", "a&nbsp; b&#160;c\u00a0d") == ("a  b c\u00a0d", [])


def test_entities_are_unescaped() -> None:
    assert matrix_to_telegram("", "&lt;b&gt; &amp;amp; &quot; &#x1F600; &#128512; &copy &ampx") == (
        '<b> &amp; " 😀 😀 © &x',
        [],
    )


def test_headings_are_bold_lines() -> None:
    assert matrix_to_telegram("", "<h1>Title</h1>text<h2>Sub</h2><p>para</p>") == (
        "Title\ntext\nSub\n\npara",
        [ent("bold", 0, 5), ent("bold", 11, 3)],
    )


def test_lists() -> None:
    html = (
        '<ul>\n<li>one</li>\n<li>two\n<ol start="3">\n<li>three</li>\n<li><b>four</b></li>\n</ol>\n</li>\n'
        "<li><p>five</p></li>\n</ul>\n<p>after</p>"
    )
    text = "• one\n• two\n  3. three\n  4. four\n• five\n\nafter"
    assert matrix_to_telegram("", html) == (text, [at(text, "four", "bold")])


def test_ordered_list_defaults_to_one() -> None:
    assert matrix_to_telegram("", "<ol><li>a</li><li>b</li></ol>") == ("1. a\n2. b", [])


def test_hr_and_img() -> None:
    html = 'a<hr>b <img src="mxc://x/y" alt=":cat:"> <img src="mxc://x/z">'
    assert matrix_to_telegram("", html) == ("a\n———\nb :cat: [image]", [])


def test_pre_keeps_whitespace_and_drops_the_final_newline() -> None:
    html = 'before<pre><code class="language-python">def f():\n    return  1\n</code></pre>after'
    text = "before\ndef f():\n    return  1\nafter"
    assert matrix_to_telegram("", html) == (
        text,
        [at(text, "def f():\n    return  1", "pre", language="python")],
    )


def test_pre_ignores_the_newline_right_after_the_tag() -> None:
    assert matrix_to_telegram("", "<pre>\nx\n\n</pre>") == ("x", [ent("pre", 0, 1)])


def test_no_entities_inside_code() -> None:
    assert matrix_to_telegram("", "<code>a<b>b</b></code><pre><i>c</i></pre>") == (
        "ab\nc",
        [ent("code", 0, 2), ent("pre", 3, 1)],
    )


def test_nested_blockquotes_give_one_entity() -> None:
    assert matrix_to_telegram("", "<blockquote>a<blockquote>b</blockquote></blockquote>") == (
        "a\nb",
        [ent("blockquote", 0, 3)],
    )


def test_trailing_whitespace_is_stripped_and_empty_entities_dropped() -> None:
    assert matrix_to_telegram("", "<p>a</p><p><b></b></p><p><i> </i></p><br><br>") == ("a", [])
    assert matrix_to_telegram("", "<b>a\u3000</b>") == ("a", [ent("bold", 0, 1)])


def test_spaces_at_entity_edges_belong_where_the_html_puts_them() -> None:
    assert matrix_to_telegram("", "a <b>b</b> c") == ("a b c", [ent("bold", 2, 1)])
    assert matrix_to_telegram("", "a<b> b </b>c") == ("a b c", [ent("bold", 1, 3)])
    assert matrix_to_telegram("", "<b>a </b><br>c") == ("a\nc", [ent("bold", 0, 1)])


def test_entities_sorted_by_offset_then_longest_first() -> None:
    _, entities = matrix_to_telegram("", "<i>a<b>b</b></i><u><s>c</s>d</u>")
    assert entities == [
        ent("italic", 0, 2),
        ent("bold", 1, 1),
        ent("underline", 2, 2),
        ent("strikethrough", 2, 1),
    ]


def test_utf16_offsets_from_html() -> None:
    text, entities = matrix_to_telegram("", "👍🏽 <b>ok</b> 漢字 <i>👨‍👩‍👧</i>")
    assert text == "👍🏽 ok 漢字 👨‍👩‍👧"
    assert [covered(text, e) for e in entities] == ["ok", "👨‍👩‍👧"]


@pytest.mark.parametrize(
    "html",
    [
        "<b>unclosed",
        "</b>stray",
        "<b><i>x</b></i>",
        "<p><p>x",
        "<li>x",
        "&#99999999999;x",
        "&#xD800;",
        "<mx-reply>x",
        "<",
        "&",
    ],
)
def test_malformed_html_is_read(html: str) -> None:
    text, entities = matrix_to_telegram("", html)
    assert isinstance(text, str)
    check_entities(text, entities)


# --- split_entities ---------------------------------------------------------------------------


def test_split_carries_entities_into_pieces() -> None:
    text = "aaaa bbbb cccc"
    pieces = split_entities(text, [ent("bold", 2, 10, extra="kept")], limit=6)
    assert pieces == [
        ("aaaa ", [ent("bold", 2, 3, extra="kept")]),
        ("bbbb ", [ent("bold", 0, 5, extra="kept")]),
        ("cccc", [ent("bold", 0, 2, extra="kept")]),
    ]


def test_split_counts_characters_and_rebases_utf16() -> None:
    text = "😀😀😀\n😀😀"
    pieces = split_entities(text, [ent("italic", 4, 6)], limit=4)
    assert [p for p, _ in pieces] == ["😀😀😀\n", "😀😀"]
    assert pieces[0][1] == [ent("italic", 4, 3)]
    assert pieces[1][1] == [ent("italic", 0, 3)]


def test_split_short_text_is_one_piece() -> None:
    assert split_entities("hi", [ent("bold", 0, 2)]) == [("hi", [ent("bold", 0, 2)])]


def test_split_rejects_a_useless_limit() -> None:
    with pytest.raises(ValueError):
        split_entities("hi", [], limit=0)


# --- property helpers -------------------------------------------------------------------------

ALLOWED_TAGS = {
    "strong": set(),
    "em": set(),
    "u": set(),
    "del": set(),
    "span": {"data-mx-spoiler"},
    "code": {"class"},
    "pre": set(),
    "a": {"href"},
    "blockquote": set(),
    "br": set(),
}
SAFE_HREF = re.compile(r"(?i)^(https?|mailto|tg|tel):")
BARE_AMPERSAND = re.compile(r"&(?!(?:amp|lt|gt|quot|nbsp|#\d+|#x[0-9a-fA-F]+);)")


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def unknown_decl(self, data: str) -> None:
        raise AssertionError(f"declaration in output: {data!r}")

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"comment in output: {data!r}")

    def handle_pi(self, data: str) -> None:
        raise AssertionError(f"processing instruction in output: {data!r}")


def assert_allowlisted(rendered: str) -> None:
    collector = _TagCollector()
    collector.feed(rendered)
    collector.close()
    for tag, attrs in collector.tags:
        assert tag in ALLOWED_TAGS, tag
        for name, value in attrs:
            assert name in ALLOWED_TAGS[tag], (tag, name)
            if name == "href":
                assert value is not None and SAFE_HREF.match(value), value
            if name == "class":
                assert value is not None and re.fullmatch(r"language-[A-Za-z0-9_+-]+", value), value
    assert not BARE_AMPERSAND.search(rendered)
    text_outside_tags = re.sub(r"<[^<>]*>", "", rendered)
    assert "<" not in text_outside_tags and ">" not in text_outside_tags


def check_entities(text: str, entities: list[dict[str, Any]]) -> None:
    total = utf16_len(text)
    for e in entities:
        assert e["length"] > 0 and e["offset"] >= 0 and e["offset"] + e["length"] <= total, e
    assert entities == sorted(entities, key=lambda e: (e["offset"], -e["length"]))


def normalise(entities: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Order-insensitive entity set, identical entities that touch or overlap merged into one."""
    runs: dict[tuple[Any, ...], list[tuple[int, int]]] = defaultdict(list)
    for e in entities:
        if e["length"] > 0:
            key = (e["type"], e.get("url"), e.get("language") or None)
            runs[key].append((e["offset"], e["offset"] + e["length"]))
    out: set[tuple[Any, ...]] = set()
    for key, spans in runs.items():
        spans.sort()
        start, end = spans[0]
        for s, e in spans[1:]:
            if s <= end:
                end = max(end, e)
            else:
                out.add((*key, start, end))
                start, end = s, e
        out.add((*key, start, end))
    return out


SPECIAL_CHARS = [
    " ",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r",
    "\xa0",
    "<",
    ">",
    "&",
    "&amp;",
    '"',
    "'",
    "<b>",
    "</pre>",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🇩🇪",
    "😀",
    "漢字",
    "e\u0301",
    "\u200d",
    "\x00",
    "\u3000",
    "a",
    "b",
    "word",
]
text_chars = st.one_of(
    st.sampled_from(SPECIAL_CHARS),
    st.characters(exclude_categories=["Cs"]),
)
texts = st.lists(text_chars, max_size=25).map("".join)
URLS = st.sampled_from(
    [
        "https://example.com",
        "http://a.b/?x=1&y=<2>",
        'https://q.uo/"te"',
        "mailto:a@b.c",
        "tg://resolve?domain=x",
        "tel:+123",
    ]
)
INLINE_TYPES = ["bold", "italic", "underline", "strikethrough", "spoiler", "text_link", "code"]


@st.composite
def inline_entities(draw: st.DrawFn, length: int) -> list[tuple[str, int, int, dict[str, Any]]]:
    """Non-crossing inline entities over ``[0, length)`` code points, following Telegram's rules
    (nothing inside code, no link inside a link)."""
    if length == 0:
        return []
    accepted: list[tuple[str, int, int, dict[str, Any]]] = []
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, length - 1))
        end = draw(st.integers(start + 1, length))
        type_ = draw(st.sampled_from(INLINE_TYPES))
        extra = {"url": draw(URLS)} if type_ == "text_link" else {}
        ok = True
        for other, s, e, _ in accepted:
            crossing = (
                s < end and start < e and not (s <= start and end <= e) and not (start <= s and e <= end)
            )
            inside = s <= start and end <= e
            outside = start <= s and e <= end
            overlap = s < end and start < e
            if crossing:
                ok = False
            elif overlap and ((other == "code" and inside) or (type_ == "code" and outside)):
                ok = False
            elif overlap and type_ == "text_link" and other == "text_link":
                ok = False
        if ok:
            accepted.append((type_, start, end, extra))
    return accepted


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    """Telegram text built from lines of plain text, quotes and code blocks, the way clients
    produce them: block entities cover whole lines, inline ones stay inside their block."""
    kinds = draw(st.lists(st.sampled_from(["plain", "plain", "blockquote", "pre"]), min_size=1, max_size=4))
    text = ""
    spans: list[tuple[str, int, int, dict[str, Any]]] = []
    for i, kind in enumerate(kinds):
        if i:
            text += "\n"
        segment = draw(texts if kind == "plain" else texts.filter(bool))
        base = len(text)
        if kind == "pre":
            language = draw(st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_+-]{1,8}", fullmatch=True)))
            spans.append(("pre", base, base + len(segment), {"language": language} if language else {}))
        else:
            if kind == "blockquote":
                spans.append(("blockquote", base, base + len(segment), {}))
            for type_, s, e, extra in draw(inline_entities(len(segment))):
                spans.append((type_, base + s, base + e, extra))
        text += segment
    text = text.rstrip()  # Matrix → Telegram strips the end, so no Telegram text ends in whitespace
    entities = []
    for type_, s, e, extra in spans:
        e = min(e, len(text))
        if e > s:
            entities.append(ent(type_, utf16_len(text[:s]), utf16_len(text[s:e]), **extra))
    return text, entities


ANY_TYPES = [
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "code",
    "pre",
    "text_link",
    "url",
    "email",
    "phone_number",
    "mention",
    "text_mention",
    "blockquote",
    "expandable_blockquote",
    "custom_emoji",
    "hashtag",
    "cashtag",
    "bot_command",
    "nonsense",
]
wild_values = st.one_of(
    st.integers(-50, 80), st.none(), st.text(max_size=3), st.booleans(), st.floats(allow_nan=True)
)
wild_entities = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(ANY_TYPES),
                "offset": st.integers(-50, 80),
                "length": st.integers(-50, 80),
            },
            optional={
                "url": st.one_of(URLS, st.text(max_size=20), st.integers()),
                "language": st.one_of(st.text(max_size=10), st.integers()),
                "user": st.one_of(st.fixed_dictionaries({"id": st.integers()}), st.text(max_size=3)),
            },
        ),
        st.dictionaries(st.sampled_from(["type", "offset", "length", "url"]), wild_values),
    ),
    max_size=10,
)


def text_mention_url(user: dict[str, Any]) -> str | None:
    return f"https://matrix.to/#/@telegram_{user.get('id')}:example.com" if user.get("id", 0) % 2 else None


# --- properties -------------------------------------------------------------------------------


@PROPERTY
@given(documents())
def test_round_trip_keeps_text_and_entities(document: tuple[str, list[dict[str, Any]]]) -> None:
    text, entities = document
    rendered = telegram_to_matrix(text, entities)
    back_text, back_entities = matrix_to_telegram(rendered.body, rendered.html)
    assert back_text == text
    assert normalise(back_entities) == normalise(entities)
    check_entities(back_text, back_entities)


@PROPERTY
@given(texts, wild_entities)
def test_html_stays_inside_the_allowlist(text: str, entities: list[dict[str, Any]]) -> None:
    rendered = telegram_to_matrix(text, entities, mention_url=text_mention_url)
    assert rendered.body == text
    if rendered.html is not None:
        assert_allowlisted(rendered.html)
        assert rendered.html.count("&lt;") >= text.count("<")
        assert rendered.html.count("&gt;") >= text.count(">")
        assert rendered.html.count("&amp;") >= text.count("&")


@PROPERTY
@given(texts, wild_entities)
def test_never_raises_on_malformed_entities(text: str, entities: list[dict[str, Any]]) -> None:
    rendered = telegram_to_matrix(text, entities, mention_url=text_mention_url)
    back_text, back_entities = matrix_to_telegram(rendered.body, rendered.html)
    check_entities(back_text, back_entities)
    pieces = split_entities(text, entities, limit=7)
    assert "".join(p for p, _ in pieces) == text
    for piece, piece_entities in pieces:
        check_entities(piece, piece_entities)


HTML_PARTS = [
    "<b>",
    "</b>",
    "<i>",
    "<p>",
    "</p>",
    "<br>",
    "<pre>",
    "</pre>",
    "<code>",
    "</code>",
    "<li>",
    "<ul>",
    "</ul>",
    "<ol start=x>",
    "<mx-reply>",
    "</mx-reply>",
    "<a href='https://x'>",
    "</a>",
    "<blockquote>",
    "</blockquote>",
    "<img>",
    "<hr>",
    "&nbsp;",
    "&#9;",
    "&#x0;",
    "&",
    "<",
    " ",
    "\n",
]


@PROPERTY
@given(st.lists(st.one_of(st.sampled_from(HTML_PARTS), text_chars), max_size=30).map("".join))
def test_any_html_reads_into_valid_entities(html: str) -> None:
    text, entities = matrix_to_telegram("body", html)
    assert text == text.rstrip()
    check_entities(text, entities)


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], int]:
    chars = st.one_of(st.sampled_from(["\n", " ", "😀", "漢", "a"]), text_chars)
    text = draw(st.lists(chars, max_size=60).map("".join))
    entities = []
    for i in range(draw(st.integers(0, 6))):
        if not text:
            break
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        type_ = draw(st.sampled_from(INLINE_TYPES))
        entities.append(ent(type_, utf16_len(text[:start]), utf16_len(text[start:end]), id=i))
    return text, entities, draw(st.integers(1, 20))


@PROPERTY
@given(split_cases())
def test_split_keeps_every_character_and_entity(case: tuple[str, list[dict[str, Any]], int]) -> None:
    text, entities, limit = case
    pieces = split_entities(text, entities, limit)
    assert "".join(piece for piece, _ in pieces) == text
    assert all(len(piece) <= limit for piece, _ in pieces)
    assert all(piece for piece, _ in pieces) or text == ""
    carried: dict[int, str] = defaultdict(str)
    for piece, piece_entities in pieces:
        check_entities(piece, piece_entities)
        for e in piece_entities:
            carried[e["id"]] += covered(piece, e)
    assert carried == {e["id"]: covered(text, e) for e in entities}
