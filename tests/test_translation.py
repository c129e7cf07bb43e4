"""The dictionary-tool translator on token ids: SFT masks, episodes, rewards, scores, and the proof
that GRPO puts no gradient on the dictionary's tokens (a tiny random Llama with LoRA: plumbing, not
learning)."""
import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF

from helpers import dictionary_tool as dt
from helpers import grpo, models, runtime, translation

DICT = dt.Dictionary([("casa", "miichi"), ("mi casa", "taipia"), ("perro", "erü")])


@pytest.fixture(scope="module")
def tok(model_cache):
    return models.load_tokenizer(models.SMOLLM2_ID)


def scripted(tok, scripts: dict[str, list[str]]):
    """A chunk generator that plays fixed texts: scripts maps a prompt to the chunks the "model" writes
    in turn. Chunks are tokenized and cut by translation.trim_chunk, as real generations are."""
    queues = {tuple(tok(p, add_special_tokens=False)["input_ids"]): list(chunks) for p, chunks in scripts.items()}
    calls = []

    def generate(contexts, max_new_tokens):
        calls.append(max_new_tokens)
        out = []
        for ctx in contexts:
            key = next(k for k in queues if tuple(ctx[:len(k)]) == k)
            text = queues[key].pop(0) if queues[key] else ""
            ids = tok(text, add_special_tokens=False)["input_ids"][:max_new_tokens]
            out.append(translation.trim_chunk(tok, ids + [tok.pad_token_id] * 3))
        return out
    generate.calls = calls
    return generate


def test_encode_segments_masks_prompt_and_dictionary(tok):
    ex = dt.sft_example("mi casa", "taipia", DICT, __import__("random").Random(1))
    enc = translation.encode_segments(tok, "PROMPT ", ex["completion_segments"])
    ids, mask = enc["input_ids"], enc["completion_mask"]
    assert len(ids) == len(mask) and mask[0] == 0
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    expected = "".join(s.text for s in ex["completion_segments"] if s.role == "model") + tok.eos_token
    assert trained == expected
    if ex["queries"]:
        assert "<matches>" not in trained and "<matches>" in tok.decode(ids)


def test_sft_dataset_tool_and_no_tool(tok):
    pairs = [("mi casa es grande", "taipia"), ("el perro " * 200, "erü")]  # the second is far too long
    ds, dropped = translation.sft_dataset(pairs, tok, DICT, max_length=400, tool=True)
    assert len(ds) == 1 and dropped == 1
    ds0, _ = translation.sft_dataset(pairs[:1], tok, None, tool=False)
    text = tok.decode([i for i, m in zip(ds0[0]["input_ids"], ds0[0]["completion_mask"]) if m])
    assert text == "<answer> taipia </answer>" + tok.eos_token
    assert "<spa_to_wayuu>" not in tok.decode(ds0[0]["input_ids"])  # the no-tool prompt never mentions the tool
    with pytest.raises(ValueError, match="dictionary"):
        translation.sft_dataset(pairs, tok, None, tool=True)
    with pytest.raises(ValueError, match="fits"):
        translation.sft_dataset(pairs[1:], tok, DICT, max_length=64)


def test_trim_chunk_cuts_at_stop_string_or_end_of_turn(tok):
    ids = tok("<spa_to_wayuu> casa </spa_to_wayuu> and more text", add_special_tokens=False)["input_ids"]
    cut = translation.trim_chunk(tok, ids)
    assert tok.decode(cut).endswith("</spa_to_wayuu>") and "more" not in tok.decode(cut)
    eos = tok("hello", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.eos_token_id]
    assert translation.trim_chunk(tok, eos) == eos[:-1]
    plain = tok("no stop here", add_special_tokens=False)["input_ids"]
    assert translation.trim_chunk(tok, plain) == plain


def test_episode_with_lookups_masks_the_dictionary(tok):
    p = translation.prompt_text(tok, "mi casa")
    gen = scripted(tok, {p: ["<spa_to_wayuu> casa </spa_to_wayuu>", " <spa_to_wayuu> gato </spa_to_wayuu>",
                             " <answer> taipia </answer>"]})
    [e] = translation.run_episodes(gen, tok, [p], DICT, max_new_tokens=200)
    assert e.status == "answer" and e.answer == "taipia" and e.queries == ["casa", "gato"]
    assert e.text == ("<spa_to_wayuu> casa </spa_to_wayuu> <matches> casa: miichi\nmi casa: taipia </matches>"
                      " <spa_to_wayuu> gato </spa_to_wayuu> <matches> No matches found </matches> <answer> taipia </answer>")
    env = tok.decode([i for i, m in zip(e.completion_ids, e.env_mask) if not m])
    assert env == " <matches> casa: miichi\nmi casa: taipia </matches> <matches> No matches found </matches>" + tok.eos_token
    assert tok.decode([i for i, m in zip(e.completion_ids, e.env_mask) if m]) == (
        "<spa_to_wayuu> casa </spa_to_wayuu> <spa_to_wayuu> gato </spa_to_wayuu> <answer> taipia </answer>")
    assert e.completion_ids[-1] == tok.eos_token_id and e.env_mask[-1] == 0
    assert gen.calls[0] == 200 and gen.calls[1] < 200   # the budget counts the model's tokens only


@pytest.mark.parametrize("chunks, max_calls, budget, status", [
    (["<spa_to_wayuu> casa </spa_to_wayuu>"] * 3, 2, 200, "too_many_calls"),
    (["<spa_to_wayuu> <b> </spa_to_wayuu>"], 4, 200, "malformed_call"),
    (["<spa_to_wayuu>  </spa_to_wayuu>"], 4, 200, "empty_query"),
    (["I do not know"], 4, 200, "no_answer"),
    ([""], 4, 200, "no_answer"),
    (["<answer> </answer>"], 4, 200, "no_answer"),
    (["<answer> " + "ja " * 50 + "</answer>"], 4, 10, "too_long"),
    (["<spa_to_wayuu> casa </spa_to_wayuu>", "<answer> x </answer>"], 0, 200, "too_many_calls"),
])
def test_episode_endings(tok, chunks, max_calls, budget, status):
    p = translation.prompt_text(tok, "mi casa")
    [e] = translation.run_episodes(scripted(tok, {p: chunks}), tok, [p], DICT, max_new_tokens=budget, max_calls=max_calls)
    assert e.status == status and e.answer == ""
    assert sum(e.env_mask) <= budget and len(e.env_mask) == len(e.completion_ids)
    assert translation.episode_score(e.text, "taipia", e.status) == dt.FAIL_REWARD[status]


def test_no_tool_system_and_lock_step_batches(tok):
    a, b = translation.prompt_text(tok, "casa", tool=False), translation.prompt_text(tok, "perro", tool=False)
    gen = scripted(tok, {a: ["<answer> miichi </answer>"], b: ["<spa_to_wayuu> perro </spa_to_wayuu>"]})
    ea, eb = translation.run_episodes(gen, tok, [a, b], None)
    assert (ea.status, eb.status) == ("answer", "too_many_calls") and len(gen.calls) == 1


def test_episode_score_and_metric_check():
    assert translation.episode_score("<answer> taipia </answer>", "taipia") == 1.0
    assert translation.episode_score("<answer> taipia </answer>", "taipia", "malformed_call") == 0.0
    assert 0 < translation.episode_score("<answer> taipia sa </answer>", "taipia", metric="chrf") < 1
    with pytest.raises(ValueError, match="metric"):
        translation.episode_score("<answer> a </answer>", "a", metric="rouge")
    reward = translation.trl_reward("bleu")
    assert reward.__name__ == "bleu"
    assert reward(completions=["<answer> taipia </answer>"] * 2, reference=["taipia"] * 2,
                  status=["answer", "too_long"]) == [1.0, 0.0]


def test_corpus_scores_are_sacrebleus_with_an_interval():
    hyps, refs = ["taya miichi", "erü", ""], ["taya miichi", "erü jee", "kasa"]
    s = translation.corpus_scores(hyps, refs, n_bootstrap=200)
    assert s["corpus_bleu"] == pytest.approx(BLEU().corpus_score(hyps, [refs]).score)
    assert s["corpus_chrf"] == pytest.approx(CHRF(word_order=2).corpus_score(hyps, [refs]).score)
    assert s["corpus_bleu_low"] <= s["corpus_bleu"] <= s["corpus_bleu_high"]
    assert s["corpus_chrf_low"] < s["corpus_chrf_high"]
    with pytest.raises(ValueError):
        translation.corpus_scores(["a"], ["a", "b"])


def test_score_episodes_counts_tool_use():
    eps = [translation.TokenEpisode([], text="<answer> miichi </answer>", status="answer", answer="miichi",
                                    queries=["casa"]),
           translation.TokenEpisode([], text="", status="no_answer")]
    s = translation.score_episodes(eps, ["miichi", "erü"], n_bootstrap=1)
    assert s["answer_rate"] == 0.5 and s["tool_use_rate"] == 0.5 and s["calls_per_answer"] == 1.0
    assert s["sentence_bleu"] == pytest.approx(50.0) and s["corpus_bleu_low"] != s["corpus_bleu_low"]  # nan: no interval


def test_grpo_loss_puts_no_gradient_on_dictionary_tokens(tok, tmp_path):
    """The masking proof. A scripted rollout with a lookup feeds TRL's GRPOTrainer (KL term on); the
    gradient of the loss reaching the position that predicts a dictionary token (or the appended
    end-of-turn) is exactly zero, and non-zero at every position that predicts a model token."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id))
    model = models.apply_lora(model, gradient_checkpointing=False, r=4, alpha=8)
    p = translation.prompt_text(tok, "mi casa")
    script = {p: ["<spa_to_wayuu> casa </spa_to_wayuu>", " <answer> taipia </answer>"]}

    def rollout(prompts, trainer):
        episodes = []
        for i, prompt in enumerate(prompts):   # two generations: one answers right, one answers wrong
            chunks = list(script[prompt]) if i % 2 == 0 else ["<spa_to_wayuu> casa </spa_to_wayuu>", " <answer> jama </answer>"]
            episodes += translation.run_episodes(scripted(tok, {prompt: chunks}), tok, [prompt], DICT)
        return {"prompt_ids": [e.prompt_ids for e in episodes], "completion_ids": [e.completion_ids for e in episodes],
                "logprobs": None, "env_mask": [e.env_mask for e in episodes], "status": [e.status for e in episodes]}

    from datasets import Dataset
    ds = Dataset.from_list([{"prompt": p, "reference": "taipia"}] * 4)
    cfg = grpo.grpo_config(runtime.setup("cpu", verbose=False), tmp_path, max_steps=1, num_generations=2,
                           max_completion_length=64, beta=0.04)
    trainer = grpo.make_trainer(model, tok, ds, cfg, [translation.trl_reward("bleu")], dynamic_filter=False,
                                rollout_func=rollout)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1   # set by Trainer's loop; we call the loss by hand
    batch = trainer._generate_and_score_completions([ds[0], ds[1]])
    assert batch["advantages"].abs().min() > 0           # the two answers differ, so both carry a signal
    # TRL scores tokens with a fused LM head (no logits tensor), so we watch the final hidden states:
    # the state at position t feeds only the log-prob of token t+1, nothing else.
    captured = []
    norm = trainer.model.get_base_model().model.norm

    def keep(module, inputs, out):     # returns None, so the output is left as it is
        out.retain_grad()
        captured.append(out)
    hook = norm.register_forward_hook(keep)
    try:
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
    finally:
        hook.remove()
    hidden = captured[0]               # [B, prompt + completion, H]
    n, p_len = batch["completion_ids"].shape[1], batch["prompt_ids"].shape[1]
    grad = hidden.grad[:, p_len - 1:p_len - 1 + n].abs().sum(-1)   # position j predicts completion token j
    model_tokens = (batch["completion_mask"] * batch["tool_mask"]).bool()
    env_tokens = batch["completion_mask"].bool() & ~batch["tool_mask"].bool()
    assert env_tokens.sum() > 10                          # the matches blocks and the closing token
    assert torch.all(grad[env_tokens] == 0)
    assert torch.all(grad[model_tokens] > 0)
    # and the masks line up with the text: what the loss sees is the model's writing only
    row = batch["completion_ids"][0][model_tokens[0]].tolist()
    assert tok.decode(row) == "<spa_to_wayuu> casa </spa_to_wayuu> <answer> taipia </answer>"


def test_sft_trainer_takes_no_loss_on_the_dictionary(tok, tmp_path):
    """TRL's SFTTrainer on our pre-tokenized examples: the labels it builds are -100 on the prompt and on
    the dictionary's replies, and equal to the input ids on the model's own tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTTrainer

    from helpers import sft
    pairs = [("mi casa es grande", "taipia"), ("el perro come", "erü")]
    ds, _ = translation.sft_dataset(pairs, tok, DICT, seed=0, max_length=400)
    assert any(0 in m[p:] for m, p in ((r["completion_mask"], r["completion_mask"].index(1)) for r in ds))
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id))
    cfg = sft.sft_config(runtime.setup("cpu", verbose=False), tmp_path, max_steps=1, learning_rate=1e-4, batch_size=2,
                         max_length=400)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert len(batch["input_ids"]) == len(ds) == 2
    for row in ds:                     # the sampler shuffles: find each example's row in the batch
        ids, mask = row["input_ids"], row["completion_mask"]
        j = next(j for j, b in enumerate(batch["input_ids"]) if b[:len(ids)].tolist() == ids)
        labels = batch["labels"][j].tolist()
        assert labels[:len(ids)] == [i if m else -100 for i, m in zip(ids, mask)]
        assert set(labels[len(ids):]) <= {-100}


def test_long_examples_lose_lookups_before_they_are_dropped(tok):
    wordy = dt.Dictionary([(f"casa {i}", "miichi " * 60) for i in range(5)] + [("perro", "erü")])
    pairs = [("casa perro casa", "taipia")] * 20
    full, _ = translation.sft_dataset(pairs, tok, wordy, seed=0, max_length=4000)
    cut, dropped = translation.sft_dataset(pairs, tok, wordy, seed=0, max_length=300)
    assert dropped == 0 and len(cut) == 20
    assert max(len(r["input_ids"]) for r in full) > 300 >= max(len(r["input_ids"]) for r in cut)
    texts = [tok.decode(r["input_ids"]) for r in cut]
    assert all(t.count("<answer> taipia </answer>") == 1 for t in texts)
    assert any("<spa_to_wayuu> perro </spa_to_wayuu>" in t for t in texts)   # short lookups survive
