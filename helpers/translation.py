"""Training and scoring the dictionary-tool translator of lesson 04, on token ids.

dictionary_tool holds the protocol as text (tags, lookups, statuses, rewards). This module turns it
into what trainers need:

- SFT examples as token ids with a loss mask that is 1 on the model's own tokens and 0 on the
  prompt and on the dictionary's <matches> blocks (TRL's SFTTrainer reads it as "completion_mask");
- episodes generated on token ids: the model writes until a stop string, the dictionary's reply is
  tokenized on its own and appended, and env_mask marks which completion tokens the model wrote;
- a rollout function for TRL's GRPOTrainer (its ``rollout_func`` hook), returning prompt ids,
  completion ids and env_mask, so GRPO's loss skips the dictionary's tokens;
- the evaluation of a system (a model with or without the tool): the paper's mean sentence BLEU,
  corpus BLEU and chrF++ as the AmericasNLP scorer computes them, with bootstrap intervals,
  and tool use.

Why rollout_func and not TRL's own tool support: TRL's tool loop parses JSON tool calls from the chat
template and answers them in a tool turn; the paper's protocol is inline tags inside one assistant
turn (<spa_to_wayuu> word </spa_to_wayuu>, then <matches> ... </matches> in the same turn), which
only a custom rollout can reproduce token for token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from helpers import dictionary_tool as dt
from helpers import models, rewards

# -----------------------------------------------------------------------------
# config
MAX_NEW_TOKENS = 160     # per episode, all chunks together (the paper: 512 on a GPU)
SFT_MAX_LENGTH = 512     # tokens per SFT example; longer examples are dropped, not truncated
N_BOOTSTRAP = 300        # resamples for the corpus-level intervals (each recomputes corpus BLEU and chrF++)
CHUNK_BATCH = 8          # sequences per generate() call
# -----------------------------------------------------------------------------


def prompt_text(tokenizer, es: str, tool: bool = True) -> str:
    """The paper's chat for one Spanish sentence, rendered with the tokenizer's template and ending
    with the assistant header (what the model continues)."""
    return models.render_prompt(tokenizer, dt.prompt_messages(es, tool))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_segments(tokenizer, prompt: str, segments, close_turn: bool = True) -> dict:
    """Prompt + completion segments as {"input_ids", "completion_mask"}: each segment is tokenized on its
    own (as in a rollout, where the model's tokens are sampled and the dictionary's text is tokenized
    when it arrives), mask 1 on "model" segments and 0 on the prompt and "environment" segments.
    close_turn appends the end-of-turn token (mask 1: the model must learn to stop after </answer>)."""
    input_ids = _ids(tokenizer, prompt)
    mask = [0] * len(input_ids)
    for seg in segments:
        ids = _ids(tokenizer, seg.text)
        input_ids += ids
        mask += [1 if seg.role == "model" else 0] * len(ids)
    if close_turn:
        input_ids.append(tokenizer.eos_token_id)
        mask.append(1)
    return {"input_ids": input_ids, "completion_mask": mask}


def no_tool_segments(guc: str) -> list:
    """The completion of the no-tool system: just the answer, in the paper's tags."""
    return [dt.Segment("model", f"{dt.ANSWER_OPEN} {guc} {dt.ANSWER_CLOSE}")]


def sft_dataset(pairs, tokenizer, dictionary: dt.Dictionary | None, *, seed: int = 0,
                max_length: int = SFT_MAX_LENGTH, tool: bool = True):
    """SFT examples for (es, guc) pairs: with the tool, dictionary_tool.sft_example (0-4 random
    lookups, then the answer); without, the answer alone under the no-tool prompt. An example longer
    than max_length tokens loses its last lookup until it fits (dictionary replies can be long:
    five entries of up to five Spanish words each, with Wayuunaiki sides of any length); one that does
    not fit even without lookups is dropped. Returns (datasets.Dataset with input_ids /
    completion_mask, number of pairs dropped)."""
    from datasets import Dataset
    if tool and dictionary is None:
        raise ValueError("the tool system needs the dictionary")
    rng = random.Random(seed)
    rows, dropped = [], 0
    for es, guc in pairs:
        prompt = prompt_text(tokenizer, es, tool)
        if not tool:
            ex = encode_segments(tokenizer, prompt, no_tool_segments(guc))
        else:
            queries = dt.sft_example(es, guc, dictionary, rng)["queries"]
            while True:
                segments = dt.sft_example(es, guc, dictionary, rng, queries=queries)["completion_segments"]
                ex = encode_segments(tokenizer, prompt, segments)
                if len(ex["input_ids"]) <= max_length or not queries:
                    break
                queries = queries[:-1]
        if len(ex["input_ids"]) > max_length:
            dropped += 1
            continue
        rows.append(ex)
    if not rows:
        raise ValueError(f"no SFT example fits max_length={max_length} tokens")
    return Dataset.from_list(rows), dropped


# -----------------------------------------------------------------------------
# episodes on token ids


@dataclass
class TokenEpisode:
    """One episode as token ids. env_mask[i] is 1 where completion_ids[i] was written by the model,
    0 where the dictionary (or the closing end-of-turn we append) wrote it."""
    prompt_ids: list
    completion_ids: list = field(default_factory=list)
    env_mask: list = field(default_factory=list)
    text: str = ""                       # the completion as text: model and dictionary pieces
    queries: list = field(default_factory=list)
    status: str = "running"
    answer: str = ""

    @property
    def n_calls(self) -> int:
        return len(self.queries)


def _first_stop(tokenizer, ids: list[int]) -> int | None:
    """The shortest prefix of ids whose text contains a stop string, as a length; None if none does.
    Binary search: once a prefix's text holds a stop string, every longer prefix does too."""
    if not any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in dt.STOP_STRINGS):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in tokenizer.decode(ids[:mid], skip_special_tokens=True) for s in dt.STOP_STRINGS):
            hi = mid
        else:
            lo = mid + 1
    return lo


def trim_chunk(tokenizer, ids: list[int]) -> list[int]:
    """What the model wrote in one chunk: up to the end of the first stop string, else up to and
    including the first end-of-turn token, else everything (the token budget ran out). Padding after
    a finished sequence is dropped, also when the pad token is the end-of-turn token."""
    stop = _first_stop(tokenizer, ids)
    eos = next((i + 1 for i, t in enumerate(ids) if t == tokenizer.eos_token_id), None)
    ends = [n for n in (stop, eos) if n is not None]
    return ids[:min(ends)] if ends else list(ids)


def hf_chunk_generator(model, tokenizer, *, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                       top_k: int = 0, batch_size: int = CHUNK_BATCH):
    """generate(contexts, max_new_tokens) -> new ids per context (models.generate_ids), stopping at the
    protocol's stop strings or the end-of-turn token, each row trimmed (trim_chunk)."""
    def generate(contexts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        rows = models.generate_ids(model, tokenizer, contexts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
                                   stop_strings=dt.STOP_STRINGS)
        return [trim_chunk(tokenizer, row) for row in rows]

    return generate


def run_episodes(generate, tokenizer, prompts: list[str], dictionary: dt.Dictionary | None, *,
                 max_new_tokens: int = MAX_NEW_TOKENS, max_calls: int = dt.MAX_CALLS) -> list[TokenEpisode]:
    """Play one episode per prompt, all prompts in lock step: each round generates one chunk for every
    episode still running (generate(contexts, max_new_tokens) -> new ids, see hf_chunk_generator), then
    dictionary_tool.step decides: a lookup appends the dictionary's reply (tokenized alone, env_mask 0)
    and the episode goes on; anything else ends it with step's status. An episode that runs out of
    max_new_tokens model tokens ends as "too_long". max_calls=0 (or no dictionary) is the no-tool system:
    a lookup then ends the episode as "too_many_calls". An answered episode gets the end-of-turn token
    appended with env_mask 0, so TRL does not count it as truncated and no gradient goes through it."""
    if dictionary is None:
        max_calls = 0
    episodes = [TokenEpisode(prompt_ids=_ids(tokenizer, p)) for p in prompts]
    while running := [e for e in episodes if e.status == "running"]:
        budgets = [max_new_tokens - sum(e.env_mask) for e in running]
        chunks = generate([e.prompt_ids + e.completion_ids for e in running], max(budgets))
        for e, new, budget in zip(running, chunks, budgets):
            new = list(new)[:budget]
            chunk = dt.cut_at_stop(tokenizer.decode(new, skip_special_tokens=True))
            append, done, status = dt.step(e.text, chunk, dictionary, e.n_calls, max_calls)
            e.completion_ids += new
            e.env_mask += [1] * len(new)
            e.text += chunk
            if status == "call":
                e.queries.append(dt.parse_tool_call(chunk))
                env = _ids(tokenizer, append)
                e.completion_ids += env
                e.env_mask += [0] * len(env)
                e.text += append
                if len(new) >= budget:     # the reply came, but no token is left to use it
                    e.status = "too_long"
                continue
            if not done:                   # step() is done for every status but "call"
                raise AssertionError(f"unexpected step status {status!r}")
            if status != "answer" and len(new) >= budget and not chunk.endswith(tuple(dt.STOP_STRINGS)) \
                    and tokenizer.eos_token_id not in new:
                status = "too_long"
            e.status = status
            if status == "answer":
                e.answer = rewards.extract_answer(e.text)
                e.completion_ids.append(tokenizer.eos_token_id)
                e.env_mask.append(0)
    return episodes


def episode_score(completion, reference, status: str = "answer", metric: str = "bleu") -> float:
    """The GRPO reward of one episode: dictionary_tool.FAIL_REWARD[status] when it did not answer,
    else sentence BLEU (the paper) or chrF++ of its <answer> against the reference, in [0, 1]."""
    if status != "answer":
        return dt.FAIL_REWARD.get(status, 0.0)
    fn = {"bleu": rewards.bleu_reward, "chrf": rewards.chrf_reward}.get(metric)
    if fn is None:
        raise ValueError(f"metric must be 'bleu' or 'chrf', got {metric!r}")
    return fn(completion, reference)


def trl_reward(metric: str = "bleu"):
    """episode_score as a GRPOTrainer reward: reads the "reference" dataset column and the "status"
    field that make_rollout_func returns; logged by TRL under the metric's name."""
    return rewards.make_trl_reward(episode_score, name=metric, metric=metric)


def grpo_dataset(pairs, tokenizer):
    """(es, guc) pairs as GRPO prompts: rendered text with the tool prompt, the reference alongside."""
    from datasets import Dataset
    return Dataset.from_list([{"prompt": prompt_text(tokenizer, es, tool=True), "reference": guc, "source": es}
                              for es, guc in pairs])


def make_rollout_func(tokenizer, dictionary: dt.Dictionary, *, max_calls: int = dt.MAX_CALLS, log: list | None = None):
    """A rollout_func for TRL's GRPOTrainer: plays one sampled episode per prompt it is given (TRL has
    already repeated each prompt num_generations times) with the trainer's current policy and sampling
    settings, and returns prompt_ids, completion_ids, env_mask (TRL multiplies it into the loss mask)
    and, for the reward functions, status and n_calls. log, if given, receives one dict per episode."""

    def rollout(prompts, trainer):
        args = trainer.args
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            generate = hf_chunk_generator(model, tokenizer, do_sample=True, temperature=args.temperature,
                                          top_p=args.top_p, top_k=args.top_k or 0,
                                          batch_size=max(CHUNK_BATCH, args.per_device_train_batch_size))
            episodes = run_episodes(generate, tokenizer, list(prompts), dictionary,
                                    max_new_tokens=args.max_completion_length, max_calls=max_calls)
        finally:
            model.train(was_training)
        if log is not None:
            step = trainer.state.global_step
            log.extend({"step": step, "status": e.status, "n_calls": e.n_calls, "tokens": sum(e.env_mask)}
                       for e in episodes)
        return {"prompt_ids": [e.prompt_ids for e in episodes],
                "completion_ids": [e.completion_ids for e in episodes],
                "logprobs": None,
                "env_mask": [e.env_mask for e in episodes],
                "status": [e.status for e in episodes],
                "n_calls": [e.n_calls for e in episodes]}

    return rollout


# -----------------------------------------------------------------------------
# evaluation


def corpus_scores(hypotheses: list[str], references: list[str], n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Corpus BLEU and chrF++ in 0..100 (sacrebleu defaults; chrF word_order=2, as the AmericasNLP
    scorer), each with a 95% percentile bootstrap interval over resampled sentences
    (evaluate.bootstrap_ci; keys *_low / *_high). A missing answer counts as "" (it scores 0)."""
    from sacrebleu.metrics import BLEU, CHRF

    from helpers import evaluate
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need as many hypotheses as references, and at least one ({len(hypotheses)} vs {len(references)})")
    pairs = list(zip(hypotheses, references))
    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF(word_order=2))):
        def corpus(sample, metric=metric):
            return metric.corpus_score([h for h, _ in sample], [[r for _, r in sample]]).score
        out[f"corpus_{name}"] = corpus(pairs)
        out[f"corpus_{name}_low"], out[f"corpus_{name}_high"] = evaluate.bootstrap_ci(pairs, corpus, n=n_bootstrap, seed=seed)
    return out


def score_episodes(episodes: list[TokenEpisode], references: list[str], n_bootstrap: int = N_BOOTSTRAP) -> dict:
    """The lesson's metrics for one system: mean sentence BLEU x 100 (the number the paper reports),
    corpus BLEU and chrF++ with intervals, answer rate (episodes that ended with an <answer>),
    tool-use rate (episodes with at least one lookup), calls per answer (lookups per answered episode)."""
    if len(episodes) != len(references):
        raise ValueError("one reference per episode")
    sent = [episode_score(e.text, r, e.status, "bleu") for e, r in zip(episodes, references)]
    answered = [e for e in episodes if e.status == "answer"]
    out = {"n": len(episodes), "sentence_bleu": 100 * sum(sent) / len(sent),
           **corpus_scores([e.answer for e in episodes], references, n_bootstrap),
           "answer_rate": len(answered) / len(episodes),
           "tool_use_rate": sum(e.n_calls > 0 for e in episodes) / len(episodes),
           "calls_per_answer": (sum(e.n_calls for e in answered) / len(answered)) if answered else 0.0}
    return out


def evaluate_system(model, tokenizer, pairs, dictionary: dt.Dictionary | None, *, tool: bool,
                    max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = CHUNK_BATCH,
                    n_bootstrap: int = N_BOOTSTRAP) -> tuple[dict, list[TokenEpisode]]:
    """Greedy episodes on (es, guc) pairs with the tool prompt and dictionary (tool=True) or the no-tool
    prompt and no dictionary; returns (score_episodes(...), episodes)."""
    was_training = model.training
    model.eval()
    try:
        generate = hf_chunk_generator(model, tokenizer, do_sample=False, batch_size=batch_size)
        episodes = run_episodes(generate, tokenizer, [prompt_text(tokenizer, es, tool) for es, _ in pairs],
                                dictionary if tool else None, max_new_tokens=max_new_tokens)
    finally:
        model.train(was_training)
    return score_episodes(episodes, [guc for _, guc in pairs], n_bootstrap), episodes
