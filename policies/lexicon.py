"""Lexicons for supervision: the words and phrases a compliance officer wants to see in review.

A lexicon is a named list of *terms*. The grammar of a term, compiled once when the policy is
parsed (:func:`compile_term`)::

    term   := phrase (NEAR/n phrase)*
    phrase := word+                  words matched one after another
    word   := letters-or-digits ['*']  '*' at the end: any word starting so (at least 3 characters)

``A NEAR/n B`` matches when A and B occur with at most ``n`` other words between them, in
either order (1 <= n <= 20); ``A NEAR/n B NEAR/m C`` chains: B near A, C near B. Matching is
on *normalised words*, so it ignores case (casefold: 'ß' matches 'ss'), accents (NFKD with
the combining marks dropped: 'Rückgabe' matches 'ruckgabe'), the apostrophe's spelling and
invisible characters inside words. A word is a run of letters and digits; an apostrophe inside
a word is dropped ("don't", "don’t" and "dont" are one word), and any other character
separates words ("risk-free" is the two words "risk free", "12%" is "12").

Exclusions (``exclude``) use the same grammar and cancel a hit they overlap or that they
precede by at most :data:`EXCLUDE_WINDOW` words: "no guarantee*" keeps "there is no
guarantee of returns" out of review while "I guarantee a 12% return" still hits.

Matching is built for the common case, a message that hits nothing. When the policy is parsed,
each term is filed under one of its words (its *anchor*: the word fewest terms share, not a
common word) and all anchors are compiled into one trie-shaped regular expression. A message is
normalised and searched with it, in C; only a message containing an anchor is split into words,
and only the terms filed under the anchors it contains are evaluated. Where a hit is placed in
the original text (and its excerpt) is worked out only for messages that hit.

Pure: no I/O, no clock, stdlib only. The one piece of state is a bounded memo of which
characters are combining marks, which changes no result.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "DIRECTIONS",
    "EXCLUDE_WINDOW",
    "LANGUAGES",
    "LEXICON_ACTIONS",
    "MAX_NEAR",
    "MIN_PREFIX",
    "Lexicon",
    "LexiconHit",
    "LexiconIndex",
    "Term",
    "TermError",
    "Word",
    "compile_term",
    "excerpt",
    "language_of",
    "normalize_words",
]

#: Which messages a lexicon scans: client → company, company → client, or both.
DIRECTIONS = ("inbound", "outbound", "both")
#: What a hit does: tell the reviewers, or also hold an outbound message until one releases it.
LEXICON_ACTIONS = ("alert", "hold")
#: The largest NEAR distance: beyond a sentence, "near" stops meaning anything.
MAX_NEAR = 20
#: The shortest prefix a wildcard may follow: "ab*" would match far too many words.
MIN_PREFIX = 3
#: An exclusion ending at most this many words before a hit cancels it ("not ... guarantee").
EXCLUDE_WINDOW = 3

#: ISO 639-1 language codes, the ones networks report (Telegram's language_code, WhatsApp's).
LANGUAGES = frozenset(
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv "
    "dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig "
    "ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh "
    "mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru "
    "rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug "
    "uk ur uz ve vi vo wa wo xh yi yo za zh zu".split()
)

_EXAMPLE = '"guarantee* NEAR/3 return*"'


class TermError(ValueError):
    """A term that does not follow the grammar; the message says what is wrong, then (after
    '; ') how to write it, ready to follow a key path."""


# --------------------------------------------------------------------------------------------
# Normalisation: one pipeline for terms and messages, so they always agree


#: Apostrophe look-alikes become "'"; invisible characters someone could put inside a word
#: ("guar\u200bantee") are removed.
_TRANSLATE = {
    **{cp: "'" for cp in (0x2019, 0x2018, 0x02BC, 0xFF07, 0x00B4, 0x2032, 0x02B9)},
    **{cp: None for cp in (0x00AD, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x180E)},
}
#: A word: letters and digits (not '_', which joins words in handles and file names).
_TOKEN = re.compile(r"[^\W_]+")
_INNER_APOSTROPHE = re.compile(r"(?<=[^\W_])'(?=[^\W_])")
_SPAN = re.Match.span


class _MarkTable(dict[int, int | None]):
    """A ``str.translate`` table dropping combining marks (canonical combining class > 0),
    filled in as characters are met: looking a character up is then a C dict look-up, and
    nothing is computed for the million code points no message uses. At most
    ``_MARK_CACHE`` entries are kept, so no text can make it grow without bound."""

    def __missing__(self, cp: int) -> int | None:
        value = None if unicodedata.combining(chr(cp)) else cp
        if len(self) < _MARK_CACHE:
            self[cp] = value
        return value


_MARK_CACHE = 20_000
_MARKS = _MarkTable()
#: Text stretches that are plain ASCII (the common case even in German: most letters).
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")


def _fold(text: str) -> str:
    """Case, accents and look-alikes folded away; the same per character as for a whole text,
    so offsets can be mapped back."""
    return unicodedata.normalize("NFKD", text.translate(_TRANSLATE)).casefold().translate(_MARKS)


def _normalize(text: str) -> str:
    """The text as matching sees it. ASCII, the common case, only needs lower-casing."""
    norm = text.lower() if text.isascii() else _fold(text)
    return _INNER_APOSTROPHE.sub("", norm) if "'" in norm else norm


def _normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """:func:`_normalize`, character by character, with each output character's index in
    ``text``: slower, so only run on a message that hit, to place the hit in the original."""
    pieces: list[str] = []
    offsets: list[int] = []
    done = 0
    for run in (*_ASCII_RUN.finditer(text), None):
        end = run.start() if run is not None else len(text)
        for i in range(done, end):  # a stretch of other characters: one at a time
            piece = _fold(text[i])
            pieces.append(piece)
            offsets.extend([i] * len(piece))
        if run is not None:  # ASCII: one character each, in place
            pieces.append(run.group().lower())
            offsets.extend(range(run.start(), run.end()))
            done = run.end()
    norm = "".join(pieces)
    if "'" in norm:
        drop = {m.start() for m in _INNER_APOSTROPHE.finditer(norm)}
        if drop:
            norm = "".join(ch for j, ch in enumerate(norm) if j not in drop)
            offsets = [o for j, o in enumerate(offsets) if j not in drop]
    return norm, offsets


def _locate(text: str) -> tuple[str, Callable[[int], int]]:
    """The normalised text and a map from its indices to ``text``'s. For ASCII only the
    dropped inner apostrophes shift anything, so no per-character table is built."""
    if not text.isascii():
        norm, offsets = _normalize_with_offsets(text)
        return norm, offsets.__getitem__
    low = text.lower()
    if "'" not in low:
        return low, int
    # Where each dropped apostrophe was, in the normalised text's indices.
    gaps = [m.start() - k for k, m in enumerate(_INNER_APOSTROPHE.finditer(low))]
    return _INNER_APOSTROPHE.sub("", low), lambda j: j + bisect_right(gaps, j)


def normalize_words(text: str) -> list[str]:
    """The words of ``text`` as terms and messages are compared: ``"Don’t GUARANTEE risk-free"``
    → ``['dont', 'guarantee', 'risk', 'free']``."""
    return _TOKEN.findall(_normalize(text))


def language_of(code: str | None) -> str | None:
    """The language of a network's code ('de-AT', 'pt_BR', 'EN' → 'de', 'pt', 'en'); None when
    there is none or it is not an ISO 639-1 code, which means: every term applies."""
    if not code:
        return None
    base = code.strip().lower().replace("_", "-").split("-", 1)[0]
    return base if base in LANGUAGES else None


# --------------------------------------------------------------------------------------------
# Terms


class Word(NamedTuple):
    """A normalised word of a term; ``prefix``: written with a trailing '*'. A tuple, not a
    dataclass, because matching hashes words all the time and a tuple hashes in C."""

    text: str
    prefix: bool = False

    def matches(self, token: str) -> bool:
        return token.startswith(self.text) if self.prefix else token == self.text

    def __str__(self) -> str:
        return self.text + ("*" if self.prefix else "")


@dataclass(frozen=True)
class Term:
    """A compiled term: ``phrases`` joined by NEAR, ``gaps[i]`` the most words allowed between
    phrase i and i+1. ``source`` is the term as written (what a reviewer sees); ``language``
    the ISO 639-1 code of the list it came from (None: every language)."""

    source: str
    phrases: tuple[tuple[Word, ...], ...]
    gaps: tuple[int, ...] = ()
    language: str | None = None
    #: Every word once, the likely rarest first: a message lacking any is skipped at once.
    required: tuple[Word, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = sorted(dict.fromkeys(w for phrase in self.phrases for w in phrase), key=_rarity, reverse=True)
        object.__setattr__(self, "required", tuple(words))


#: Words in nearly every message: a poor anchor ("this is a joke" is filed under "joke").
_COMMON = frozenset(
    "the and you your this that with have has for are was were will would can could not our out "
    "all any but get got its just like me my now one so some there they them then here what when "
    "who how about from into over also very much more been being did does dont im ill ive let lets "
    "to of in on at it is be by we he she or as if an a i "
    "der die das und ich sie ist nicht mit sich des dem den ein eine einen einem zu von auf fur "
    "es im wir ihr ihnen mir mich dass so wie auch aber noch nur bei bitte".split()
)


def _rarity(word: Word) -> tuple[bool, int, bool]:
    """How rare a word likely is in messages: not a common word, long, exact."""
    return word.text not in _COMMON, len(word.text), not word.prefix


_NEAR = re.compile(r"near/(.*)", re.IGNORECASE)
_UNSUPPORTED = ("AND", "OR", "NOT")


def _near_distance(raw: str, source: str) -> int:
    if not raw.isdigit():
        raise TermError(
            f"'{source}': 'NEAR/{raw}' needs a number of words; write e.g. NEAR/3 (at most 3 words between)"
        )
    n = int(raw)
    if n == 0:
        raise TermError(
            f"'{source}': NEAR/0 is no distance; use NEAR/1 to NEAR/{MAX_NEAR}, or write the words "
            "side by side as a phrase"
        )
    if n > MAX_NEAR:
        raise TermError(
            f"'{source}': NEAR/{n} is too far apart to mean anything; use at most NEAR/{MAX_NEAR}"
        )
    return n


def _words(piece: str, source: str) -> list[Word]:
    """The words of one space-separated piece of a term ('risk-free' is two, 'return*' one)."""
    stars = piece.count("*")
    body = piece[:-1] if stars else piece
    if stars and not piece.strip("*"):
        raise TermError(
            f"'{source}': a lone '*' would match every word; put it at the end of a word, e.g. return*"
        )
    if stars and (stars > 1 or not piece.endswith("*")):
        raise TermError(
            f"'{source}': '*' may only end a word, not start it or sit inside it; write e.g. guarantee*"
        )
    tokens = normalize_words(body)
    if not stars:
        return [Word(t) for t in tokens]
    if not tokens or not _TOKEN.fullmatch(_normalize(body[-1])):
        raise TermError(f"'{source}': '*' must follow a letter or digit; write e.g. guarantee*")
    if len(tokens[-1]) < MIN_PREFIX:
        raise TermError(
            f"'{source}': '{tokens[-1]}*' would match too many words; a wildcard needs at least "
            f"{MIN_PREFIX} letters before it, e.g. guarantee*"
        )
    return [Word(t) for t in tokens[:-1]] + [Word(tokens[-1], prefix=True)]


def compile_term(source: str, language: str | None = None) -> Term:
    """Compile one term (see the module docstring); raises :class:`TermError` saying what is
    wrong and how to write it."""
    pieces = source.split()
    if not pieces:
        raise TermError('is empty; write a word or phrase, e.g. "risk free"')
    phrases: list[tuple[Word, ...]] = []
    gaps: list[int] = []
    current: list[Word] = []
    for piece in pieces:
        near = _NEAR.fullmatch(piece)
        if near is not None:
            gap = _near_distance(near.group(1), source)
            if not current:
                raise TermError(f"'{source}' must have words on both sides of NEAR/n; write it as {_EXAMPLE}")
            phrases.append(tuple(current))
            gaps.append(gap)
            current = []
        elif piece == "NEAR":
            raise TermError(f"'{source}': NEAR needs a distance; write e.g. {_EXAMPLE}")
        elif piece in _UNSUPPORTED:
            raise TermError(
                f"'{source}': {piece} is not part of the term grammar; write each alternative as a term "
                "of its own, and use exclude for what must not count"
            )
        elif "(" in piece or ")" in piece:
            raise TermError(f"'{source}': brackets are not part of the term grammar; write each alternative "
                            "as a term of its own")  # fmt: skip
        else:
            current.extend(_words(piece, source))
    if not current:
        if gaps:
            raise TermError(f"'{source}' must have words on both sides of NEAR/n; write it as {_EXAMPLE}")
        raise TermError(f"'{source}' has no letters or digits; write a word or phrase, e.g. \"risk free\"")
    phrases.append(tuple(current))
    return Term(source=source, phrases=tuple(phrases), gaps=tuple(gaps), language=language)


# --------------------------------------------------------------------------------------------
# Lexicons and their hits


@dataclass(frozen=True)
class Lexicon:
    """A named list of terms (see the module docstring) and what a hit does. ``direction`` is
    one of :data:`DIRECTIONS`, ``action`` one of :data:`LEXICON_ACTIONS` ("hold" only for
    outbound lexicons: an inbound message has already reached the company)."""

    name: str
    terms: tuple[Term, ...]
    exclude: tuple[Term, ...] = ()
    direction: str = "both"
    action: str = "alert"

    @property
    def hold(self) -> bool:
        return self.action == "hold"

    def scans(self, direction: str) -> bool:
        """Whether a message going ``direction`` ("inbound" or "outbound") is scanned."""
        return self.direction == "both" or self.direction == direction


@dataclass(frozen=True)
class LexiconHit:
    """One term of one lexicon found in a message. ``start``/``end`` is the matched span, from
    its first word to its last, in the scanned text: the message's ``text`` when ``source`` is
    "text", ``policies.detectors.html_to_text(html)`` when it is "html" (the formatted body
    said something else). ``excerpt`` is that span with some context, for the review queue:
    "…we guarantee a 12% return…". A term is reported once per message, at its first
    occurrence that no exclusion cancels."""

    lexicon: str
    term: str
    start: int
    end: int
    excerpt: str
    action: str = "alert"
    source: str = "text"

    @property
    def rule(self) -> str:
        return f"supervision.lexicons.{self.lexicon}"


def excerpt(text: str, start: int, end: int, context: int = 40) -> str:
    """``text[start:end]`` with up to ``context`` characters either side, cut at whole words,
    whitespace collapsed, and '…' where something was cut off."""
    left_from, right_to = max(0, start - context), min(len(text), end + context)
    left, right = text[left_from:start], text[end:right_to]
    if left_from > 0 and " " in left.strip():
        left = left.lstrip()[left.lstrip().find(" ") :]
    if right_to < len(text) and " " in right.strip():
        right = right.rstrip()[: right.rstrip().rfind(" ")]
    body = " ".join(f"{left}{text[start:end]}{right}".split())
    return f"{'…' if left_from > 0 else ''}{body}{'…' if right_to < len(text) else ''}"


# --------------------------------------------------------------------------------------------
# Matching


_Span = tuple[int, int]


class _Words:
    """A message's words, with each term word's positions looked up once, and only for the
    words some candidate term needs."""

    __slots__ = ("tokens", "_vocab", "_cache")

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self._vocab = set(tokens)
        self._cache: dict[Word, Sequence[int]] = {}

    def positions(self, word: Word) -> Sequence[int]:
        found = self._cache.get(word)
        if found is None:
            text = word.text
            if word.prefix:
                found = [i for i, t in enumerate(self.tokens) if t.startswith(text)]
            elif text in self._vocab:
                found = [i for i, t in enumerate(self.tokens) if t == text]
            else:
                found = ()
            self._cache[word] = found
        return found

    def phrase(self, words: tuple[Word, ...]) -> list[_Span]:
        """Where the words occur one after another: (first word, one past the last)."""
        if len(words) == 1:
            return [(p, p + 1) for p in self.positions(words[0])]
        tokens, n, k = self.tokens, len(self.tokens), len(words)
        return [
            (p, p + k)
            for p in self.positions(words[0])
            if p + k <= n and all(words[j].matches(tokens[p + j]) for j in range(1, k))
        ]


def _term_spans(term: Term, words: _Words) -> list[_Span]:
    """Every span (first word, one past the last) where the whole term matches, in order: one
    per occurrence of the last phrase, the tightest. Each NEAR step only looks at the
    occurrences within reach (found by bisection), so a long text costs linear time."""
    for word in term.required:
        if not words.positions(word):
            return []
    first = words.phrase(term.phrases[0])
    if not first or len(term.phrases) == 1:
        return first
    # (span start, span end, last phrase start, last phrase end)
    states = [(s, e, s, e) for s, e in first]
    for phrase, gap in zip(term.phrases[1:], term.gaps):
        found = words.phrase(phrase)
        starts = [s for s, _ in found]
        tightest: dict[_Span, _Span] = {}
        for start, end, last_s, last_e in states:
            lo, hi = bisect_left(starts, last_s - gap - len(phrase)), bisect_right(starts, last_e + gap)
            for s, e in found[lo:hi]:
                between = last_s - e if e <= last_s else s - last_e if s >= last_e else -1
                if 0 <= between <= gap:
                    span = (min(start, s), max(end, e))
                    old = tightest.get((s, e))
                    if old is None or (span[1] - span[0], span) < (old[1] - old[0], old):
                        tightest[(s, e)] = span
        if not tightest:
            return []
        states = [(a, b, s, e) for (s, e), (a, b) in tightest.items()]
    return sorted({(a, b) for a, b, _, _ in states})


def _prefilter(anchors: Iterable[Word]) -> re.Pattern[str] | None:
    """One expression finding any term's anchor at the start of a word: a message without one
    is done at C speed, and the matches say which terms to evaluate. Shaped as a trie (one
    branch per letter), so each word costs a step or two whatever the number of terms. At a
    word it matches the longest anchor there, the exact word before a prefix of the same
    letters (see :meth:`LexiconIndex.build` for the shorter ones)."""
    trie: dict[str, Any] = {}
    for word in set(anchors):
        node = trie
        for ch in word.text:
            node = node.setdefault(ch, {})
        node.setdefault("", set()).add(word.prefix)
    return re.compile(rf"(?<![^\W_]){_branches(trie)}") if trie else None


def _branches(node: dict[str, Any]) -> str:
    ends = node.get("", set())
    alternatives = [re.escape(ch) + _branches(child) for ch, child in sorted(node.items()) if ch]
    if False in ends:  # an exact word ends here
        alternatives.append(r"(?![^\W_])")
    if True in ends:  # a prefix ends here
        alternatives.append("")
    return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"


_NO_TERMS: Mapping[str, tuple[int, ...]] = MappingProxyType({})


@dataclass(frozen=True)
class _Anchors:
    """Terms filed under their anchors, with the prefilter that finds them: which of ``terms``
    (by position) a normalised text may match, for the price of one regular-expression scan."""

    pattern: re.Pattern[str] | None = None
    #: Anchor the pattern reports for a whole word -> the terms that word may match.
    whole: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: _NO_TERMS)
    #: Prefix anchor reported at the start of a longer word -> the terms that word may match.
    inside: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: _NO_TERMS)

    @classmethod
    def build(cls, terms: Sequence[Term]) -> _Anchors:
        anchors = _pick_anchors(terms)
        exact: dict[str, set[int]] = {}
        prefix: dict[str, set[int]] = {}
        for k, anchor in enumerate(anchors):
            (prefix if anchor.prefix else exact).setdefault(anchor.text, set()).add(k)

        # The pattern reports one anchor per word, the longest; the shorter prefixes of the
        # same word match it too, so their terms are filed with it.
        def shorter(text: str) -> set[int]:
            return {k for p, ks in prefix.items() if text.startswith(p) for k in ks}

        whole = {t: exact.get(t, set()) | shorter(t) for t in exact.keys() | prefix.keys()}
        return cls(
            _prefilter(anchors),
            MappingProxyType({t: tuple(sorted(ks)) for t, ks in whole.items()}),
            MappingProxyType({t: tuple(sorted(shorter(t))) for t in prefix}),
        )

    def candidates(self, norm: str) -> list[int]:
        """Positions of the terms whose anchor ``norm`` contains, in order."""
        if self.pattern is None:
            return []
        found: set[int] = set()
        n = len(norm)
        for m in self.pattern.finditer(norm):
            end = m.end()
            ks = (self.whole if end == n or not _TOKEN.match(norm, end) else self.inside).get(m.group())
            if ks:
                found.update(ks)
        return sorted(found)


_NO_ANCHORS = _Anchors()


def _pick_anchors(terms: Sequence[Term]) -> list[Word]:
    """Each term's anchor: of its words, the one fewest other terms use, then the likely
    rarest. Eleven terms "guarantee* NEAR/n <something>" are filed under their <something>,
    so a message saying "guaranteed" alone evaluates none of them, not all eleven."""
    uses = Counter(w for t in terms for w in t.required)
    return [
        min(t.required, key=lambda w: (w.text in _COMMON, uses[w], *(-x for x in _rarity(w)))) for t in terms
    ]


@dataclass(frozen=True)
class LexiconIndex:
    """The policy's lexicons ready for matching: built once, when the policy is parsed, and
    then used for every message with :meth:`find`. Every term is filed under its anchor word,
    so one scan of a message says which few terms to evaluate; a lexicon's exclusions are
    filed likewise and only looked for once one of its terms matched (rarely), so common
    words in exclusions ("not", "here") cost ordinary messages nothing."""

    lexicons: tuple[Lexicon, ...] = ()
    #: Every lexicon's terms in order, with the position of the lexicon each belongs to.
    terms: tuple[tuple[int, Term], ...] = field(default=(), repr=False, compare=False)
    anchors: _Anchors = field(default=_NO_ANCHORS, repr=False, compare=False)
    #: Per lexicon, its exclusions' anchors.
    exclusions: tuple[_Anchors, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(cls, lexicons: Iterable[Lexicon]) -> LexiconIndex:
        lexicons = tuple(lexicons)
        terms = tuple((i, term) for i, lexicon in enumerate(lexicons) for term in lexicon.terms)
        return cls(
            lexicons,
            terms,
            _Anchors.build([term for _, term in terms]),
            tuple(_Anchors.build(lexicon.exclude) for lexicon in lexicons),
        )

    def find(
        self, text: str, direction: str, language: str | None = None, *, source: str = "text"
    ) -> tuple[LexiconHit, ...]:
        """The hits of the lexicons that scan ``direction`` in ``text``. A known ``language``
        (see :func:`language_of`) skips the terms listed for other languages."""
        if not text:
            return ()
        norm = _normalize(text)
        candidates = self.anchors.candidates(norm)
        if not candidates:
            return ()
        lang = language_of(language)
        by_lexicon: dict[int, list[Term]] = {}
        for k in candidates:
            i, term = self.terms[k]
            if _applies(term, lang) and self.lexicons[i].scans(direction):
                by_lexicon.setdefault(i, []).append(term)
        if not by_lexicon:
            return ()
        words = _Words(_TOKEN.findall(norm))
        found: list[tuple[Lexicon, Term, _Span]] = []
        for i, terms in by_lexicon.items():
            matched = [(t, spans) for t in terms if (spans := _term_spans(t, words))]
            if matched:
                lexicon = self.lexicons[i]
                excluded = (lexicon.exclude[k] for k in self.exclusions[i].candidates(norm))
                cancelling = [span for x in excluded if _applies(x, lang) for span in _term_spans(x, words)]
                found.extend((lexicon, t, span) for t, span in _first_kept(matched, cancelling))
        return _place(text, found, source) if found else ()


def _applies(term: Term, lang: str | None) -> bool:
    return lang is None or term.language is None or term.language == lang


def _first_kept(matched: list[tuple[Term, list[_Span]]], exclusions: list[_Span]) -> list[tuple[Term, _Span]]:
    """Each matched term's first span that no exclusion cancels. An exclusion (xs, xe)
    cancels (s, e) when it overlaps it or ends at most EXCLUDE_WINDOW words before it, that is
    when xs < e and xe >= s - EXCLUDE_WINDOW: with the exclusions sorted by start and the
    furthest end so far, each span is one bisection, however many exclusions a text has."""
    if not exclusions:
        return [(term, spans[0]) for term, spans in matched]
    ordered = sorted(exclusions)
    starts = [xs for xs, _ in ordered]
    reach = list(accumulate((xe for _, xe in ordered), max))

    def cancelled(s: int, e: int) -> bool:
        i = bisect_left(starts, e)
        return i > 0 and reach[i - 1] >= s - EXCLUDE_WINDOW

    out: list[tuple[Term, _Span]] = []
    for term, spans in matched:
        kept = next((span for span in spans if not cancelled(*span)), None)
        if kept is not None:
            out.append((term, kept))
    return out


def _place(text: str, found: list[tuple[Lexicon, Term, _Span]], source: str) -> tuple[LexiconHit, ...]:
    """Word spans → character spans in the original ``text``, with excerpts."""
    norm, original = _locate(text)
    bounds = list(map(_SPAN, _TOKEN.finditer(norm)))
    hits = []
    for lexicon, term, (s, e) in found:
        start, end = original(bounds[s][0]), original(bounds[e - 1][1] - 1) + 1
        hits.append(LexiconHit(lexicon.name, term.source, start, end, excerpt(text, start, end),
                               lexicon.action, source))  # fmt: skip
    return tuple(sorted(hits, key=lambda h: h.start))
