"""Tests for helpers/dictionary_tool.py: the leak-free split (on the real dev data, found by the normal
lookup order) and on small hand-made rows for the official recipe; the dictionary's lookup rule
(checked against the paper's regex scan); the tool protocol with scripted fake models; rewards per
episode status; SFT examples; and random strings through the parsers (never raise)."""

import os
import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import data as D
from helpers import dictionary_tool as T

# sizes of the dev-only split of the AmericasNLP 2025 dev set (data/wayuunaiki_split.md)
DEV_ONLY_SIZES = {0: (1681, 342, 391), 1: (1681, 347, 386)}  # seed: (dictionary, train, eval)
STATUSES = {"call", "answer", "no_answer", "too_many_calls", "malformed_call", "empty_query", "too_long"}


def fuzz(n):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.setenv(D.NO_DOWNLOAD_ENV, "1")


@pytest.fixture(scope="module")
def dev_rows():
    """The real dev set; skip (fail on CI) when it is not there."""
    try:
        return D.load_wayuunaiki("dev", download=False)
    except D.DataMissingError as e:
        reason = (f"Wayuunaiki dev files missing ({str(e).splitlines()[0]}); set {D.DATA_ENV} or run "
                  f"`python -m helpers.data --download`")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def row(es, guc, source="bible"):
    return {"es": es, "guc": guc, "source": source}


ENTRIES = [
    ("casa", "miichi"),
    ("mi casa", "taipia"),
    ("las casas", "miichiirua"),            # "casa" must not match "casas"
    ("CASA grande", "miichi mainma"),
    ("casamiento", "kasaalaa"),
    ("en casa de tom", "nipialu'u tom"),
    ("la casa", "tü miichikat"),
    ("casa, perro", "miichi, erü"),         # 7th "casa" hit: beyond the first 5
    ("perro", "erü"),
    ("agua", "wüin"),
]
DICT = T.Dictionary(ENTRIES)


class Script:
    """A fake model: returns its chunks in order (then "" forever) and records what it was shown."""

    def __init__(self, *chunks):
        self.chunks, self.seen = list(chunks), []

    def __call__(self, text):
        self.seen.append(text)
        return self.chunks.pop(0) if self.chunks else ""


def call(word, lead=" "):
    return f"{lead}<spa_to_wayuu> {word} </spa_to_wayuu>"


# -----------------------------------------------------------------------------
# normalisation and the split


def test_normalize():
    assert T.normalize("  Hola,   MUNDO!! ") == "hola, mundo"
    assert T.normalize("Tayaa'.") == "tayaa'"            # the apostrophe is a letter
    assert T.normalize("¿Qué?") == "¿qué"                 # leading punctuation kept
    assert T.normalize("Straße…") == "strasse"            # case-folded; ellipsis stripped
    assert T.normalize("cafe\u0301") == T.normalize("café")  # NFC


def test_split_sizes_are_deterministic_for_a_seed(dev_rows):
    for seed, sizes in DEV_ONLY_SIZES.items():
        split = T.build_split(dev_rows, seed=seed)
        assert (len(split["dictionary"]), len(split["train"]), len(split["eval"])) == sizes
        assert split["mode"] == "dev-only" and f"seed {seed}" in split["recipe"]
    a, b = T.build_split(dev_rows, seed=0), T.build_split(list(reversed(dev_rows)), seed=0)
    assert {r["line"] for r in a["eval"]} == {r["line"] for r in b["eval"]}  # file order does not matter
    assert {r["line"] for r in a["eval"]} != {r["line"] for r in T.build_split(dev_rows, seed=1)["eval"]}
    assert all(r["source"] != "dictionary" for r in a["train"] + a["eval"])


def test_our_split_has_no_leakage(dev_rows):
    for long_lines in (False, True):
        report = T.leakage_report(T.build_split(dev_rows, seed=0, long_dictionary_lines=long_lines))
        counts = {k: v for k, v in report.items() if k.startswith("eval_") and not k.endswith("_rate")}
        assert len(counts) == 7 and all(v == 0 for v in counts.values()), counts
        assert report["n_eval"] > 300 and report["n_train"] > 300 and report["n_dictionary"] > 1600


def test_paper_style_leakage_is_a_quarter_of_dev(dev_rows):
    report = T.paper_style_leakage(dev_rows)
    assert report["rate"] > 0.2
    assert (report["eval_pairs_in_dictionary"], report["n_eval"]) == (1682, 6635)  # SOURCE.md: 1,682 + 3 nan


def test_load_split_falls_back_to_dev_only(dev_rows):
    folder = D.data_dir()
    if folder and (folder / "wayuunaiki" / "train.es").exists():
        pytest.skip("the official train files are present here; load_split uses them")
    split = T.load_split(seed=0)
    assert split["mode"] == "dev-only" and split["recipe"].startswith("dev-only")
    assert len(split["eval"]) == DEV_ONLY_SIZES[0][2]


def test_dev_only_split_drops_dictionary_entries_that_leak():
    sentences = [row(f"frase numero {i}", f"pütchi {i}") for i in range(40)]
    split = T.build_split(sentences, seed=3)
    ev = split["eval"][0]
    rows = sentences + [row(ev["es"].upper() + ".", "otro", "dictionary"),   # same source as an eval pair
                        row("otra cosa", ev["guc"], "dictionary"),            # same reference
                        row("palabra", "pütchi", "dictionary"),
                        row("palabra", "pütchi", "dictionary"),               # exact duplicate
                        row("una frase de diccionario muy larga", "x", "dictionary")]  # > 5 words: not an entry
    split = T.build_split(rows, seed=3)
    assert split["dictionary"] == [("palabra", "pütchi")]
    assert split["dropped"] == {"dictionary": 2, "train": 0}
    assert len(split["train"]) + len(split["eval"]) == 40
    assert T.leakage_report(split)["eval_leaked"] == 0
    with_long = T.build_split(rows, seed=3, long_dictionary_lines=True)
    assert len(with_long["train"]) + len(with_long["eval"]) == 41


def test_official_split_uses_train_for_dictionary_and_training():
    dev = [row("el perro come", "eküshi erü"), row("la casa", "tü miichi", "dictionary"),
           row("hola amigo", "jamaya", "books")]
    train = [row("casa", "miichi", "dictionary"), row("la casa", "tü miichi", "dictionary"),
             row("el perro come.", "otro", "bible"),          # same source as a dev sentence: dropped
             row("otra frase", "jamaya", "bible"),            # same reference as a dev sentence: dropped
             row("una frase nueva", "wanee pütchi", "bible"),
             row("hola amigo", "x", "dictionary")]            # dictionary entry = an eval source: dropped
    split = T.build_split(dev, train)
    assert split["mode"] == "official" and split["eval_fraction"] is None
    assert split["dictionary"] == [("casa", "miichi"), ("la casa", "tü miichi")]
    assert [r["es"] for r in split["train"]] == ["una frase nueva"]
    assert [r["es"] for r in split["eval"]] == ["el perro come", "hola amigo"]
    assert split["dropped"] == {"dictionary": 1, "train": 2}
    assert T.leakage_report(split)["eval_leaked"] == 0


def test_leakage_report_counts_each_kind():
    split = {"dictionary": [("a", "x"), ("b", "y")], "train": [row("c", "z")],
             "eval": [row("A.", "x"), row("b", "q"), row("C", "w"), row("d", "z "), row("e", "f")]}
    r = T.leakage_report(split)
    assert (r["eval_pairs_in_dictionary"], r["eval_refs_in_dictionary"], r["eval_sources_in_dictionary"]) == (1, 1, 2)
    assert (r["eval_sources_in_train"], r["eval_refs_in_train"], r["eval_pairs_in_train"]) == (1, 1, 0)
    assert r["eval_leaked"] == 4 and r["eval_leaked_rate"] == 0.8 and r["n_eval"] == 5


def test_build_split_rejects_a_bad_fraction():
    with pytest.raises(ValueError):
        T.build_split([], eval_fraction=1.0)


# -----------------------------------------------------------------------------
# the dictionary


def test_lookup_whole_word_case_insensitive_first_five():
    assert DICT.lookup("casa") == [ENTRIES[i] for i in (0, 1, 3, 5, 6)]   # not "casas", not "casamiento"
    assert DICT.lookup("CaSa") == DICT.lookup("casa")
    assert DICT.lookup("  casa ") == DICT.lookup("casa")
    assert DICT.lookup("casa", limit=2) == [ENTRIES[0], ENTRIES[1]]
    assert DICT.lookup("casas") == [("las casas", "miichiirua")]
    assert DICT.lookup("mi casa") == [("mi casa", "taipia")]              # phrases match as a whole
    assert DICT.lookup("casa, perro") == [("casa, perro", "miichi, erü")]
    assert DICT.lookup("gato") == [] and DICT.lookup("") == [] and DICT.lookup("   ") == []
    for weird in ("(", "a+b", "\\", "[", "*", "casa|perro", ".*"):        # escaped, as in the paper
        assert DICT.lookup(weird) == []


def test_lookup_matches_the_papers_regex_scan():
    def paper(word, entries, limit=5):  # the paper's rule (create_sft_dataset.py), on clean pairs
        pat = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        return [e for e in entries if pat.search(e[0])][:limit]

    entries = ENTRIES + [("Isla", "a"), ("ısla", "b"), ("İsla", "c"), ("ſol", "d"), ("sol", "e"), ("\u212ailo", "f"),
                         ("straße", "g"), ("µ", "h"), ("μ", "i"), ("niño", "j"), ("NIÑO", "k"), ("el—dia", "l")]
    d = T.Dictionary(entries)
    for word in ("isla", "ISLA", "ısla", "İsla", "sol", "SOL", "ſol", "kilo", "STRASSE", "straße", "µ", "Μ",
                 "niño", "Niño", "el", "dia", "—dia", "el—", "casa", "agua"):
        assert d.lookup(word) == paper(word, entries), word


TRICKY = "aAbBıIİiſsSKkßµμéÉñÑ -.,'—¿?"  # re.IGNORECASE equates ı/I/i, ſ/s/S, K/k/K, µ/μ


@fuzz(300)
@given(st.lists(st.tuples(st.text(TRICKY, max_size=12), st.just("g")), max_size=25), st.text(TRICKY, max_size=6))
def test_lookup_equals_brute_force(entries, word):
    pat = re.compile(rf"\b{re.escape(word.strip())}\b", re.IGNORECASE)
    expected = [e for e in entries if pat.search(e[0])][:5] if word.strip() else []
    assert T.Dictionary(entries).lookup(word) == expected


def test_latin1_case_rule_equals_re_ignorecase():
    # the index relies on this: inside Latin-1, re.IGNORECASE equality is lower() equality
    chars = [chr(i) for i in range(256)]
    for a in chars:
        pat = re.compile(re.escape(a), re.IGNORECASE)
        assert all(bool(pat.fullmatch(b)) == (a.lower() == b.lower()) for b in chars), a
        assert len(a.lower()) == 1 and ord(a.lower()) < 256


def test_fold_accents_option():
    d = T.Dictionary([("corrio rapido", "x"), ("nino", "y")], fold_accents=True)
    assert d.lookup("corrió") == [("corrio rapido", "x")] and d.lookup("niño") == [("nino", "y")]
    assert T.Dictionary([("corrio rapido", "x")]).lookup("corrió") == []   # the paper's rule


def test_render_matches_is_the_papers_text():
    assert T.render_matches([("casa", "miichi"), ("mi casa", "taipia")]) == \
        " <matches> casa: miichi\nmi casa: taipia </matches>"
    assert T.render_matches([]) == " <matches> No matches found </matches>"


# -----------------------------------------------------------------------------
# parsing and stepping


@pytest.mark.parametrize("text, query", [
    ("<spa_to_wayuu> casa </spa_to_wayuu>", "casa"),
    ("I need it: <spa_to_wayuu>mi casa</spa_to_wayuu>\n", "mi casa"),
    ("<spa_to_wayuu> a </spa_to_wayuu> <matches> x </matches> <spa_to_wayuu> b </spa_to_wayuu>", "b"),
    ("<spa_to_wayuu>   </spa_to_wayuu>", ""),
    ("<spa_to_wayuu> casa", None),                                        # unclosed
    ("casa </spa_to_wayuu>", None),                                       # no opening tag
    ("<spa_to_wayuu> a <spa_to_wayuu> b </spa_to_wayuu>", None),          # nested
    ("<spa_to_wayuu> <answer> b </spa_to_wayuu>", None),                  # a tag inside the query
    ("<spa_to_wayuu> " + "x" * 10_240 + " </spa_to_wayuu>", None),        # 10 KB query
    ("<spa_to_wayuu> casa </spa_to_wayuu> more", None),                   # does not end with the call
    ("", None), (None, None),
])
def test_parse_tool_call(text, query):
    assert T.parse_tool_call(text) == query


def test_cut_at_stop():
    assert T.cut_at_stop("a </answer> b </spa_to_wayuu>") == "a </answer>"
    assert T.cut_at_stop("x </spa_to_wayuu><answer> y </answer>") == "x </spa_to_wayuu>"
    assert T.cut_at_stop("no stop") == "no stop"


@pytest.mark.parametrize("history, new, calls, expected", [
    ("", "<spa_to_wayuu> casa </spa_to_wayuu>", 0, (T.render_matches(DICT.lookup("casa")), False, "call")),
    ("", "<spa_to_wayuu> gato </spa_to_wayuu>", 3, (" <matches> No matches found </matches>", False, "call")),
    ("", "<spa_to_wayuu> casa </spa_to_wayuu>", 4, ("", True, "too_many_calls")),
    ("", "<answer> miichi </answer>", 0, ("", True, "answer")),
    ("", "<answer>  </answer>", 0, ("", True, "no_answer")),
    ("", "miichi </answer>", 0, ("", True, "no_answer")),
    ("", "I do not know.", 0, ("", True, "no_answer")),
    ("", "", 0, ("", True, "no_answer")),
    ("", "<spa_to_wayuu> casa", 0, ("", True, "malformed_call")),          # stopped inside a call
    ("", "<spa_to_wayuu></spa_to_wayuu>", 0, ("", True, "empty_query")),
    ("", "<answer> x <spa_to_wayuu> casa </spa_to_wayuu>", 0, ("", True, "malformed_call")),
    ("<answer> x", " <spa_to_wayuu> casa </spa_to_wayuu>", 1, ("", True, "malformed_call")),
    ("x" * T.MAX_COMPLETION_CHARS, "<answer> a </answer>", 0, ("", True, "too_long")),
])
def test_step(history, new, calls, expected):
    assert T.step(history, new, DICT, calls) == expected


# -----------------------------------------------------------------------------
# episodes with scripted models


def test_episode_answers_directly():
    model = Script("<answer> miichi </answer>")
    ep = T.run_episode(model, "PROMPT", DICT)
    assert (ep.status, ep.answer, ep.n_calls) == ("answer", "miichi", 0)
    assert ep.segments == [T.Segment("model", "<answer> miichi </answer>")] and model.seen == ["PROMPT"]
    assert ep.text == "PROMPT<answer> miichi </answer>"


def test_episode_one_lookup_then_answer():
    model = Script(call("casa", lead=""), " <answer> miichi </answer>")
    ep = T.run_episode(model, "P:", DICT)
    matches = T.render_matches(DICT.lookup("casa"))
    assert (ep.status, ep.queries, ep.answer) == ("answer", ["casa"], "miichi")
    assert [s.role for s in ep.segments] == ["model", "environment", "model"]
    assert ep.segments[1].text == matches
    assert model.seen[1] == "P:" + call("casa", lead="") + matches   # the model sees the matches


def test_episode_stops_after_max_calls():
    model = Script(*[call(w) for w in ("casa", "perro", "agua", "gato", "mi casa")], " <answer> x </answer>")
    ep = T.run_episode(model, "", DICT)
    assert (ep.status, ep.n_calls, ep.answer) == ("too_many_calls", 4, "")
    assert ep.queries == ["casa", "perro", "agua", "gato"]
    assert [s.role for s in ep.segments].count("environment") == 4 and len(model.seen) == 5
    assert ep.segments[-1] == T.Segment("model", call("mi casa"))  # the fifth call is not answered
    assert T.run_episode(Script(call("casa"), call("agua")), "", DICT, max_calls=1).status == "too_many_calls"


def test_episode_endless_text_without_tags():
    ep = T.run_episode(Script("bla " * 5000), "", DICT)   # the generator hit its token limit
    assert (ep.status, ep.n_calls, len(ep.segments)) == ("no_answer", 0, 1)
    ep = T.run_episode(Script("x" * (T.MAX_COMPLETION_CHARS + 1)), "", DICT)
    assert ep.status == "too_long"
    forever = T.run_episode(lambda text: call("casa"), "", DICT)  # calls forever: bounded by max_calls
    assert (forever.status, forever.n_calls) == ("too_many_calls", T.MAX_CALLS)
    assert T.run_episode(lambda text: None, "", DICT).status == "no_answer"


def test_episode_malformed_calls():
    for chunk, status in [(" <spa_to_wayuu> a <spa_to_wayuu> b </spa_to_wayuu>", "malformed_call"),
                          (" <spa_to_wayuu> casa", "malformed_call"),
                          (" <spa_to_wayuu> " + "y" * 10_240 + " </spa_to_wayuu>", "malformed_call"),
                          (" <spa_to_wayuu>  </spa_to_wayuu>", "empty_query"),
                          ("<answer> x <spa_to_wayuu> casa </spa_to_wayuu>", "malformed_call")]:
        ep = T.run_episode(Script(call("agua"), chunk, "<answer> never read </answer>"), "", DICT)
        assert (ep.status, ep.n_calls, ep.answer) == (status, 1, ""), chunk


def test_text_after_a_stop_string_is_dropped():
    ep = T.run_episode(Script("<answer> a </answer> and <spa_to_wayuu> b </spa_to_wayuu>"), "", DICT)
    assert (ep.status, ep.completion) == ("answer", "<answer> a </answer>")


def test_environment_segments_are_exactly_the_matches_blocks():
    model = Script(call("casa", ""), call("gato"), " <answer> miichi </answer>")
    ep = T.run_episode(model, "", DICT)
    env = [s.text for s in ep.segments if s.role == "environment"]
    assert env == [T.render_matches(DICT.lookup("casa")), T.render_matches([])]
    assert re.findall(r" <matches>.*?</matches>", ep.completion, re.S) == env
    model_text = "".join(s.text for s in ep.segments if s.role == "model")
    assert "<matches>" not in model_text
    assert model_text == call("casa", "") + call("gato") + " <answer> miichi </answer>"
    assert "".join(s.text for s in ep.segments) == ep.completion


def test_episode_reward_per_status():
    good = T.run_episode(Script("<answer> eküshi erü </answer>"), "", DICT)
    assert T.episode_reward(good, "eküshi erü") == pytest.approx(1.0)
    assert T.episode_reward(good, "eküshi erü", metric="chrf") == pytest.approx(1.0)
    assert 0.0 < T.episode_reward(good, "eküshi erü wanee", metric="chrf") < 1.0
    for status in T.FAIL_REWARD:
        ep = T.Episode(prompt="", segments=[T.Segment("model", "<answer> eküshi erü </answer>")], status=status)
        assert T.episode_reward(ep, "eküshi erü") == T.FAIL_REWARD[status] == 0.0
    with pytest.raises(ValueError):
        T.episode_reward(good, "x", metric="rouge")


def test_episodes_are_fast():
    d = T.Dictionary([(f"palabra{i} casa", f"g{i}") for i in range(2000)])
    start = time.perf_counter()
    for i in range(2000):
        T.run_episode(Script(call(f"palabra{i % 50}", ""), " <answer> g </answer>"), "", d)
    assert time.perf_counter() - start < 4.0  # about 0.1 s on one core; generous for shared machines


# -----------------------------------------------------------------------------
# SFT examples and the prompt


def test_sft_example_structure():
    rng = random.Random(0)
    ks = set()
    for _ in range(60):
        ex = T.sft_example("¿Tom vio la casa, el perro y el agua?", "nü'ürüin tom", DICT, rng)
        segs = ex["completion_segments"]
        ks.add(len(ex["queries"]))
        assert ex["prompt"] == T.prompt_messages("¿Tom vio la casa, el perro y el agua?")
        assert [s.role for s in segs] == ["model", "environment"] * len(ex["queries"]) + ["model"]
        assert segs[-1].text.strip() == "<answer> nü'ürüin tom </answer>"
        assert ex["completion"] == "".join(s.text for s in segs)
        for word, (m, e) in zip(ex["queries"], zip(segs[0::2], segs[1::2])):
            assert T.parse_tool_call(m.text) == word and e.text == T.render_matches(DICT.lookup(word))
        assert len(set(w.lower() for w in ex["queries"])) == len(ex["queries"]) <= T.MAX_CALLS
        assert all(w.isalpha() for w in ex["queries"])  # no punctuation in a query
    assert ks == {0, 1, 2, 3, 4}


def test_sft_example_replays_as_an_episode():
    # a model that writes exactly the example's model segments sees exactly its environment segments
    ex = T.sft_example("la casa y el perro", "x y", DICT, random.Random(5))
    model = Script(*[s.text for s in ex["completion_segments"] if s.role == "model"])
    ep = T.run_episode(model, "", DICT)
    assert ep.segments == ex["completion_segments"] and ep.status == "answer"


def test_sft_example_short_sentence_and_determinism():
    a = T.sft_example("hola", "jamaya", DICT, random.Random(1))
    assert a == T.sft_example("hola", "jamaya", DICT, random.Random(1)) and len(a["queries"]) <= 1
    assert T.sft_example("", "x", DICT, random.Random(0))["completion"] == "<answer> x </answer>"


def test_prompt_template():
    user = T.prompt_messages("La casa {es} grande.")[1]["content"]
    assert user.endswith("Spanish text: La casa {es} grande.")
    for tag in ("<spa_to_wayuu>", "</spa_to_wayuu>", "<matches>", "<answer>"):
        assert tag in T.PROMPT_TEMPLATE
    assert "<spa_to_wayuu>" not in T.prompt_messages("x", tool=False)[1]["content"]
    assert T.STOP_STRINGS == ["</spa_to_wayuu>", "</answer>"]


# -----------------------------------------------------------------------------
# fuzz: nothing raises on model text

PIECES = st.sampled_from(["<spa_to_wayuu>", "</spa_to_wayuu>", "<answer>", "</answer>", "<matches>", "</matches>",
                          "casa", " ", "\n", "<", ">", "ñ", "\\b", "(", "*", "İ", "\x00", "x" * 200])
CHUNK = st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=12).map("".join)


@fuzz(400)
@given(CHUNK, CHUNK, st.integers(0, 6))
def test_step_and_parse_never_raise(history, new, calls):
    T.parse_tool_call(new)
    append, done, status = T.step(history, new, DICT, calls)
    assert status in STATUSES and done == (status != "call")
    assert append == "" if done else append.startswith(" <matches> ") and append.endswith(" </matches>")


@fuzz(200)
@given(st.lists(CHUNK, min_size=1, max_size=7))
def test_run_episode_never_raises(chunks):
    ep = T.run_episode(Script(*chunks), "p", DICT)
    assert ep.status in STATUSES - {"call"} and ep.n_calls <= T.MAX_CALLS
    assert T.episode_reward(ep, "casa") >= 0.0
    assert all(s.role == "model" or s.text.startswith(" <matches>") for s in ep.segments)
