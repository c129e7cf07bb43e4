"""Spanish->Wayuunaiki translation with a dictionary tool: the leak-free data split, the dictionary,
and the tool protocol of Mosquera et al. 2025 (arXiv:2508.19481, code: Manuel-2011/rl_translator).

The protocol. The model translates one Spanish sentence. While it writes, it may look a Spanish
word (or short phrase) up:

    <spa_to_wayuu> casa </spa_to_wayuu>                                   written by the model
     <matches> casa: miichi\\nmi casa: taipia </matches>                    appended by the environment
    <answer> ... </answer>                                                 written by the model, ends it

Generation stops at a closing tag (STOP_STRINGS). After `</spa_to_wayuu>` the environment appends
the first LOOKUP_LIMIT dictionary entries whose Spanish side contains the query as a whole word,
case-insensitively, or `<matches> No matches found </matches>`. At most MAX_CALLS lookups are
answered; the episode ends at `</answer>`, or with a failure status that gets FAIL_REWARD (see
step). The environment's text is tagged so a trainer can leave it out of the loss.

The split. The AmericasNLP 2025 dictionary lines (source = "dictionary", <= 5 Spanish words) are
the tool's dictionary; sentence pairs (bible, books, other sources) are for training and
evaluation. The paper's dictionary holds 25% of the dev set verbatim (paper_style_leakage shows
it); build_split removes every dictionary entry and training pair that shares a normalised side
with an evaluation pair, and leakage_report checks that nothing is left. data/wayuunaiki_split.md
documents the recipe and its numbers.

Pure Python (no torch), so thousands of episodes are scored per second.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import re
import unicodedata
from collections import namedtuple
from dataclasses import dataclass, field

from helpers import rewards

# -----------------------------------------------------------------------------
# config

# the tags (the paper's), and where generation stops: a tool call or the answer is complete
CALL_OPEN, CALL_CLOSE = "<spa_to_wayuu>", "</spa_to_wayuu>"
MATCHES_OPEN, MATCHES_CLOSE = "<matches>", "</matches>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
STOP_STRINGS = [CALL_CLOSE, ANSWER_CLOSE]
NO_MATCHES = "No matches found"

LOOKUP_LIMIT = 5        # entries per lookup (the paper's max_matches)
MAX_CALLS = 4           # answered lookups per episode (the paper's actions_num)
MAX_QUERY_CHARS = 100   # a query longer than this is a malformed call: entries have <= 5 words
MAX_COMPLETION_CHARS = rewards.MAX_COMPLETION_CHARS  # beyond it the answer would not be read anyway
DICT_MAX_WORDS = 5      # the paper: "entries with five words or fewer on the Spanish side"
EVAL_FRACTION = 0.5     # dev-only recipe: share of the sentence pairs held out for evaluation
LOOKUP_CACHE_SIZE = 1 << 16

# Every status that is not "answer" ends the episode with this reward. The paper's code gives the
# same, implicitly: no extractable answer -> BLEU of "" = 0. Kept at 0 so BLEU and chrF++ rewards
# stay in [0, 1]; set a negative value here to penalise format failures.
FAIL_REWARD = {"no_answer": 0.0, "too_many_calls": 0.0, "malformed_call": 0.0, "empty_query": 0.0,
               "too_long": 0.0}

# The paper's chat (create_sft_dataset.py, evaluation.py): this system prompt, and the template as
# the user message. Verbatim except one typo fixed ("doind" -> "doing"). It says "as many times as
# necessary" although the code answers at most 4 calls; we keep the wording and the cap.
SYSTEM_PROMPT = "You are a helpful assistant."
PROMPT_TEMPLATE = """Translate the following Spanish text into Wayuunaiki.
Begin by identifying any words or phrases you're unsure how to translate. Then, you may look up those words using the dictionary tool by wrapping the Spanish word in <spa_to_wayuu> and </spa_to_wayuu>,
and doing that for every unknown word. The dictionary will return matches enclosed in <matches> and </matches>. You can use the dictionary as many times as necessary.
Once you have all the information you need, provide the final translation enclosed in <answer> and </answer>. For example: <answer> xxx </answer>.

Spanish text: {}"""
# the paper's prompt for the systems without the tool (evaluation.py)
PROMPT_TEMPLATE_NO_TOOL = """Translate the following Spanish text into Wayuunaiki. Provide the final translation enclosed in <answer> and </answer>. For example: <answer> xxx </answer>.
Spanish text: {}"""

_WORD_RE = re.compile(r"\w+")
_LETTERS_RE = re.compile(r"[^\W\d_]+")
_FINAL_PUNCT_RE = re.compile(r"[\s.,;:!?\u2026]+$")

# A piece of a completion: role "model" (generated, trained on) or "environment" (tool output,
# masked out of the loss).
Segment = namedtuple("Segment", "role text")

# -----------------------------------------------------------------------------
# normalisation and the split


def normalize(text: str) -> str:
    """The form in which two strings count as the same ("verbatim") for splitting and leak checks:
    Unicode NFC, case-folded, whitespace runs collapsed to one space, and trailing punctuation
    (. , ; : ! ? and the ellipsis) and spaces stripped. Leading punctuation (¿ ¡) and accents are kept;
    the apostrophe is a letter in Wayuunaiki (glottal stop) and is never touched."""
    text = " ".join(unicodedata.normalize("NFC", text).casefold().split())
    return _FINAL_PUNCT_RE.sub("", text)


def n_words(es: str) -> int:
    """Spanish words as the dictionary filter counts them: whitespace-separated tokens."""
    return len(es.split())


def is_dictionary_line(row: dict) -> bool:
    return row["source"] == "dictionary" and n_words(row["es"]) <= DICT_MAX_WORDS


def is_sentence(row: dict, long_dictionary_lines: bool = False) -> bool:
    """Sentence pairs: every source but "dictionary"; with long_dictionary_lines also the
    "dictionary" lines with more than DICT_MAX_WORDS Spanish words (which are sentences too)."""
    if row["source"] != "dictionary":
        return True
    return long_dictionary_lines and n_words(row["es"]) > DICT_MAX_WORDS


def eval_bucket(es: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by (seed, normalised Spanish): the same sentence always lands on the
    same side, whatever the file order, and two spellings that normalise alike land together."""
    digest = hashlib.sha256(f"{seed}\x00{normalize(es)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _pair(item) -> tuple[str, str]:
    return (item["es"], item["guc"]) if isinstance(item, dict) else (item[0], item[1])


def _dedupe(pairs):
    return list(dict.fromkeys(pairs))  # exact duplicates would waste lookup slots; order kept


def _sides(items) -> tuple[set, set]:
    es, guc = set(), set()
    for item in items:
        e, g = _pair(item)
        es.add(normalize(e))
        guc.add(normalize(g))
    return es, guc


def _drop_overlap(items, es_set, guc_set) -> tuple[list, int]:
    """Items sharing a normalised Spanish or Wayuunaiki side with the evaluation set are dropped."""
    kept = [x for x in items if normalize(_pair(x)[0]) not in es_set and normalize(_pair(x)[1]) not in guc_set]
    return kept, len(items) - len(kept)


def build_split(rows_dev: list[dict], rows_train: list[dict] | None = None, eval_fraction: float = EVAL_FRACTION,
                seed: int = 0, long_dictionary_lines: bool = False) -> dict:
    """The leak-free split. Rows are {"es", "guc", "source"} dicts (data.load_wayuunaiki).

    official (rows_train given):
        dictionary = train lines with source "dictionary" and <= 5 Spanish words (the paper's filter)
        train      = train sentence pairs;  eval = all dev sentence pairs  (eval_fraction unused)
    dev-only (rows_train None; offline and CI, as train.es/train.guc are not stored):
        dictionary = dev lines with source "dictionary" and <= 5 Spanish words
        sentence pairs of dev -> eval if eval_bucket(es, seed) < eval_fraction, else train
    Both: dictionary entries and training pairs whose normalised es or guc equals that of any
    evaluation pair are removed, so leakage_report is 0 by construction; exact duplicate dictionary
    entries are dropped (file order kept, which decides the first 5 matches).

    Returns {"dictionary": [(es, guc)], "train": [rows], "eval": [rows], "mode": "official" or
    "dev-only", "seed", "eval_fraction", "dropped": {"dictionary": n, "train": n}, "recipe": text}.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    if rows_train is None:
        mode, dict_rows = "dev-only", rows_dev
        sentences = [r for r in rows_dev if is_sentence(r, long_dictionary_lines)]
        evals = [r for r in sentences if eval_bucket(r["es"], seed) < eval_fraction]
        train = [r for r in sentences if eval_bucket(r["es"], seed) >= eval_fraction]
    else:
        mode, dict_rows = "official", rows_train
        evals = [r for r in rows_dev if is_sentence(r, long_dictionary_lines)]
        train = [r for r in rows_train if is_sentence(r, long_dictionary_lines)]
    candidates = _dedupe(_pair(r) for r in dict_rows if is_dictionary_line(r))
    eval_es, eval_guc = _sides(evals)
    dictionary, dropped_dict = _drop_overlap(candidates, eval_es, eval_guc)
    train, dropped_train = _drop_overlap(train, eval_es, eval_guc)  # 0 in dev-only: es hashed apart
    split = {"dictionary": dictionary, "train": train, "eval": evals, "mode": mode, "seed": seed,
             "eval_fraction": eval_fraction if mode == "dev-only" else None,
             "long_dictionary_lines": long_dictionary_lines,
             "dropped": {"dictionary": dropped_dict, "train": dropped_train}}
    split["recipe"] = _describe(split, len(candidates))
    return split


def _describe(split: dict, n_candidates: int) -> str:
    d, t, e = len(split["dictionary"]), len(split["train"]), len(split["eval"])
    sentences = "non-dictionary sources" + (" plus dictionary lines with > 5 Spanish words"
                                           if split["long_dictionary_lines"] else "")
    if split["mode"] == "official":
        where = (f"dictionary from train lines with source 'dictionary' and <= {DICT_MAX_WORDS} Spanish words; "
                 f"train = train sentence pairs ({sentences}), eval = dev sentence pairs")
    else:
        where = (f"dev only (official train files absent): dictionary from dev lines with source 'dictionary' "
                 f"and <= {DICT_MAX_WORDS} Spanish words; dev sentence pairs ({sentences}) split by "
                 f"sha256(seed, normalised Spanish) < {split['eval_fraction']} -> eval, seed {split['seed']}. "
                 f"Trains on dev, which the shared task forbids: for teaching and CI only, scores are not "
                 f"comparable to AmericasNLP results")
    return (f"{split['mode']}: {where}. Sizes: dictionary {d:,} (of {n_candidates:,}; "
            f"{split['dropped']['dictionary']} removed for sharing a side with an eval pair), train {t:,} "
            f"({split['dropped']['train']} removed), eval {e:,}.")


def load_split(seed: int = 0, eval_fraction: float = EVAL_FRACTION, long_dictionary_lines: bool = False,
               download: bool | None = None) -> dict:
    """build_split on the local data: the official recipe when train.es/train.guc can be had (found,
    or downloaded where helpers.data allows it), else the dev-only recipe. split["mode"] and
    split["recipe"] say which was used."""
    from helpers import data

    rows_dev = data.load_wayuunaiki("dev", download=download)
    try:
        rows_train = data.load_wayuunaiki("train", download=download)
    except data.DataMissingError:
        rows_train = None
    return build_split(rows_dev, rows_train, eval_fraction=eval_fraction, seed=seed,
                       long_dictionary_lines=long_dictionary_lines)


def leakage_report(split: dict) -> dict:
    """How much of the evaluation set the model could have seen, comparing normalised strings:

        eval_refs_in_dictionary      eval Wayuunaiki references equal to a dictionary entry's guc side
        eval_sources_in_dictionary   eval Spanish sources equal to a dictionary entry's es side
        eval_pairs_in_dictionary     eval pairs equal to a dictionary entry (both sides)
        eval_sources_in_train        eval sources equal to a training source
        eval_refs_in_train           eval references equal to a training reference
        eval_pairs_in_train          eval pairs duplicated in training
        eval_leaked                  eval pairs with any of the above

    Each as a count and as `<name>_rate` (count / n_eval), plus n_eval, n_train, n_dictionary.
    """
    norm = lambda items: [(normalize(e), normalize(g)) for e, g in map(_pair, items)]  # noqa: E731
    ev, tr, di = norm(split["eval"]), norm(split["train"]), norm(split["dictionary"])
    d_es, d_guc, d_pair = {e for e, _ in di}, {g for _, g in di}, set(di)
    t_es, t_guc, t_pair = {e for e, _ in tr}, {g for _, g in tr}, set(tr)
    checks = {
        "eval_refs_in_dictionary": lambda e, g: g in d_guc,
        "eval_sources_in_dictionary": lambda e, g: e in d_es,
        "eval_pairs_in_dictionary": lambda e, g: (e, g) in d_pair,
        "eval_sources_in_train": lambda e, g: e in t_es,
        "eval_refs_in_train": lambda e, g: g in t_guc,
        "eval_pairs_in_train": lambda e, g: (e, g) in t_pair,
    }
    counts = {name: sum(1 for e, g in ev if check(e, g)) for name, check in checks.items()}
    counts["eval_leaked"] = sum(1 for e, g in ev if any(check(e, g) for check in checks.values()))
    n = len(ev)
    report = {"n_eval": n, "n_train": len(tr), "n_dictionary": len(di), **counts}
    report.update({f"{k}_rate": (v / n if n else 0.0) for k, v in counts.items()})
    return report


def paper_style_leakage(rows_dev: list[dict]) -> dict:
    """The paper's setup, rebuilt from dev alone: dictionary = every dev line with source
    "dictionary" and <= 5 Spanish words, evaluation = all of dev. Every such line is its own
    dictionary entry, so the model can copy its reference from a lookup. Returns leakage_report of
    that setup plus "rate" = eval_pairs_in_dictionary_rate (1,682 / 6,635 = 25.4% on the AmericasNLP
    2025 dev set; the paper's own dictionary file adds 3 more)."""
    split = {"dictionary": _dedupe(_pair(r) for r in rows_dev if is_dictionary_line(r)), "train": [],
             "eval": rows_dev}
    report = leakage_report(split)
    report["rate"] = report["eval_pairs_in_dictionary_rate"]
    return report


# -----------------------------------------------------------------------------
# the dictionary


def fold_accents(text: str) -> str:
    """Drop combining marks: "corrió" -> "corrio" (the dictionary's Spanish side has no accents)."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _latin1(text: str) -> bool:
    return all(ord(c) < 256 for c in text)


class Dictionary:
    """The lookup table behind <spa_to_wayuu>. The paper's rule (create_sft_dataset.py,
    spa_to_wayu_dictionary): scan the entries in file order, keep those whose Spanish side matches
    re.search(r"\\b" + re.escape(query) + r"\\b", es, re.IGNORECASE), stop after 5. So a query is
    matched as a whole word or whole phrase ("casa" finds "mi casa", not "casas").

    Same results, faster: entries are indexed by their lower-cased word tokens; a query is checked
    against the entries holding its rarest token, in file order. Inside Latin-1, re's
    case-insensitive match is exactly lower() equality (tests check all pairs); text with other
    characters (re also equates ı/I, ſ/s, K/k, ...) falls back to the paper's full scan, so
    the answer is always the regex's. Differences from the paper: the query is stripped, and an
    empty query finds nothing (the regex would match every entry).

    fold_accents=True also ignores accents on both sides (not the paper's rule: an option to try).
    """

    def __init__(self, entries, fold_accents: bool = False):
        self.entries = [_pair(e) for e in entries]
        self.fold = fold_accents
        self._keys = [self._key(es) for es, _ in self.entries]
        self._index: dict[str, list[int]] = {}
        self._slow: list[int] = []  # entries with non-Latin-1 text: regex-checked on every lookup
        for i, key in enumerate(self._keys):
            if not _latin1(key):
                self._slow.append(i)
                continue
            for token in dict.fromkeys(_WORD_RE.findall(key.lower())):
                self._index.setdefault(token, []).append(i)
        self._cache: dict[tuple, tuple] = {}

    def __len__(self):
        return len(self.entries)

    def _key(self, text: str) -> str:
        return fold_accents(text) if self.fold else text

    def lookup(self, word: str, limit: int = LOOKUP_LIMIT) -> list[tuple[str, str]]:
        """The first `limit` entries (es, guc), in file order, whose Spanish side contains `word` as a
        whole word or phrase, case-insensitively. [] for an empty query."""
        if not isinstance(word, str) or limit <= 0:
            return []
        query = self._key(word.strip())
        if not query:
            return []
        hit = self._cache.get((query, limit))
        if hit is not None:
            return list(hit)
        pattern = re.compile(r"\b" + re.escape(query) + r"\b", re.IGNORECASE)
        tokens = _WORD_RE.findall(query.lower())
        if tokens and _latin1(query):
            # every word token of a matching query is a whole token of the entry: the entries
            # holding the rarest one are a superset of the answer
            postings = min((self._index.get(t, ()) for t in set(tokens)), key=len)
            candidates = heapq.merge(postings, self._slow) if self._slow else postings
        else:
            candidates = range(len(self.entries))
        found = []
        for i in candidates:
            if pattern.search(self._keys[i]):
                found.append(self.entries[i])
                if len(found) == limit:
                    break
        if len(self._cache) >= LOOKUP_CACHE_SIZE:
            self._cache.clear()
        self._cache[(query, limit)] = tuple(found)
        return found


def render_matches(matches) -> str:
    """The environment's reply, exactly as the paper's code writes it: one leading space, entries
    as "es: guc" joined by newlines, one space inside each tag.

        " <matches> casa: miichi\\nmi casa: taipia </matches>"   or   " <matches> No matches found </matches>"
    """
    body = "\n".join(f"{es}: {guc}" for es, guc in matches) if matches else NO_MATCHES
    return f" {MATCHES_OPEN} {body} {MATCHES_CLOSE}"


# -----------------------------------------------------------------------------
# the protocol


def prompt_messages(es: str, tool: bool = True) -> list[dict]:
    """The paper's chat for one Spanish sentence: system prompt + the (tool or no-tool) template."""
    template = PROMPT_TEMPLATE if tool else PROMPT_TEMPLATE_NO_TOOL
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": template.format(es)}]


def cut_at_stop(text: str) -> str:
    """Text up to and including the first stop string; text after it is dropped (a generator that
    honours STOP_STRINGS never writes any)."""
    ends = [i + len(s) for s in STOP_STRINGS if (i := text.find(s)) >= 0]
    return text[:min(ends)] if ends else text


def parse_tool_call(text: str) -> str | None:
    """The query of the call that `text` ends with (`... <spa_to_wayuu> query </spa_to_wayuu>`),
    stripped; "" for an empty query. None for a malformed call: no closing tag at the end, no
    opening tag, two calls opened since the last one closed (nested or unclosed tags), a '<' or
    '>' inside the query, or a query over MAX_QUERY_CHARS."""
    if not isinstance(text, str):
        return None
    body = text.rstrip()
    if not body.endswith(CALL_CLOSE):
        return None
    body = body[:-len(CALL_CLOSE)]
    start = body.rfind(CALL_OPEN)
    if start < 0:
        return None
    before, query = body[:start], body[start + len(CALL_OPEN):]
    if before.rfind(CALL_OPEN) > before.rfind(CALL_CLOSE):
        return None
    if "<" in query or ">" in query or len(query) > MAX_QUERY_CHARS:
        return None
    return query.strip()


def step(history_text: str, new_text: str, dictionary: Dictionary, calls_so_far: int,
         max_calls: int = MAX_CALLS) -> tuple[str, bool, str]:
    """What the environment does after one generation chunk. history_text: the completion so far
    (model and environment text, not the prompt); new_text: the chunk, ending at a stop string, or
    wherever the generator stopped on its own (end of turn, token limit). Returns
    (text to append, done, status):

        ends with </spa_to_wayuu>, well formed, calls_so_far < max_calls
                                   -> (render_matches(lookup), False, "call")
        ends with </answer>        -> ("", True, "answer") if the chunk holds a non-empty
                                      <answer>...</answer>, else "no_answer"
        a call made while an <answer> is open, or parse_tool_call gives None
                                   -> "malformed_call"
        an empty query             -> "empty_query"
        a well-formed call when max_calls are used -> "too_many_calls" (not answered)
        stopped without a stop string -> "malformed_call" if a call was left open, else "no_answer"
        completion over MAX_COMPLETION_CHARS -> "too_long"

    The paper's code answers calls in up to actions_num + 1 = 5 rounds and keeps no statuses: an
    episode that never answers scores BLEU("") = 0. Here every ending is named, and all but
    "answer" get FAIL_REWARD. Never raises on model text.
    """
    new_text = cut_at_stop(new_text if isinstance(new_text, str) else "")
    history_text = history_text if isinstance(history_text, str) else ""
    if len(history_text) + len(new_text) > MAX_COMPLETION_CHARS:
        return "", True, "too_long"
    if new_text.endswith(ANSWER_CLOSE):
        return "", True, "answer" if rewards.extract_answer(new_text) else "no_answer"
    if new_text.endswith(CALL_CLOSE):
        text = history_text + new_text
        if text.rfind(ANSWER_OPEN) > text.rfind(ANSWER_CLOSE):  # the dictionary must not write the answer
            return "", True, "malformed_call"
        query = parse_tool_call(new_text)
        if query is None:
            return "", True, "malformed_call"
        if not query:
            return "", True, "empty_query"
        if calls_so_far >= max_calls:
            return "", True, "too_many_calls"
        return render_matches(dictionary.lookup(query)), False, "call"
    return "", True, "malformed_call" if CALL_OPEN in new_text else "no_answer"


@dataclass
class Episode:
    """One translation episode. segments: the completion as Segment(role, text) pieces in order,
    role "model" or "environment" (the matches blocks: mask them out of the loss)."""
    prompt: str
    segments: list = field(default_factory=list)
    queries: list = field(default_factory=list)
    status: str = "no_answer"
    answer: str = ""

    @property
    def completion(self) -> str:
        return "".join(s.text for s in self.segments)

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    @property
    def n_calls(self) -> int:
        return len(self.queries)


def run_episode(generate_fn, prompt: str, dictionary: Dictionary, max_calls: int = MAX_CALLS) -> Episode:
    """Alternate model and dictionary until the episode ends (see step).

    generate_fn(text) -> new text: the model's continuation of `text` (the prompt plus the completion
    so far), stopping after the first of STOP_STRINGS, which it includes (HF stop_strings do; vLLM
    needs include_stop_str_in_output=True). Text after a stop string is dropped. Each lookup needs one
    chunk and a chunk that is not a lookup ends the episode, so there are at most max_calls + 1 chunks.
    A trainer that works on tokens should keep the generated ids for model segments and tokenize
    environment segments on their own, as the paper does (its mask is 0 on the tool-output tokens).
    """
    episode = Episode(prompt=prompt)
    completion = ""
    while True:
        new = generate_fn(prompt + completion)
        new = cut_at_stop(new if isinstance(new, str) else "")
        append, done, status = step(completion, new, dictionary, episode.n_calls, max_calls)
        if new:
            episode.segments.append(Segment("model", new))
        completion += new
        if status == "call":
            episode.queries.append(parse_tool_call(new))
            episode.segments.append(Segment("environment", append))
            completion += append
        if done:
            break
    episode.status = status
    episode.answer = rewards.extract_answer(completion) if status == "answer" else ""
    return episode


def episode_reward(episode: Episode, reference, metric: str = "bleu") -> float:
    """The episode's reward in [0, 1]: sentence BLEU (the paper's reward) or chrF++ of the answer
    (rewards.bleu_reward / chrf_reward), or FAIL_REWARD[status] when the episode did not answer."""
    if metric not in ("bleu", "chrf"):
        raise ValueError(f"metric must be 'bleu' or 'chrf', got {metric!r}")
    if episode.status != "answer":
        return FAIL_REWARD.get(episode.status, 0.0)
    fn = rewards.bleu_reward if metric == "bleu" else rewards.chrf_reward
    return fn(episode.completion, reference)


# -----------------------------------------------------------------------------
# SFT data


def lookup_words(es: str) -> list[str]:
    """Words of a Spanish sentence a lookup may ask for: letter runs, first spelling of each
    (case-insensitive), in sentence order."""
    seen, words = set(), []
    for w in _LETTERS_RE.findall(es):
        if w.lower() not in seen:
            seen.add(w.lower())
            words.append(w)
    return words


def sft_example(es: str, guc: str, dictionary: Dictionary, rng: random.Random,
                max_lookups: int = MAX_CALLS, queries: list[str] | None = None) -> dict:
    """One SFT example on the paper's recipe (create_sft_dataset.py): look up k ~ U{0..max_lookups}
    random words of the sentence, then give the reference as the answer.

        <spa_to_wayuu> w1 </spa_to_wayuu> <matches> ... </matches> ... <answer> guc </answer>

    Returns {"prompt": chat messages, "completion_segments": [Segment], "completion": text,
    "queries": [words]}. The matches blocks are "environment" segments: no loss on them (the paper
    trained on them too; the issue asks not to). Differences from the paper: words are letter runs,
    so a word keeps no punctuation ("ustedes," would never match as a whole word); a word is looked
    up at most once; a sentence with fewer words than k gets them all (the paper: none); the
    completion has no leading space. queries, if given, are the words to look up (rng is then unused).
    """
    if queries is None:
        words = lookup_words(es)
        queries = rng.sample(words, min(rng.randint(0, max_lookups), len(words)))
    segments = []
    for word in queries:
        sep = " " if segments else ""
        segments.append(Segment("model", f"{sep}{CALL_OPEN} {word} {CALL_CLOSE}"))
        segments.append(Segment("environment", render_matches(dictionary.lookup(word))))
    segments.append(Segment("model", f"{' ' if segments else ''}{ANSWER_OPEN} {guc} {ANSWER_CLOSE}"))
    return {"prompt": prompt_messages(es), "completion_segments": segments,
            "completion": "".join(s.text for s in segments), "queries": queries}
