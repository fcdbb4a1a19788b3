"""Supervision, the pure part: the ``supervision`` policy section (every mistake named by its key
path), the lexicon grammar and matcher, language and direction selection, holds, sampling,
and the shipped lexicon's precision and recall on labelled messages.

``pytest -s`` prints the precision/recall table and the speed of :func:`supervise` next to
the sharing decision; timings are printed, never asserted.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.networks import network_names
from policies import PolicyError, RoomState, SendOut, decide, parse_policy
from policies.engine import (
    Supervise,
    SupervisionResult,
    is_sampled,
    reviewers_of,
    supervise,
    supervisors_of,
)
from policies.lexicon import (
    Lexicon,
    LexiconHit,
    LexiconIndex,
    TermError,
    _locate,
    _normalize,
    _normalize_with_offsets,
    compile_term,
    excerpt,
    language_of,
    normalize_words,
)
from policies.model import DEFAULT_CLOSE_REASONS, Policy

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "policies" / "example.yaml"
MESSAGES = HERE / "supervision_messages.yaml"
DOMAIN = "localhost"
NETWORKS = network_names()
POLICY = parse_policy(
    yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")), local_domain=DOMAIN, networks=NETWORKS
)
LABELLED: list[dict[str, Any]] = yaml.safe_load(MESSAGES.read_text(encoding="utf-8"))["messages"]


def policy_with(supervision: Any, **extra: Any) -> Policy:
    return parse_policy({"supervision": supervision, **extra}, local_domain=DOMAIN, networks=NETWORKS)


def problems_of(supervision: Any, **extra: Any) -> list[str]:
    with pytest.raises(PolicyError) as info:
        policy_with(supervision, **extra)
    return info.value.problems


def lexicon(terms: Any, exclude: Any = (), **kw: Any) -> dict[str, Any]:
    return {"lexicons": {"x": {"terms": terms, "exclude": list(exclude) or None, **kw}}}


def find(terms: list[str], text: str, *, exclude: tuple[str, ...] = (), language: str | None = None,
         message_language: str | None = None) -> tuple[LexiconHit, ...]:  # fmt: skip
    """Hits of a one-lexicon index built straight from terms (no policy around it)."""
    lex = Lexicon(
        "x",
        tuple(compile_term(t, language) for t in terms),
        tuple(compile_term(t, language) for t in exclude),
    )
    return LexiconIndex.build([lex]).find(text, "outbound", message_language)


def matches(term: str, text: str, **kw: Any) -> bool:
    return bool(find([term], text, **kw))


# --------------------------------------------------------------------------------------------
# The policy section


def test_example_configures_supervision() -> None:
    s = POLICY.supervision
    assert [lex.name for lex in s.lexicons] == ["promises", "offchannel", "secrecy", "complaints"]
    promises = s.lexicons[0]
    assert (promises.direction, promises.action) == ("outbound", "hold")
    assert {t.language for t in promises.terms} == {"en", "de"}
    assert all(lex.action == "alert" for lex in s.lexicons[1:])
    assert s.lexicons[3].direction == "inbound"
    assert s.sample_rate == 0.01 and s.enabled
    assert s.reviewer_role is None and s.supervisor_role == "senior"
    assert s.close_reasons == ("no_issue", "coached", "false_positive", "reported")
    assert reviewers_of(POLICY) == POLICY.observers
    assert supervisors_of(POLICY) == {"@senior:localhost"}


@pytest.mark.parametrize("doc", [None, {}])
def test_no_section_reviews_nothing(doc: dict[str, Any] | None) -> None:
    policy = parse_policy(doc, local_domain=DOMAIN, networks=NETWORKS)
    s = policy.supervision
    assert s.lexicons == () and s.sample_rate == 0 and not s.enabled
    assert s.close_reasons == DEFAULT_CLOSE_REASONS and s.reviewer_role is None
    result = supervise(Supervise("I guarantee a 12% return", "outbound", "$e"), policy)
    assert result == SupervisionResult() and not result.review and not result.hold


def test_roles_and_reasons() -> None:
    roles = {"compliance": ["@rev:localhost"], "senior": ["@boss:localhost"]}
    policy = policy_with(
        {"reviewer_role": "compliance", "supervisor_role": "senior", "close_reasons": ["ok", "coached"]},
        roles=roles,
    )
    assert reviewers_of(policy) == {"@rev:localhost"} and supervisors_of(policy) == {"@boss:localhost"}
    assert policy.supervision.close_reasons == ("ok", "coached")
    assert not policy.supervision.enabled  # roles alone review nothing


def test_terms_are_compiled_once_at_parse_time() -> None:
    s = policy_with(lexicon({"en": ["guarantee* NEAR/3 return*"], "de": ["risikofrei"]})).supervision
    (lex,) = s.lexicons
    first, second = lex.terms
    assert (first.language, second.language) == ("en", "de")
    assert [[str(w) for w in phrase] for phrase in first.phrases] == [["guarantee*"], ["return*"]]
    assert first.gaps == (3,) and first.source == "guarantee* NEAR/3 return*"
    assert s.index.lexicons == s.lexicons and s.index.anchors.pattern is not None


X = "supervision.lexicons.x"
NEAR_FIX = 'must have words on both sides of NEAR/n; write it as "guarantee* NEAR/3 return*"'
ERRORS: list[tuple[Any, dict[str, Any], str, str]] = [
    # (the supervision section, other sections, the problem's key path, a fragment of what it says)
    (lexicon(["risk free", "guarantee*", "NEAR/3 foo"]), {}, f"{X}.terms[2]", f"'NEAR/3 foo' {NEAR_FIX}"),
    (lexicon(["guarantee NEAR/3"]), {}, f"{X}.terms[0]", NEAR_FIX),
    (lexicon(["a NEAR/2 NEAR/2 b"]), {}, f"{X}.terms[0]", NEAR_FIX),
    (lexicon(["risk NEAR/0 free"]), {}, f"{X}.terms[0]", "NEAR/0 is no distance; use NEAR/1 to NEAR/20"),
    (lexicon(["risk NEAR/x free"]), {}, f"{X}.terms[0]", "'NEAR/x' needs a number of words; write e.g. NEAR/3"),
    (lexicon(["risk NEAR/ free"]), {}, f"{X}.terms[0]", "needs a number of words"),
    (lexicon(["risk NEAR/50 free"]), {}, f"{X}.terms[0]", "use at most NEAR/20"),
    (lexicon(["risk NEAR free"]), {}, f"{X}.terms[0]", "NEAR needs a distance; write e.g."),
    (lexicon(["*"]), {}, f"{X}.terms[0]", "a lone '*' would match every word"),
    (lexicon(["guarantee *"]), {}, f"{X}.terms[0]", "a lone '*'"),
    (lexicon(["gu*rantee"]), {}, f"{X}.terms[0]", "'*' may only end a word"),
    (lexicon(["*rantee"]), {}, f"{X}.terms[0]", "'*' may only end a word"),
    (lexicon(["guar**"]), {}, f"{X}.terms[0]", "'*' may only end a word"),
    (lexicon(["risk-*"]), {}, f"{X}.terms[0]", "'*' must follow a letter or digit"),
    (lexicon(["gu*"]), {}, f"{X}.terms[0]", "a wildcard needs at least 3 letters before it"),
    (lexicon([""]), {}, f"{X}.terms[0]", 'is empty; write a word or phrase, e.g. "risk free"'),
    (lexicon(["  "]), {}, f"{X}.terms[0]", "is empty"),
    (lexicon(["!!!"]), {}, f"{X}.terms[0]", "has no letters or digits"),
    (lexicon(["guarantee OR promise"]), {}, f"{X}.terms[0]", "OR is not part of the term grammar"),
    (lexicon(["(guarantee promise) NEAR/3 return"]), {}, f"{X}.terms[0]", "brackets are not part"),
    (lexicon([42]), {}, f"{X}.terms[0]", "expected a term in quotes, got the number 42"),
    (lexicon("risk free"), {}, f"{X}.terms", "expected a list of terms"),
    (lexicon({"german": ["risikofrei"]}), {}, f"{X}.terms.german", "is not a language code; write a two-letter"),
    (lexicon({"de-AT": ["risikofrei"]}), {}, f"{X}.terms.de-AT", "not per region: write de"),
    (lexicon({"de": ["risikofrei", "ab*"]}), {}, f"{X}.terms.de[1]", "at least 3 letters"),
    (lexicon(["risk free"], exclude=["no NEAR/3"]), {}, f"{X}.exclude[0]", NEAR_FIX),
    ({"lexicons": {"x": {"direction": "outbound"}}}, {}, f"{X}.terms", "missing or empty; a lexicon needs"),
    ({"lexicons": {"x": {"terms": []}}}, {}, f"{X}.terms", "missing or empty"),
    ({"lexicons": {"x": ["risk free"]}}, {}, X, "expected a mapping with terms"),
    ({"lexicons": {"bad name!": {"terms": ["a b"]}}}, {}, "supervision.lexicons.bad name!", "not a valid lexicon name"),
    ({"lexicons": ["promises"]}, {}, "supervision.lexicons", "expected a mapping, got a list"),
    (lexicon(["risk free"], actoin="hold"), {}, f"{X}.actoin", "did you mean 'action'?"),
    (lexicon(["risk free"], direction="out"), {}, f"{X}.direction", "is not a direction; use inbound"),
    (lexicon(["risk free"], action="block"), {}, f"{X}.action", "is not an action; use alert"),
    (lexicon(["risk free"], action="hold"), {}, f"{X}.action", "hold needs direction: outbound (this lexicon scans both)"),
    (lexicon(["risk free"], action="hold", direction="inbound"), {}, f"{X}.action",
     "has already reached the company; set direction: outbound or use action: alert"),
    ({"sample_rate": 1.5}, {}, "supervision.sample_rate", "1.5 is out of range; use a fraction from 0 to 1"),
    ({"sample_rate": -0.1}, {}, "supervision.sample_rate", "out of range"),
    ({"sample_rate": "1%"}, {}, "supervision.sample_rate", "expected a fraction from 0 to 1, got the text '1%'"),
    ({"sample_rate": True}, {}, "supervision.sample_rate", "expected a fraction"),
    ({"reviewer_role": "compliance"}, {}, "supervision.reviewer_role",
     "'compliance' is not a role defined under roles; no roles are defined yet"),
    ({"supervisor_role": "boss"}, {"roles": {"senior": []}}, "supervision.supervisor_role",
     "'boss' is not a role defined under roles; the roles are senior"),
    ({"close_reasons": []}, {}, "supervision.close_reasons", "is empty, so no review could ever be closed"),
    ({"close_reasons": ["ok", "ok"]}, {}, "supervision.close_reasons[1]", "'ok' is listed twice"),
    ({"close_reasons": ["no issue"]}, {}, "supervision.close_reasons[0]", "is not a valid close reason name"),
    ({"close_reasons": "no_issue"}, {}, "supervision.close_reasons", "expected a list of close reasons"),
    ({"sample": 0.1}, {}, "supervision.sample", "did you mean 'sample_rate'?"),
    (["promises"], {}, "supervision", "expected a mapping, got a list"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "extra", "path", "fragment"), ERRORS, ids=[f"{e[2]}:{e[3][:30]}" for e in ERRORS]
)
def test_each_problem_names_its_path_and_the_fix(
    doc: Any, extra: dict[str, Any], path: str, fragment: str
) -> None:
    problems = problems_of(doc, **extra)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.startswith(f"{path}: "), problem
    assert fragment in problem, problem
    # What is wrong, then (after '; ') what to do about it.
    assert "; " in problem.removeprefix(f"{path}: "), problem


def test_every_bad_term_is_reported_at_once() -> None:
    doc = {"lexicons": {"a": {"terms": ["*", "ok", "x NEAR/0 y"]}, "b": {"terms": {"xx": ["z"]}}},
           "sample_rate": 2}  # fmt: skip
    paths = [p.split(": ", 1)[0] for p in problems_of(doc)]
    assert paths == ["supervision.lexicons.a.terms[0]", "supervision.lexicons.a.terms[2]",
                     "supervision.lexicons.b.terms.xx", "supervision.sample_rate"]  # fmt: skip


# --------------------------------------------------------------------------------------------
# The grammar


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("We guarantee a 12% return.", True),  # guarantee, a, 12: words between, '%' is none
        ("Returns are guaranteed.", True),  # the other order
        ("guaranteed returns", True),  # side by side
        ("We guarantee you a return", True),  # 2 words between
        ("We guarantee you a fixed annual return", False),  # 4 words between, NEAR/3
        ("We guarantee you a fixed return", True),  # exactly 3
        ("our guarantee. The return on the fund...", True),  # sentences do not stop NEAR
        ("guarantee", False),
        ("return", False),
    ],
)
def test_near_in_either_order_within_n_words(text: str, hit: bool) -> None:
    assert matches("guarantee* NEAR/3 return*", text) is hit


def test_near_sides_are_different_words() -> None:
    assert not matches("guarantee* NEAR/2 guarantee*", "guaranteed")
    assert matches("guarantee* NEAR/2 guarantee*", "guaranteed, I guarantee it")


def test_near_chains_and_phrases() -> None:
    term = "sag* NEAR/4 nicht* NEAR/3 compliance"
    assert matches(term, "Sagen Sie das bitte nicht der Compliance.")
    assert matches(term, "Der Compliance sagen wir nichts.")  # each pair in either order
    assert not matches(term, "Sagen Sie es der Compliance.")  # the middle is missing
    assert matches("no way NEAR/3 lose money", "no way you lose money")
    assert not matches("no way NEAR/3 lose money", "no way you lose the money")  # a phrase is consecutive


@pytest.mark.parametrize(
    ("term", "text", "hit"),
    [
        ("return*", "returns", True),
        ("return*", "Returning", True),
        ("return*", "return", True),
        ("return*", "nonreturnable", False),  # a prefix of the word, not anywhere in it
        ("return", "returns", False),  # without '*' the whole word
        ("risk free", "RISK FREE!!", True),
        ("risk free", "it's Risk-Free", True),  # hyphens separate words
        ("risk-free", "risk free", True),
        ("risk free", "free of risk", False),
        ("risk free", "brisk freedom", False),  # whole words only
        ("risk free", "risk, free", True),  # punctuation is no word
        ("don't tell", "Don’t tell", True),  # apostrophes alike
        ("don't tell", "DONT TELL", True),
        ("dont tell", "don't tell", True),
        ("rückgabe", "RUCKGABE", True),  # accents ignored
        ("ruckgabe", "Rückgabe", True),
        ("rückgabe", "Ru\u0308ckgabe", True),  # decomposed accents too
        ("garantie", "Garantíe", True),
        ("strasse", "Straße", True),  # casefold
        ("guarantee", "guar\u200bantee", True),  # invisible characters inside a word
        ("100% safe", "100 % safe", True),
        ("p.a.", "7% p.a. guaranteed", True),
        ("p.a.", "a pa", False),
        ("foo_bar", "foo bar", True),  # '_' separates words
    ],
)
def test_words(term: str, text: str, hit: bool) -> None:
    assert matches(term, text) is hit


def test_normalised_words() -> None:
    assert normalize_words("Don’t GUARANTEE risk-free 12%, Straße") == [
        "dont", "guarantee", "risk", "free", "12", "strasse",
    ]  # fmt: skip


def test_exclusions_cancel_overlapping_and_preceding_hits() -> None:
    terms, exclude = ["guarantee* NEAR/3 return*"], ("no guarantee*", "not guarantee*", "cannot")
    for text in ("Past performance is no guarantee of future returns.", "Returns are not guaranteed.",
                 "We cannot, of course, guarantee returns."):  # fmt: skip
        assert find(terms, text, exclude=exclude) == (), text
    # Too far before, or after the hit: no effect.
    assert find(terms, "We cannot say it often enough: guarantee returns", exclude=exclude)
    assert find(terms, "I guarantee returns. Cannot lose.", exclude=exclude)


def test_an_exclusion_cancels_one_occurrence_not_the_term() -> None:
    text = "There's no guarantee of returns in general, but I guarantee returns of 10% here."
    (hit,) = find(["guarantee* NEAR/3 return*"], text, exclude=("no guarantee*",))
    assert text[hit.start : hit.end] == "guarantee returns"
    assert hit.start == text.index("guarantee returns")


def test_padding_does_not_hide_a_hit() -> None:
    """Thousands of excluded or partial occurrences first: the real one is still found (and in
    linear time: the NEAR join and the exclusions are bisected, never tried pair by pair)."""
    text = "no guarantee of returns " * 3000 + "but I guarantee a 10% return"
    (hit,) = find(["guarantee* NEAR/3 return*"], text, exclude=("no guarantee*",))
    assert text[hit.start : hit.end] == "guarantee a 10% return"
    text = "Sagen Sie nicht " * 3000 + "der Compliance"
    (hit,) = find(["sag* NEAR/4 nicht* NEAR/3 compliance"], text)
    assert text[hit.start : hit.end] == "Sagen Sie nicht der Compliance"


def test_hits_point_into_the_original_text() -> None:
    text = "Ça va? Wir garantieren Ihnen eine Rendite! Und Don’t tell Compliance."
    hits = find(["garanti* NEAR/4 rendite*", "don't tell NEAR/3 compliance"], text)
    assert [text[h.start : h.end] for h in hits] == [
        "garantieren Ihnen eine Rendite",
        "Don’t tell Compliance",
    ]
    assert [h.term for h in hits] == ["garanti* NEAR/4 rendite*", "don't tell NEAR/3 compliance"]
    assert all(h.lexicon == "x" and h.rule == "supervision.lexicons.x" and h.source == "text" for h in hits)


def test_excerpts_show_the_hit_in_context() -> None:
    text = (
        "Thanks for your time on the phone this morning, it was good to catch up. As discussed "
        "we guarantee a 12% return on the new fund, and the paperwork follows by post tomorrow."
    )
    (hit,) = find(["guarantee* NEAR/3 return*"], text)
    assert hit.excerpt.startswith("…") and hit.excerpt.endswith("…")
    assert "we guarantee a 12% return" in hit.excerpt and len(hit.excerpt) < 140
    assert excerpt("short one", 0, 5) == "short one"


def test_terms_compile_case_insensitive_near() -> None:
    assert compile_term("guarantee* near/3 return*").gaps == (3,)
    with pytest.raises(TermError):
        compile_term("NEAR/3 foo")


# --------------------------------------------------------------------------------------------
# Language, direction, holds


LANG_TERMS = {"en": ["guarantee* NEAR/3 return*"], "de": ["garanti* NEAR/3 rendite*"]}
BILINGUAL = "I guarantee a return. Ich garantiere eine Rendite."


def lexicons_hit(
    policy: Policy, text: str, direction: str = "outbound", language: str | None = None
) -> list[str]:
    return [h.term for h in supervise(Supervise(text, direction, "$e", language), policy).hits]


@pytest.mark.parametrize(
    ("language", "terms"),
    [
        (None, ["guarantee* NEAR/3 return*", "garanti* NEAR/3 rendite*"]),  # unknown: every term
        ("", ["guarantee* NEAR/3 return*", "garanti* NEAR/3 rendite*"]),
        ("xx", ["guarantee* NEAR/3 return*", "garanti* NEAR/3 rendite*"]),  # not a code: unknown
        ("en", ["guarantee* NEAR/3 return*"]),
        ("EN", ["guarantee* NEAR/3 return*"]),
        ("de", ["garanti* NEAR/3 rendite*"]),
        ("de-AT", ["garanti* NEAR/3 rendite*"]),
        ("de_CH", ["garanti* NEAR/3 rendite*"]),
        ("fr", []),
    ],
)
def test_a_known_language_skips_the_other_languages_terms(language: str | None, terms: list[str]) -> None:
    policy = policy_with(lexicon(LANG_TERMS))
    assert lexicons_hit(policy, BILINGUAL, language=language) == terms


def test_terms_in_a_list_apply_in_every_language() -> None:
    policy = policy_with(lexicon(["guarantee* NEAR/3 return*"]))
    assert lexicons_hit(policy, BILINGUAL, language="de") == ["guarantee* NEAR/3 return*"]
    assert language_of("pt-BR") == "pt" and language_of("Klingon") is None and language_of(None) is None


def test_exclusions_follow_the_language_too() -> None:
    doc = lexicon(["guarantee* NEAR/3 return*"])
    doc["lexicons"]["x"]["exclude"] = {"de": ["not guarantee*"]}
    policy = policy_with(doc)
    assert lexicons_hit(policy, "returns not guaranteed", language="en")  # a German exclusion
    assert not lexicons_hit(policy, "returns not guaranteed", language="de")
    assert not lexicons_hit(policy, "returns not guaranteed")


@pytest.mark.parametrize(
    ("lexicon_direction", "inbound", "outbound"),
    [("inbound", True, False), ("outbound", False, True), ("both", True, True), (None, True, True)],
)
def test_direction_selects_the_lexicons(lexicon_direction: str | None, inbound: bool, outbound: bool) -> None:
    doc = lexicon(["off the record"])
    if lexicon_direction:
        doc["lexicons"]["x"]["direction"] = lexicon_direction
    policy = policy_with(doc)
    assert bool(lexicons_hit(policy, "This is off the record", "inbound")) is inbound
    assert bool(lexicons_hit(policy, "This is off the record", "outbound")) is outbound


def test_a_direction_other_than_inbound_or_outbound_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="direction must be"):
        supervise(Supervise("hello", "both", "$e"), POLICY)


def test_hold_only_for_outbound_hits_of_hold_lexicons() -> None:
    held = supervise(Supervise("We guarantee a 10% return.", "outbound", "$a"), POLICY)
    assert held.hold and held.review and held.lexicons == ("promises",)
    assert held.rules == ("supervision.lexicons.promises",)
    assert held.reason.startswith("Held for compliance review") and "'promises'" in held.reason
    assert held.hits[0].action == "hold" and held.hits[0].excerpt == "We guarantee a 10% return."
    # The same words from a client: promises scans outbound only.
    assert not supervise(Supervise("We guarantee a 10% return.", "inbound", "$b"), POLICY).hits
    # An alert lexicon: reviewed, not held.
    alert = supervise(Supervise("Keep this between us.", "outbound", "$c"), POLICY)
    assert alert.review and not alert.hold and alert.lexicons == ("secrecy",)
    assert alert.reason == "For compliance review: the message matches the lexicon 'secrecy'."
    both = supervise(Supervise("Keep this between us: it's risk free.", "outbound", "$d"), POLICY)
    assert both.hold and both.lexicons == ("secrecy", "promises")  # in text order


def test_the_formatted_body_is_scanned_when_it_says_something_else() -> None:
    action = Supervise("See the link", "outbound", "$e", html='<a href="x">Risk-free 9%</a> see the link')
    (hit,) = supervise(action, POLICY).hits
    assert hit.source == "html" and hit.term == "risk free"
    same = Supervise("It is risk free", "outbound", "$f", html="<b>It is risk free</b>")
    assert [h.source for h in supervise(same, POLICY).hits] == ["text"]


def test_decide_does_not_take_supervise() -> None:
    with pytest.raises(TypeError, match="supervise"):
        decide(Supervise("x", "outbound", "$e"), POLICY)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Sampling


def test_sampling_is_a_stable_hash_of_the_message_id() -> None:
    event = "$Zq3Hh6x:localhost"
    fraction = int.from_bytes(hashlib.sha256(event.encode()).digest()[:8], "big") / 2**64
    assert is_sampled(event, min(1.0, fraction + 1e-9)) and not is_sampled(event, max(0.0, fraction - 1e-9))
    assert all(is_sampled(event, 0.5) == is_sampled(event, 0.5) for _ in range(3))
    assert not is_sampled(event, 0) and is_sampled(event, 1)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_sampling_is_close_to_the_rate(rate: float) -> None:
    n = 10_000
    sampled = sum(is_sampled(f"$event{i}:example.com", rate) for i in range(n))
    # The sample is a deterministic function of the ids, so this cannot flake; 5 sigma of a
    # binomial is the margin a fair hash would stay in.
    assert abs(sampled - n * rate) <= 5 * math.sqrt(n * rate * (1 - rate)), sampled


def test_sampled_messages_go_to_review_whatever_they_say() -> None:
    policy = policy_with({"sample_rate": 1})
    result = supervise(Supervise("Good morning!", "inbound", "$e"), policy)
    assert result.sampled and result.review and not result.hold and not result.hits
    assert result.rules == ("supervision.sample_rate",)
    assert result.reason == "For compliance review: the message was chosen in the random sample."
    assert not supervise(Supervise("Good morning!", "inbound", "$e"), policy_with({"sample_rate": 0})).review


# --------------------------------------------------------------------------------------------
# No input breaks matching


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet=st.sampled_from(list("ab' -\u2019é")), max_size=60)))
def test_the_fast_and_the_offset_normalisation_agree(text: str) -> None:
    norm, offsets = _normalize_with_offsets(text)
    assert norm == _normalize(text) and len(offsets) == len(norm)
    assert offsets == sorted(offsets) and all(0 <= o < len(text) for o in offsets)
    located, original = _locate(text)
    assert located == norm and [original(j) for j in range(len(norm))] == offsets


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("guarantee return risk free ’'-*ÜüßİI\u0308\u200b .,!")), max_size=120),
       st.sampled_from(["inbound", "outbound"]))  # fmt: skip
def test_any_text_is_supervised_and_hits_point_into_it(text: str, direction: str) -> None:
    result = supervise(Supervise(text, direction, text, "de"), POLICY)
    for hit in result.hits:
        assert 0 <= hit.start < hit.end <= len(text)
        assert normalize_words(text[hit.start : hit.end]), hit


# --------------------------------------------------------------------------------------------
# The shipped lexicon on labelled messages


def _score(messages: list[dict[str, Any]]) -> tuple[dict[str, Counter[str]], list[str]]:
    """Per (message, lexicon) pair: a true positive when the lexicon is expected and hit, a false
    positive when hit but not expected, a false negative when expected but not hit. Pairs that
    are neither (the large majority) are true negatives and not counted."""
    counts: dict[str, Counter[str]] = {lex.name: Counter() for lex in POLICY.supervision.lexicons}
    misses: list[str] = []
    for i, m in enumerate(messages):
        result = supervise(Supervise(m["text"], m["direction"], f"$labelled{i}", m.get("language")), POLICY)
        got, expected = set(result.lexicons), set(m["expect"])
        for name in got | expected:
            kind = "tp" if name in got & expected else "fp" if name in got else "fn"
            counts[name][kind] += 1
            if kind != "tp":
                misses.append(f"{kind.upper()} {name}: {m['text']}")
    return counts, misses


def _ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


def _table(name: str, counts: dict[str, Counter[str]]) -> tuple[str, float, float]:
    lines = [f"{name:8} {'lexicon':11} {'TP':>4} {'FP':>4} {'FN':>4}  precision  recall"]
    total: Counter[str] = sum(counts.values(), Counter())
    for lex, c in [*counts.items(), ("overall", total)]:
        p, r = _ratio(c["tp"], c["tp"] + c["fp"]), _ratio(c["tp"], c["tp"] + c["fn"])
        lines.append(f"{name:8} {lex:11} {c['tp']:4} {c['fp']:4} {c['fn']:4}  {p:9.3f}  {r:6.3f}")
    precision = _ratio(total["tp"], total["tp"] + total["fp"])
    recall = _ratio(total["tp"], total["tp"] + total["fn"])
    return "\n".join(lines), precision, recall


def test_labelled_messages_are_many_and_balanced() -> None:
    assert len(LABELLED) >= 120
    positive = sum(1 for m in LABELLED if m["expect"])
    assert 0.4 <= positive / len(LABELLED) <= 0.6, positive
    names = {lex.name for lex in POLICY.supervision.lexicons}
    for m in LABELLED:
        assert set(m) <= {"text", "direction", "language", "expect", "set"}, m
        assert m["direction"] in ("inbound", "outbound") and set(m["expect"]) <= names, m
        assert m.get("set", "dev") in ("dev", "holdout"), m


def test_shipped_lexicon_precision_and_recall() -> None:
    dev = [m for m in LABELLED if m.get("set", "dev") == "dev"]
    holdout = [m for m in LABELLED if m.get("set") == "holdout"]
    dev_counts, dev_misses = _score(dev)
    holdout_counts, holdout_misses = _score(holdout)
    dev_table, precision, recall = _table("dev", dev_counts)
    holdout_table, _, _ = _table("holdout", holdout_counts)
    report = (
        f"\nSupervision lexicons, per (message, lexicon) pair; dev: {len(dev)} messages the lexicon was "
        f"tuned on, holdout: {len(holdout)} never tuned on\n{dev_table}\n{holdout_table}\n"
        "dev misses:\n  " + "\n  ".join(dev_misses) + "\nholdout misses:\n  " + "\n  ".join(holdout_misses)
    )
    print(report)
    assert precision >= 0.95 and recall >= 0.9, report


# --------------------------------------------------------------------------------------------
# Speed (printed, not asserted)


def _rates(checks: list[Supervise], sends: list[SendOut], rounds: int = 10) -> tuple[float, float]:
    """Calls per second of supervise over ``checks`` and of decide over ``sends``: best of five
    runs, taken in turns, so a busy machine slows both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(5):
        for k, (fn, calls) in enumerate(((supervise, checks), (decide, sends))):
            start = time.perf_counter()
            for _ in range(rounds):
                for call in calls:
                    fn(call, POLICY)
            best[k] = min(best[k], time.perf_counter() - start)
    return rounds * len(checks) / best[0], rounds * len(sends) / best[1]


def test_speed_of_supervise_next_to_the_sharing_decision() -> None:
    room = RoomState("!portal:localhost", frozenset({"@employee:localhost"}))
    checks = [
        Supervise(m["text"], m["direction"], f"$s{i}", m.get("language")) for i, m in enumerate(LABELLED)
    ]
    sends = [SendOut("@employee:localhost", room, "text", m["text"]) for m in LABELLED]
    quiet = [k for k, c in enumerate(checks) if not supervise(c, POLICY).hits]
    lines = [
        "",
        f"speed on {len(LABELLED)} labelled messages ({len(LABELLED) - len(quiet)} with hits), one core:",
    ]
    for label, picked in (("all labelled", range(len(checks))), ("without hits", quiet)):
        supervised, shared = _rates([checks[k] for k in picked], [sends[k] for k in picked])
        lines.append(
            f"  {label}: supervise {supervised:,.0f} decisions/s, decide(SendOut) {shared:,.0f} decisions/s; "
            f"supervise takes {shared / supervised:.2f}x the time of the sharing decision"
        )
    print("\n".join(lines))
