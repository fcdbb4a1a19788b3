"""WhatsApp markers ⇄ Matrix HTML: every mapping both ways, WhatsApp's word-boundary rules,
escaping of client text, splitting, and properties (verbatim body, round trip, robustness)."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events import RichText
from bridge.networks.whatsapp.formatting import (
    MAX_CAPTION,
    MAX_TEXT,
    matrix_to_whatsapp,
    split_text,
    whatsapp_to_matrix,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OUR_TAGS = re.compile(r'</?(?:strong|em|del|code|pre|blockquote|ul|ol|li|br)(?: start="\d+")?>')


def to_wa(html: str, body: str = "") -> str:
    return matrix_to_whatsapp(RichText(body, html))


def html_of(text: str) -> str | None:
    return whatsapp_to_matrix(text).html


def tags(html: str | None) -> set[str]:
    return set(re.findall(r"<([a-z0-9]+)", html or "")) - {"br"}


# --- Matrix → WhatsApp ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<strong>x</strong>", "*x*"),
        ("<b>x</b>", "*x*"),
        ("<em>x</em>", "_x_"),
        ("<i>x</i>", "_x_"),
        ("<del>x</del>", "~x~"),
        ("<s>x</s>", "~x~"),
        ("<strike>x</strike>", "~x~"),
        ("a <code>x = 1</code> b", "a `x = 1` b"),
        ("<pre>x</pre>", "```x```"),
        ('<pre><code class="language-py">def f():\n    pass\n</code></pre>', "```def f():\n    pass```"),
        ("<blockquote>a<br>b</blockquote>", "> a\n> b"),
        ("<ul><li>a</li><li>b</li></ul>", "- a\n- b"),
        ("<ol><li>a</li><li>b</li></ol>", "1. a\n2. b"),
        ('<ol start="7"><li>a</li><li>b</li></ol>', "7. a\n8. b"),
        ('<a href="https://example.com">site</a>', "site (https://example.com)"),
        ('<a href="https://example.com">https://example.com</a>', "https://example.com"),
        ('<a href="mailto:a@b.c">a@b.c</a>', "a@b.c"),
        ('hi <a href="https://matrix.to/#/@alice:example.org">Alice</a>!', "hi Alice!"),
        ("a<br>b", "a\nb"),
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("<h1>Title</h1>text", "*Title*\ntext"),
        ("<h3>Title</h3><p>text</p>", "*Title*\n\ntext"),
        ("<mx-reply><blockquote>quoted <b>x</b></blockquote></mx-reply>answer", "answer"),
        ("<marquee>t</marquee> <span data-mx-spoiler>s</span>", "t s"),
        ("&lt;b&gt; &amp; &quot;q&quot; &#x1F600; &nbsp;", '<b> & "q" 😀'),
        ("x &amp", "x &"),
        ("<b><i>x</i></b>", "*_x_*"),
        ("<i>a <b>b</b></i>", "_a *b*_"),
    ],
)
def test_matrix_mappings(html: str, expected: str) -> None:
    assert to_wa(html) == expected


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("a<b> x </b>b", "a *x* b"),  # WhatsApp does not format "* x *": spaces go outside
        ("a<b> </b>b", "a b"),  # empty formatting is dropped
        ("a<i></i>b", "ab"),
        ("<b>a<br>b</b>", "*a*\n*b*"),  # spans do not cross lines on WhatsApp
        ("<b><b>a</b> b</b>", "*a b*"),  # no "**a* b*"
        ("<code><b>x</b></code>", "`x`"),  # nothing is formatted inside code
        ("<code>a`b</code>", "```a`b```"),
        ("a<br><br><br><br>b", "a\n\nb"),  # 3+ newlines collapse
        ("<p>a</p>\n\n<p>b</p>\n<p></p><p></p><p>c</p>", "a\n\nb\n\nc"),
        ("a   \n  b<br><br>  ", "a b"),  # HTML whitespace collapses, nothing trails
        ("<pre>a\n\n\n\nb   </pre>", "```a\n\n\n\nb   ```"),  # except in code blocks
        ("<blockquote><p>a</p><p>b</p></blockquote>c", "> a\n>\n> b\nc"),
        ("<blockquote>q<pre>x\ny</pre></blockquote>", "> q\n> ```x\n> y```"),
        ("<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>", "- a\n  - b\n- c"),
        ('<ol start="x"><li>a</li></ol>', "1. a"),
        ('<ol start="\u00b2"><li>a</li></ol>', "1. a"),
        ("<li>stray</li>", "- stray"),
        ('<a href="javascript:alert(1)">click</a>', "click"),
        ('<a href="https://matrix.to/#/!room:s/$ev">see</a>', "see"),
        ("<b><a href='https://e.com'>e</a></b>", "*e (https://e.com)*"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
        ("a<hr>b", "a\n———\nb"),
        ('<img alt="cat" src="mxc://x/y"> <img src="mxc://x/z">', "cat"),
        ("<script>alert(1)</script><style>p{}</style>ok", "ok"),
        ("<b>unclosed <i>tags", "*unclosed _tags_*"),
        ("stray</b></p> end", "stray end"),
        ("a\x00b\x02c\x05", "abc"),  # our layout sentinels cannot be injected
    ],
)
def test_matrix_edge_cases(html: str, expected: str) -> None:
    assert to_wa(html) == expected


def test_matrix_without_html_is_sent_verbatim() -> None:
    body = "*not bold*  _kept_ ~as~ `typed`\n\n\n> even this\n- and this "
    assert matrix_to_whatsapp(RichText(body)) == body


def test_matrix_element_reply_and_paragraphs() -> None:
    html = (
        '<mx-reply><blockquote><a href="https://matrix.to/#/!r:s/$e">In reply to</a> '
        '<a href="https://matrix.to/#/@c:s">@c:s</a><br>question</blockquote></mx-reply>'
        "<p>Hello <strong>Ana</strong>,</p>\n<p>see <em>the list</em>:</p>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n"
    )
    assert to_wa(html) == "Hello *Ana*,\n\nsee _the list_:\n\n- one\n- two"


def test_matrix_deep_nesting_does_not_crash() -> None:
    html = "<b><i>" * 5000 + "x" + "</i></b>" * 5000
    assert to_wa(html) == "*_x_*"
    assert to_wa("<blockquote>" * 3000 + "q").endswith("> q")


def test_limits() -> None:
    assert (MAX_TEXT, MAX_CAPTION) == (4096, 1024)


# --- WhatsApp → Matrix ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*bold*", "<strong>bold</strong>"),
        ("_italic_", "<em>italic</em>"),
        ("~gone~", "<del>gone</del>"),
        ("`code`", "<code>code</code>"),
        ("use ```mono``` here", "use <code>mono</code> here"),
        ("```block```", "<pre><code>block\n</code></pre>"),
        ("```\nline 1\n  line 2\n```", "<pre><code>line 1\n  line 2\n</code></pre>"),
        ("```a\nb```\nafter", "<pre><code>a\nb\n</code></pre>after"),
        ("> quoted", "<blockquote>quoted</blockquote>"),
        ("> a\n>\n> b", "<blockquote>a<br><br>b</blockquote>"),
        ("* one\n- two", "<ul><li>one</li><li>two</li></ul>"),
        ("1. one\n2. two", "<ol><li>one</li><li>two</li></ol>"),
        ("3. three\n4. four", '<ol start="3"><li>three</li><li>four</li></ol>'),
        ("1. a\n5. b", '<ol><li>a</li></ol><ol start="5"><li>b</li></ol>'),
        ("*a*\nb", "<strong>a</strong><br>b"),
        ("intro\n> q\nafter", "intro<blockquote>q</blockquote>after"),
        ("intro\n\n> q\n\nafter", "intro<br><br><blockquote>q</blockquote><br>after"),
        ("*_both_*", "<strong><em>both</em></strong>"),
        ("_*~all~*_", "<em><strong><del>all</del></strong></em>"),
        ("(*a*), _b_!", "(<strong>a</strong>), <em>b</em>!"),
        ("*multi word bold*", "<strong>multi word bold</strong>"),
        ("> *quoted bold*", "<blockquote><strong>quoted bold</strong></blockquote>"),
        ("- item `x`", "<ul><li>item <code>x</code></li></ul>"),
        ("`*not bold*`", "<code>*not bold*</code>"),
        ("*a `b*` c*", "<strong>a <code>b*</code> c</strong>"),
        ("*<script>alert(1)</script>*", "<strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>"),
        ("`<b>&amp;</b>`", "<code>&lt;b&gt;&amp;amp;&lt;/b&gt;</code>"),
        ("*https://e.com/a_b_c*", "<strong>https://e.com/a_b_c</strong>"),
    ],
)
def test_whatsapp_mappings(text: str, expected: str) -> None:
    result = whatsapp_to_matrix(text)
    assert result.body == text
    assert result.html == expected


@pytest.mark.parametrize(
    "text",
    [
        "plain text\nwith lines",
        "a * x * b",  # markers must hug the text
        "* x *",  # ... and "* " at line start needs a non-blank item: "x *" is one, see below
        "snake_case_name and __init__",  # markers inside words, doubled markers
        "2*3*4 = 24",
        "**markdown bold**",
        "*a*b",  # closer followed by a letter
        "~5 min",
        "unclosed *bold",
        "https://e.com/_a_/~b~",  # no formatting inside URLs
        "``",
        "``````",
        "```\n```",
        "-no space",
        "1.no space",
        ">no space",
        ">",
        "- ",
        "",
    ],
)
def test_whatsapp_unformatted(text: str) -> None:
    result = whatsapp_to_matrix(text)
    assert result.body == text
    if text == "* x *":
        assert result.html == "<ul><li>x *</li></ul>"
    else:
        assert result.html is None


def test_whatsapp_unmatched_fence_is_literal() -> None:
    assert html_of("```open\nno close\n*b*") == "```open<br>no close<br><strong>b</strong>"
    assert html_of("```open\nxy") is None
    # A multi-line span must fill its lines to be a block; the fences then pair line by line.
    assert html_of("```a\nb``` c\n```d```") == "```a<br>b``` c<pre><code>d\n</code></pre>"


def test_whatsapp_long_hostile_line_is_fast() -> None:
    text = "*a _b ~c " * 5000 + "`" * 3001
    result = whatsapp_to_matrix(text)
    assert result.body == text and result.html is not None


# --- splitting --------------------------------------------------------------------------------


def test_split_prefers_paragraphs_then_lines_then_words() -> None:
    para = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 5
    assert split_text(para, 100) == [para]
    assert split_text(para, 95) == ["a" * 60, "b" * 30 + "\n" + "c" * 5]
    lines = "a" * 40 + "\n\n" + "b" * 40 + "\n" + "c" * 40
    assert split_text(lines, 100) == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40]
    words = " ".join(["word"] * 30)
    assert all(len(p) <= 50 and not p.startswith(" ") and not p.endswith(" ") for p in split_text(words, 50))
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]


def test_split_never_cuts_a_surrogate_pair_or_a_combined_character() -> None:
    pair = "\ud83d\ude00"  # 😀 as UTF-16 code units, e.g. from a surrogatepass decode
    parts = split_text("a" + pair * 10, 4)
    assert all(not p.startswith("\ude00") and len(p) <= 4 for p in parts)
    assert "".join(parts) == "a" + pair * 10
    assert split_text("aaae\u0301b", 4) == ["aaa", "e\u0301b"]
    with pytest.raises(ValueError):
        split_text("abc", 1)


# --- properties -------------------------------------------------------------------------------

WA_PIECES = [
    "*",
    "_",
    "~",
    "`",
    "```",
    "> ",
    "- ",
    "* ",
    "1. ",
    "\n",
    " ",
    "<",
    ">",
    "&",
    "a",
    "bc",
    "<script>",
    "http://e.com/",
]
wa_text = st.lists(st.one_of(st.sampled_from(WA_PIECES), st.text(max_size=5)), max_size=40).map("".join)


class _Balance(HTMLParser):
    """Checks our HTML is well formed: every tag closed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ok = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "br":
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.ok &= bool(self.stack) and self.stack.pop() == tag


@PROPERTY
@given(wa_text)
def test_whatsapp_body_is_verbatim_and_client_text_never_becomes_markup(text: str) -> None:
    result = whatsapp_to_matrix(text)
    assert result.body == text
    if result.html is None:
        return
    rest = OUR_TAGS.sub("", result.html)
    assert "<" not in rest and ">" not in rest  # every '<' of the client is '&lt;'
    assert unescape(rest).count("<") == text.count("<")
    assert "<script" not in result.html.lower()
    letters = sorted(c for c in unescape(rest) if c.isalpha())
    assert letters == sorted(c for c in text if c.isalpha())  # no text lost or invented
    checker = _Balance()
    checker.feed(result.html)
    checker.close()
    assert checker.ok and not checker.stack


@PROPERTY
@given(st.text())
def test_matrix_plain_body_is_verbatim(body: str) -> None:
    assert matrix_to_whatsapp(RichText(body, None)) == body


HTML_PIECES = [
    "<b>",
    "</b>",
    "<i>",
    "<em>",
    "</em>",
    "<code>",
    "</code>",
    "<pre>",
    "</pre>",
    "<p>",
    "</p>",
    "<br>",
    "<blockquote>",
    "</blockquote>",
    "<ul>",
    "<li>",
    "</li>",
    "</ul>",
    '<a href="https://x">',
    "</a>",
    "<mx-reply>",
    "</mx-reply>",
    "&amp;",
    "&lt;",
    " ",
    "\n",
    "x",
    "\x00",
    "\x02",
    "0",
    "\x03",
]


@PROPERTY
@given(st.lists(st.one_of(st.sampled_from(HTML_PIECES), st.text(max_size=4)), max_size=40).map("".join))
def test_matrix_arbitrary_html_never_crashes_or_leaks_sentinels(html: str) -> None:
    out = to_wa(html)
    assert not re.search(r"[\x00-\x08]", out)
    assert out == out.rstrip() and "\n\n\n" not in out.replace("```", "")  # pre may keep blank lines


word = st.text(alphabet="abcdefghij", min_size=1, max_size=6)
INLINE = {"strong": "*", "em": "_", "del": "~", "code": "`"}


@st.composite
def simple_html(draw: st.DrawFn) -> str:
    """Documents of words, some wrapped in one or two formats, or one block construct."""
    inline: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        w = " ".join(draw(st.lists(word, min_size=1, max_size=3)))
        chosen = draw(st.lists(st.sampled_from(["strong", "em", "del"]), max_size=2, unique=True))
        if draw(st.booleans()):
            chosen = ["code"]
        for tag in chosen:
            w = f"<{tag}>{w}</{tag}>"
        inline.append(w)
    line = " ".join(inline)
    kind = draw(st.sampled_from(["line", "quote", "ul", "ol", "pre"]))
    if kind == "line":
        return line
    if kind == "quote":
        return f"<blockquote>{line}</blockquote>"
    if kind == "pre":
        return f"<p>{line}</p><pre><code>{draw(word)}\n{draw(word)}\n</code></pre>"
    items = "".join(f"<li>{draw(word)}</li>" for _ in range(draw(st.integers(1, 3))))
    return f"<{kind}><li>{line}</li>{items}</{kind}>"


@PROPERTY
@given(simple_html())
def test_round_trip_keeps_formatting(html: str) -> None:
    wa = to_wa(html)
    back = whatsapp_to_matrix(wa)
    assert tags(back.html) == tags(html) - {"p"}, (html, wa, back.html)


tokens = st.lists(
    st.sampled_from(["a", "bb", "ccc", " ", "  ", "\n", "\n\n", "\ud83d\ude00", "e\u0301", "\u200d", "\t"]),
    max_size=60,
).map("".join)


@PROPERTY
@given(tokens, st.integers(2, 30))
def test_split_text_parts_fit_and_rejoin(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(len(p) <= limit for p in parts)
    assert parts or text.isspace()
    if len(text) <= limit:
        assert parts == [text]
        return
    pos = 0
    for i, part in enumerate(parts):
        assert part.strip() and not (i and part[0].isspace())  # split whitespace is dropped
        found = text.find(part, pos)
        assert found == pos or (found > pos and text[pos:found].isspace())
        pos = found + len(part)
        if pos < len(text):  # the cut is not inside a surrogate pair
            assert not ("\ud800" <= text[pos - 1] <= "\udbff" and "\udc00" <= text[pos] <= "\udfff")
    assert text[pos:].strip() == ""
