"""CKD loss, its ablations, the teacher top-k cache and the rollout filter (helpers/distill.py).

Tiny tensors and a tiny random Llama built here (2 layers, hidden 32, vocab 128): no downloads, no
training, well under a second per test."""

import json
import math

import pytest
import torch

from helpers import distill as D

V = 4
# Hand-worked token (k = 2, m = 2, λ = 10):
#   p_T = [0.5, 0.25, 0.125, 0.125] -> T_2 = {0, 1}
#   p_S = [0.4, 0.1, 0.3, 0.2]      -> S_2 = {0, 2}, so S_2 \ T_2 = {2}
#   top-2 FKL = 0.5 ln(0.5/0.4) + 0.25 ln(0.25/0.1) = 0.111572 + 0.229073 = 0.340644
#   tail      = p_S(2) = 0.3, times λ = 3.0           -> CKD = 3.340644
#   top-2 RKL = 0.4 ln(0.4/0.5) + 0.1 ln(0.1/0.25) = -0.089257 - 0.091629 = -0.180886 (can be < 0)
#   full FKL  = 0.340644 + 0.125 ln(0.125/0.3) + 0.125 ln(0.125/0.2) = 0.340644 - 0.109434 - 0.058750 = 0.172460
P_T = [0.5, 0.25, 0.125, 0.125]
P_S = [0.4, 0.1, 0.3, 0.2]
FKL2 = 0.5 * math.log(0.5 / 0.4) + 0.25 * math.log(0.25 / 0.1)
CKD = FKL2 + 10 * 0.3
RKL2 = 0.4 * math.log(0.4 / 0.5) + 0.1 * math.log(0.1 / 0.25)
FKL = FKL2 + 0.125 * math.log(0.125 / 0.3) + 0.125 * math.log(0.125 / 0.2)


def hand_batch():
    """(1, 3, 4) logits: token 0 is the worked one, token 1 has student == teacher (every loss 0),
    token 2 is padding full of garbage and masked out."""
    t = torch.tensor([P_T, P_T, P_T]).log()
    s = torch.tensor([P_S, P_T, P_S]).log()
    s[2] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e9])
    mask = torch.tensor([[1, 1, 0]])
    return s.unsqueeze(0), t.unsqueeze(0), mask


def kw(name, k=4):
    """The size arguments each loss takes (the defaults, k = m = 100, exceed these tiny vocabularies)."""
    return {"ckd": {"k": k, "m": k}, "topk_fkl": {"k": k}, "topk_rkl": {"k": k}}.get(name, {})


def rand_logits(*shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


# ----------------------------------------------------------------------------- hand-computed values

def test_hand_computed_single_token():
    s, t = torch.tensor([P_S]).log(), torch.tensor([P_T]).log()
    assert D.ckd_loss(s, t, k=2, m=2, lam=10.0).item() == pytest.approx(CKD, abs=1e-6)
    assert D.topk_forward_kl(s, t, k=2).item() == pytest.approx(FKL2, abs=1e-6)
    assert D.topk_reverse_kl(s, t, k=2).item() == pytest.approx(RKL2, abs=1e-6)
    assert D.forward_kl(s, t).item() == pytest.approx(FKL, abs=1e-6)


def test_hand_computed_mean_over_counted_tokens_only():
    s, t, mask = hand_batch()
    # token 1 contributes 0 to every loss; the masked garbage token is never read
    assert D.ckd_loss(s, t, mask, k=2, m=2, lam=10.0).item() == pytest.approx(CKD / 2, abs=1e-6)
    assert D.topk_forward_kl(s, t, mask, k=2).item() == pytest.approx(FKL2 / 2, abs=1e-6)
    assert D.forward_kl(s, t, mask).item() == pytest.approx(FKL / 2, abs=1e-6)
    assert D.topk_reverse_kl(s, t, mask, k=2).item() == pytest.approx(RKL2 / 2, abs=1e-6)


def test_sft_loss_hand_computed():
    s = torch.tensor([P_S, P_S]).log().unsqueeze(0)
    labels = torch.tensor([[2, D.IGNORE_INDEX]])
    assert D.sft_loss(s, labels).item() == pytest.approx(-math.log(0.3), abs=1e-6)
    labels = torch.tensor([[2, 1]])
    assert D.sft_loss(s, labels, torch.tensor([[1, 1]])).item() == pytest.approx(
        -(math.log(0.3) + math.log(0.1)) / 2, abs=1e-6)
    ref = torch.nn.functional.cross_entropy(s[0], labels[0])
    assert D.sft_loss(s, labels).item() == pytest.approx(ref.item(), abs=1e-6)


def test_penalty_is_exactly_lambda_times_student_mass_outside_teacher_topk():
    s, t = torch.tensor([P_S]).log(), torch.tensor([P_T]).log()
    for lam in (0.5, 1.0, 10.0):
        gap = D.ckd_loss(s, t, k=2, m=2, lam=lam) - D.topk_forward_kl(s, t, k=2)
        assert gap.item() == pytest.approx(lam * 0.3, abs=1e-6)
    # m=1: S_1 = {0} lies inside T_2, no penalty; m=3 adds token 3 (p_S 0.2) as well
    assert D.ckd_loss(s, t, k=2, m=1, lam=10.0).item() == pytest.approx(FKL2, abs=1e-6)
    assert D.ckd_loss(s, t, k=2, m=3, lam=10.0).item() == pytest.approx(FKL2 + 10 * 0.5, abs=1e-6)


def test_penalty_on_a_larger_vocabulary():
    # teacher ranks tokens 0..4 on top; the student puts 30% on token 40, which it ranks 2nd
    vocab = 64
    t = torch.full((1, vocab), -8.0)
    t[0, :5] = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5])
    s = torch.full((1, vocab), -8.0)
    s[0, 0], s[0, 40] = 3.0, 2.5
    p_s = torch.softmax(s, -1)[0]
    gap = D.ckd_loss(s, t, k=5, m=2, lam=10.0) - D.topk_forward_kl(s, t, k=5)
    assert gap.item() == pytest.approx(10.0 * p_s[40].item(), rel=1e-5)


# ----------------------------------------------------------------------------- identities between losses

@pytest.mark.parametrize("k", [1, 3, 16])
def test_lambda_zero_is_topk_forward_kl(k):
    s, t = rand_logits(2, 5, 16, seed=1), rand_logits(2, 5, 16, seed=2)
    assert torch.allclose(D.ckd_loss(s, t, k=k, m=8, lam=0.0), D.topk_forward_kl(s, t, k=k))


def test_k_equal_vocab_and_lambda_zero_is_full_forward_kl_and_matches_kl_div():
    s, t = rand_logits(3, 7, 32, seed=3), rand_logits(3, 7, 32, seed=4)
    mask = torch.ones(3, 7)
    full = D.forward_kl(s, t, mask)
    assert torch.allclose(D.ckd_loss(s, t, mask, k=32, m=32, lam=0.0), full, atol=1e-6)
    ref = torch.nn.functional.kl_div(torch.log_softmax(s, -1).reshape(-1, 32), torch.log_softmax(t, -1).reshape(-1, 32),
                                     reduction="batchmean", log_target=True)
    assert torch.allclose(full, ref, atol=1e-6)


def test_student_equal_teacher_gives_zero_topk_losses():
    t = rand_logits(4, 50, seed=5)
    for fn in (D.topk_forward_kl, D.topk_reverse_kl):
        assert abs(fn(t.clone(), t, k=10).item()) < 1e-6
    assert abs(D.ckd_loss(t.clone(), t, k=10, m=10).item()) < 1e-6  # S_m == T_k: no penalty either


@pytest.mark.parametrize("k,m,lam", [(1, 1, 10.0), (4, 8, 10.0), (16, 4, 2.5), (32, 32, 10.0), (8, 0, 10.0)])
def test_cached_and_full_logits_agree(k, m, lam):
    s, t = rand_logits(2, 6, 32, seed=k), rand_logits(2, 6, 32, seed=100 + m)
    mask = torch.tensor([[1, 1, 0, 1, 1, 1], [0, 1, 1, 1, 0, 0]])
    ids, logp = D.topk_from_logits(t, k)
    assert ids.dtype == torch.int32 and ids.shape == (2, 6, k)
    full = D.ckd_loss(s, t, mask, k=k, m=m, lam=lam)
    assert torch.allclose(D.ckd_loss_cached(s, ids, logp, mask, m=m, lam=lam), full, atol=1e-6)
    assert torch.allclose(D.topk_forward_kl_cached(s, ids, logp, mask), D.topk_forward_kl(s, t, mask, k=k), atol=1e-6)
    assert torch.allclose(D.topk_reverse_kl_cached(s, ids, logp, mask), D.topk_reverse_kl(s, t, mask, k=k), atol=1e-6)
    # the cache stores float16 log-probs: still within float16 rounding of the full-logit value
    fp16 = D.ckd_loss_cached(s, ids, logp.half(), mask, m=m, lam=lam)
    assert fp16.item() == pytest.approx(full.item(), rel=2e-3, abs=2e-3)


def test_2d_logits_and_3d_logits_agree():
    s, t = rand_logits(2, 5, 16, seed=6), rand_logits(2, 5, 16, seed=7)
    mask = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 0, 1]])
    a = D.ckd_loss(s, t, mask, k=4, m=4)
    b = D.ckd_loss(s.reshape(10, 16), t.reshape(10, 16), mask.reshape(10), k=4, m=4)
    assert torch.allclose(a, b)


def test_distill_loss_dispatches_by_name():
    s, t = rand_logits(2, 4, 16, seed=8), rand_logits(2, 4, 16, seed=9)
    labels = torch.randint(0, 16, (2, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(D.distill_loss("ckd", s, t, k=4, m=4, lam=1.0), D.ckd_loss(s, t, k=4, m=4, lam=1.0))
    assert torch.equal(D.distill_loss("topk_fkl", s, t, k=4), D.topk_forward_kl(s, t, k=4))
    assert torch.equal(D.distill_loss("fkl", s, t), D.forward_kl(s, t))
    assert torch.equal(D.distill_loss("topk_rkl", s, t, k=4), D.topk_reverse_kl(s, t, k=4))
    assert torch.equal(D.distill_loss("sft", s, labels=labels), D.sft_loss(s, labels))
    ids, lp = D.topk_from_logits(t, 4)
    assert torch.equal(D.distill_loss_cached("ckd", s, ids, lp, m=4), D.ckd_loss_cached(s, ids, lp, m=4))
    with pytest.raises(ValueError, match="unknown distillation loss"):
        D.distill_loss("jsd", s, t)
    with pytest.raises(ValueError, match="cannot use a top-k cache"):
        D.distill_loss_cached("fkl", s, ids, lp)
    with pytest.raises(ValueError, match="needs labels"):
        D.distill_loss("sft", s)


# ----------------------------------------------------------------------------- masking

def test_masked_positions_change_nothing():
    s, t = rand_logits(2, 6, 16, seed=10), rand_logits(2, 6, 16, seed=11)
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 0, 0]])
    labels = torch.zeros(2, 6, dtype=torch.long)
    before = {name: D.distill_loss(name, s, t, mask, labels=labels, **kw(name)) for name in D.LOSS_NAMES}
    s2, t2 = s.clone(), t.clone()
    off = mask == 0
    s2[off] = rand_logits(int(off.sum()), 16, seed=12) * 10
    t2[off] = float("nan")  # even nan at a masked position must not leak in
    for name, value in before.items():
        after = D.distill_loss(name, s2, t2, mask, labels=labels, **kw(name))
        assert torch.equal(after, value), name


def test_mask_none_counts_every_token():
    s, t = rand_logits(2, 3, 8, seed=13), rand_logits(2, 3, 8, seed=14)
    assert torch.allclose(D.ckd_loss(s, t, None, k=2, m=2), D.ckd_loss(s, t, torch.ones(2, 3), k=2, m=2))


def test_empty_mask_returns_a_graph_connected_zero():
    s = rand_logits(2, 3, 8, seed=15).requires_grad_()
    t = rand_logits(2, 3, 8, seed=16)
    for name in ("ckd", "topk_fkl", "fkl", "topk_rkl"):
        loss = D.distill_loss(name, s, t, torch.zeros(2, 3), **kw(name, 2))
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.equal(s.grad, torch.zeros_like(s))
    ids, lp = D.topk_from_logits(t, 2)
    assert D.ckd_loss_cached(s, ids, lp, torch.zeros(2, 3), m=2).item() == 0.0


# ----------------------------------------------------------------------------- gradients and dtypes

def test_gradients_reach_only_the_student():
    s = rand_logits(2, 4, 16, seed=17).requires_grad_()
    t = rand_logits(2, 4, 16, seed=18).requires_grad_()  # even a teacher tensor that asks for grads
    for name in ("ckd", "topk_fkl", "fkl", "topk_rkl"):
        s.grad = None
        D.distill_loss(name, s, t, **kw(name)).backward()
        assert t.grad is None, name
        assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0, name


def test_ckd_gradient_matches_the_paper():
    # Eq. 26/27 of the paper, one token, p = teacher, q = student, J = S_m \ T_k:
    #   j in J: q_j (Σ_{T_k} p + λ (1 − Σ_J q)) − p_j 1[j in T_k];  other j: q_j (Σ_{T_k} p − λ Σ_J q) − p_j 1[j in T_k]
    s = torch.tensor([P_S]).log().requires_grad_()
    t = torch.tensor([P_T]).log()
    D.ckd_loss(s, t, k=2, m=2, lam=10.0).backward()
    p, q, lam = torch.tensor(P_T), torch.tensor(P_S), 10.0
    in_k = torch.tensor([1.0, 1.0, 0.0, 0.0])
    in_j = torch.tensor([0.0, 0.0, 1.0, 0.0])
    sum_p, sum_jq = (p * in_k).sum(), (q * in_j).sum()
    expected = torch.where(in_j.bool(), q * (sum_p + lam * (1 - sum_jq)), q * (sum_p - lam * sum_jq)) - p * in_k
    assert torch.allclose(s.grad[0], expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    s, t = rand_logits(2, 5, 64, seed=19).to(dtype), rand_logits(2, 5, 64, seed=20).to(dtype)
    ref_s, ref_t = s.float(), t.float()
    for name in ("ckd", "topk_fkl", "fkl", "topk_rkl"):
        kwargs = kw(name, 8)
        out = D.distill_loss(name, s, t, **kwargs)
        assert out.dtype == torch.float32
        # the same numbers upcast first: equal up to float32 summation order
        assert out.item() == pytest.approx(D.distill_loss(name, ref_s, ref_t, **kwargs).item(), rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- errors

def test_bad_shapes_give_clear_errors():
    s, t = rand_logits(2, 3, 8), rand_logits(2, 3, 8)
    with pytest.raises(ValueError, match=r"vocab sizes differ.*\(2, 3, 8\).*\(2, 3, 9\)"):
        D.ckd_loss(s, rand_logits(2, 3, 9))
    with pytest.raises(ValueError, match=r"same shape"):
        D.ckd_loss(s, rand_logits(2, 4, 8), k=2, m=2)
    with pytest.raises(ValueError, match=r"mask shape \(2, 4\)"):
        D.ckd_loss(s, t, torch.ones(2, 4), k=2, m=2)
    with pytest.raises(ValueError, match=r"\(B, T, V\) or \(N, V\)"):
        D.ckd_loss(rand_logits(8), rand_logits(8))
    with pytest.raises(ValueError, match=r"k=9 .*vocab size 8"):
        D.ckd_loss(s, t, k=9, m=2)
    with pytest.raises(ValueError, match=r"m=9 .*vocab size 8"):
        D.ckd_loss(s, t, k=2, m=9)
    with pytest.raises(ValueError, match=r"k=0"):
        D.topk_forward_kl(s, t, k=0)
    ids, lp = D.topk_from_logits(t, 2)
    with pytest.raises(ValueError, match=r"must have the same shape"):
        D.ckd_loss_cached(s, ids, lp[..., :1])
    with pytest.raises(ValueError, match=r"leading dims"):
        D.ckd_loss_cached(s, ids[:, :2], lp[:, :2])
    with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
        D.ckd_loss_cached(s, ids + 7, lp)
    with pytest.raises(ValueError, match=r"integer token ids"):
        D.ckd_loss_cached(s, ids.float(), lp)
    with pytest.raises(ValueError, match=r"labels shape"):
        D.sft_loss(s, torch.zeros(2, 4, dtype=torch.long))


# ----------------------------------------------------------------------------- cache

def make_records(n=3, k=4, vocab=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    recs = []
    for i in range(n):
        length = 5 + i
        cm = torch.tensor([0] * 3 + [1] * (length - 3))
        rows = int(cm[1:].sum())
        logits = torch.randn(rows, vocab, generator=g)
        ids, lp = D.topk_from_logits(logits, k)
        recs.append({"id": f"row-{i}", "input_ids": torch.randint(0, vocab, (length,), generator=g),
                     "completion_mask": cm, "topk_ids": ids, "topk_logprobs": lp})
    return recs


def test_cache_round_trip(tmp_path):
    recs = make_records()
    manifest = D.save_topk_cache(tmp_path / "cache", recs, vocab_size=32, model_id="tiny", shard_seqs=2)
    assert len(manifest["shards"]) == 2
    loaded, m2 = D.load_topk_cache(tmp_path / "cache")
    assert m2 == json.loads((tmp_path / "cache" / "manifest.json").read_text()) == manifest
    assert (m2["k"], m2["vocab_size"], m2["model_id"], m2["n_sequences"]) == (4, 32, "tiny", 3)
    assert m2["n_tokens"] == 5 + 6 + 7 and m2["n_target_tokens"] == 2 + 3 + 4
    assert m2["logprob_dtype"] == "float16" and m2["bytes_per_target_token"] == 24
    for a, b in zip(recs, loaded):
        assert b["id"] == a["id"]
        assert torch.equal(b["input_ids"].long(), a["input_ids"].long())
        assert torch.equal(b["completion_mask"], a["completion_mask"].bool())
        assert b["topk_ids"].dtype == torch.int32 and torch.equal(b["topk_ids"], a["topk_ids"])
        assert b["topk_logprobs"].dtype == torch.float16
        assert torch.equal(b["topk_logprobs"], a["topk_logprobs"].half())


def test_cache_rejects_corruption_and_bad_records(tmp_path):
    recs = make_records(n=1)
    D.save_topk_cache(tmp_path, recs)
    shard = tmp_path / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        D.load_topk_cache(tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest"):
        D.load_topk_cache(tmp_path / "nothing-here")
    bad = dict(recs[0], topk_ids=recs[0]["topk_ids"][:1], topk_logprobs=recs[0]["topk_logprobs"][:1])
    with pytest.raises(ValueError, match="one row per completion token"):
        D.save_topk_cache(tmp_path / "bad", [bad])


def test_bytes_per_token_figures():
    assert D.cache_bytes_per_token(100) == 600
    assert D.cache_bytes_per_token(20) == 120
    assert D.full_logits_bytes_per_token(49152) == 196608          # SmolLM2, fp32
    assert D.full_logits_bytes_per_token(151936, torch.bfloat16) == 303872  # Qwen2.5, bf16


# ----------------------------------------------------------------------------- tiny models

def tiny_llama(seed):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_batch(padding_side):
    """Two sequences of different lengths (7 and 5 tokens), padded to 7; completions are the last 3/2 tokens."""
    seqs = [([5, 9, 11, 12, 40, 41, 2], [0, 0, 0, 0, 1, 1, 1]), ([7, 8, 30, 31, 2], [0, 0, 0, 1, 1])]
    ids, att, cm = [], [], []
    for s, c in seqs:
        pad = 7 - len(s)
        if padding_side == "left":
            ids.append([0] * pad + s), att.append([0] * pad + [1] * len(s)), cm.append([0] * pad + c)
        else:
            ids.append(s + [0] * pad), att.append([1] * len(s) + [0] * pad), cm.append(c + [0] * pad)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att),
            "completion_mask": torch.tensor(cm), "ids": ["a", "b"]}, seqs


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_build_topk_cache_on_a_tiny_random_llama(tmp_path, padding_side):
    teacher = tiny_llama(0)
    batch, seqs = tiny_batch(padding_side)
    manifest = D.build_topk_cache(teacher, [batch], k=8, path=tmp_path, model_id="tiny-teacher")
    assert (manifest["k"], manifest["vocab_size"], manifest["n_sequences"]) == (8, 128, 2)
    assert manifest["n_target_tokens"] == 3 + 2
    records, _ = D.load_topk_cache(tmp_path)
    for rec, (s, c) in zip(records, seqs):
        assert rec["input_ids"].tolist() == s and rec["completion_mask"].long().tolist() == c
        # the same sequence alone, unpadded: padding must not move positions or change the teacher
        with torch.no_grad():
            alone = teacher(input_ids=torch.tensor([s])).logits[0, :-1]
        rows = alone[torch.tensor(c[1:]).bool()]
        ids, lp = D.topk_from_logits(rows, 8)
        assert torch.equal(rec["topk_ids"], ids)
        assert torch.allclose(rec["topk_logprobs"].float(), lp, atol=2e-3)  # float16 storage


def test_logits_to_keep_gives_the_same_logits():
    model = tiny_llama(0)
    batch, _ = tiny_batch("left")
    mask = D.target_mask(batch)
    first = D.first_counted(mask)
    assert first == 3  # the 7-token row's completion starts at token 4, predicted from position 3
    with torch.no_grad():
        full = D.lm_logits(model, batch["input_ids"], batch["attention_mask"])
        tail = D.lm_logits(model, batch["input_ids"], batch["attention_mask"], first)
    assert tail.shape == (2, 6 - first, 128)
    assert torch.allclose(tail, full[:, first:], atol=1e-5)
    assert D.first_counted(torch.zeros(2, 5, dtype=torch.bool)) == 0


def test_target_mask_needs_a_real_predecessor():
    # left padding and a completion that starts at the first real token: nothing predicts that token
    batch = {"input_ids": torch.tensor([[0, 5, 6, 7]]), "attention_mask": torch.tensor([[0, 1, 1, 1]]),
             "completion_mask": torch.tensor([[0, 1, 1, 1]])}
    assert D.target_mask(batch).tolist() == [[False, True, True]]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_cached_step_equals_online_step(tmp_path, padding_side):
    teacher, student = tiny_llama(0), tiny_llama(1)
    batch, _ = tiny_batch("left")
    D.build_topk_cache(teacher, [batch], k=16, path=tmp_path)
    records, _ = D.load_topk_cache(tmp_path)
    cached = D.collate_cached(records, padding_side=padding_side)
    assert cached["loss_mask"].sum() == 5
    for loss in ("ckd", "topk_fkl", "topk_rkl"):
        online = D.ckd_step_online(student, teacher, batch, loss=loss, k=16, **({"m": 16} if loss == "ckd" else {}))
        offline = D.ckd_step_cached(student, cached, loss=loss, **({"m": 16} if loss == "ckd" else {}))
        assert offline.item() == pytest.approx(online.item(), rel=1e-3, abs=1e-3), loss
    # a training step: gradients reach the student only
    student.zero_grad()
    D.ckd_step_cached(student, cached, m=16).backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    # online fkl and sft also run through the same step
    assert D.ckd_step_online(student, teacher, batch, loss="fkl").item() > 0
    assert D.ckd_step_online(student, teacher, batch, loss="sft").item() > 0


def test_tokenize_pair_keeps_the_completion():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(ch) for ch in text]}
    out = D.tokenize_pair(Tok(), "abcdef", "XY")
    assert out["input_ids"][-2:] == [ord("X"), ord("Y")] and out["completion_mask"] == [0] * 6 + [1, 1]
    out = D.tokenize_pair(Tok(), "abcdef", "XY", max_length=4)
    assert out["input_ids"] == [ord(c) for c in "efXY"] and out["completion_mask"] == [0, 0, 1, 1]


# ----------------------------------------------------------------------------- rollout filter

TOOLS = [{"name": "get_weather", "description": "", "parameters": {"city": {"type": "str"}, "unit": {"type": "str"}}},
         {"name": "search", "description": "", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]


def call(name, **args):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


SPACED = "<tool_call>\n" + json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}}, indent=2) + "\n</tool_call>"


def test_filter_rollouts_on_hand_made_rows():
    rows = [
        {"id": 1, "tools": TOOLS, "completion": call("get_weather", city="Paris")},                       # kept
        {"id": 1, "tools": TOOLS, "completion": call("get_weather", city="Paris")},                       # duplicate
        {"id": 1, "tools": TOOLS, "completion": SPACED},                                                   # same call, other whitespace: duplicate
        {"id": 2, "tools": TOOLS, "completion": call("get_weather", city="Paris")},                       # other prompt: kept
        {"id": 1, "tools": TOOLS, "completion": call("search", q="x") + "\n" + call("get_weather", city="Rome", unit="C")},  # kept
        {"id": 1, "tools": TOOLS, "completion": call("get_weather", city="Rome", unit="C") + "\n" + call("search", q="x")},  # same calls reordered: duplicate
        {"id": 1, "tools": TOOLS, "completion": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>'},  # broken JSON
        {"id": 1, "tools": TOOLS, "completion": call("get_time", zone="UTC")},                            # unknown tool
        {"id": 1, "tools": TOOLS, "completion": call("get_weather", town="Paris")},                       # unknown key
        {"id": 1, "tools": TOOLS, "completion": '<tool_call>\n{"name": "search", "parameters": {"q": "x"}}\n</tool_call>'},  # not STAR's key
        {"id": 1, "tools": TOOLS, "completion": "It is sunny in Paris."},                                  # no call
        {"id": 1, "tools": TOOLS, "completion": None},
    ]
    kept, stats = D.filter_rollouts(rows)
    assert kept == [rows[0], rows[3], rows[4]]
    assert stats == {"n_in": 12, "n_kept": 3, "reasons": {
        "duplicate": 3, "malformed_tool_call": 2, "unknown_tool": 1, "unknown_argument": 1,
        "no_tool_call": 1, "not_text": 1}}
    # STAR's own rule keeps text replies
    kept, stats = D.filter_rollouts(rows, require_call=False)
    assert rows[10] in kept and "no_tool_call" not in stats["reasons"]


def test_filter_rollouts_think_rule():
    rows = [{"prompt": "p", "tools": TOOLS, "completion": "plan</think>\n" + call("search", q="a")},        # template opened <think>
            {"prompt": "p", "tools": TOOLS, "completion": "<think>a</think><think>b</think>" + call("search", q="a")},
            {"prompt": "p", "tools": TOOLS, "completion": "<think>other plan</think>\n" + call("search", q="a")},
            {"prompt": "p", "tools": TOOLS, "completion": "<think>maybe " + call("nope") + "</think>\nNo call needed."}]
    kept, stats = D.filter_rollouts(rows, require_think=True)
    assert kept == [rows[0], rows[2]]  # same call, different reasoning: not a duplicate (STAR hashes both)
    assert stats["reasons"] == {"bad_think": 1, "no_tool_call": 1}  # a call drafted inside <think> is no call
    kept, stats = D.filter_rollouts(rows)  # without the rule the reasoning is ignored: rows 1 and 2 repeat row 0
    assert kept == [rows[0]] and stats["reasons"] == {"duplicate": 2, "no_tool_call": 1}
    kept, stats = D.filter_rollouts(rows, require_call=False, require_think=True)
    assert kept == [rows[0], rows[2], rows[3]]  # STAR's own rule: a text reply after the reasoning is kept


# ----------------------------------------------------------------------------- training loop


def _tiny_pair(vocab=64):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg), LlamaForCausalLM(cfg)


def _records(teacher, tmp_path, n=6, k=8):
    gen = torch.Generator().manual_seed(1)
    batches = []
    for i in range(n):
        ids = torch.randint(1, 64, (1, 10), generator=gen)
        cm = torch.zeros_like(ids)
        cm[:, 6:] = 1
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": cm})
    D.build_topk_cache(teacher, batches, k, tmp_path / "cache")
    return D.load_topk_cache(tmp_path / "cache")[0]


@pytest.mark.parametrize("loss", D.LOSS_NAMES)
def test_every_loss_trains(tmp_path, loss):
    teacher, student = _tiny_pair()
    records = _records(teacher, tmp_path)
    extra = {"m": 8} if loss == "ckd" else {}
    hist = D.train_student(student, records, loss=loss, steps=12, lr=5e-3, batch_size=3, teacher=teacher, **extra)
    assert [h["step"] for h in hist] == list(range(1, 13))
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    if loss in ("ckd", "fkl", "sft", "topk_fkl"):
        assert hist[-1]["loss"] < hist[0]["loss"], (loss, hist[0]["loss"], hist[-1]["loss"])


def test_fkl_without_teacher_is_a_clear_error(tmp_path):
    teacher, student = _tiny_pair()
    records = _records(teacher, tmp_path)
    with pytest.raises(ValueError, match="pass the teacher"):
        D.train_student(student, records, loss="fkl", steps=1)


def test_resume_continues_where_it_stopped(tmp_path):
    teacher, student = _tiny_pair()
    records = _records(teacher, tmp_path)
    kw = dict(loss="topk_fkl", steps=6, batch_size=2, lr=5e-3)
    uninterrupted = D.train_student(student, records, **kw)
    _, student = _tiny_pair()
    ckpt = tmp_path / "student.pt"
    part = D.train_student(student, records, checkpoint=ckpt, save_every=100, stop_after=3, **kw)
    assert [h["step"] for h in part] == [1, 2, 3]
    _, fresh = _tiny_pair()  # a new session: the weights come from the checkpoint only
    resumed = D.train_student(fresh, records, checkpoint=ckpt, **kw)
    assert [h["step"] for h in resumed] == list(range(1, 7))
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in uninterrupted], abs=1e-5)


def test_validation_curve_scores_at_the_start_every_n_steps_and_the_end(tmp_path):
    teacher, student = _tiny_pair()
    records = _records(teacher, tmp_path)
    seen = []

    def score(model):
        seen.append(model.training)
        return {"entropy": D.mean_entropy(model, records[:2])}

    hist = D.train_student(student, records, loss="ckd", m=8, steps=5, batch_size=2, lr=5e-3,
                           eval_every=2, evaluate=score)
    assert [h["step"] for h in hist if "eval" in h] == [0, 2, 4, 5]
    assert [h["step"] for h in hist if "eval" not in h] == [1, 3]
    assert seen == [False] * 4          # scored in eval mode ...
    assert not student.training         # ... and the run ends in eval mode as before
    assert hist[0]["seconds"] == 0.0 and all(h["eval"]["entropy"] > 0 for h in hist if "eval" in h)
    # the scores follow the weights: the step-0 entropy is the untrained student's
    assert hist[0]["eval"]["entropy"] != hist[-1]["eval"]["entropy"]


def test_mean_entropy_is_bounded(tmp_path):
    teacher, student = _tiny_pair()
    records = _records(teacher, tmp_path)
    ent = D.mean_entropy(student, records)
    assert 0 < ent <= torch.log(torch.tensor(64.0)).item() + 1e-6


def test_toy_students_show_what_each_loss_does():
    t = torch.tensor([3.0, 2.5, 2.0, 0.5, 0.2, 0.0, -0.5, -1.0])
    p_t = t.softmax(-1)
    tail = lambda p: float(p[3:].sum())  # mass outside the teacher's top-3  # noqa: E731
    fkl = D.fit_toy_student(t, "fkl", steps=400)
    assert abs(fkl["entropy"][-1] - float(-(p_t * p_t.log()).sum())) < 0.01   # full FKL recovers the teacher
    rkl = D.fit_toy_student(t, "topk_rkl", k=3, steps=400)
    assert tail(rkl["probs"]) > 3 * tail(p_t)                                  # top-k RKL: the tail blows up
    ckd = D.fit_toy_student(t, "ckd", k=3, m=3, lam=10.0, steps=100)
    topk = D.fit_toy_student(t, "topk_fkl", k=3, steps=100)
    assert tail(ckd["probs"]) < tail(topk["probs"]) < tail(p_t)                # the penalty removes it faster
    sft = D.fit_toy_student(t, "sft", steps=400)
    assert sft["entropy"][-1] < 0.1                                            # hard labels collapse entropy


def test_pad_batches_feed_the_cache(tmp_path):
    teacher, _ = _tiny_pair()
    examples = [{"input_ids": [5, 6, 7, 8], "completion_mask": [0, 0, 1, 1]}, {"input_ids": [9, 10, 11], "completion_mask": [0, 1, 1]}]
    batches = D.pad_batches(examples, 2, pad_id=0, ids=["a", "b"])
    assert batches[0]["input_ids"].tolist() == [[5, 6, 7, 8], [0, 9, 10, 11]]
    assert batches[0]["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    assert batches[0]["completion_mask"].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    D.build_topk_cache(teacher, batches, 4, tmp_path / "c")
    records, manifest = D.load_topk_cache(tmp_path / "c")
    assert [r["id"] for r in records] == ["a", "b"] and records[1]["input_ids"].tolist() == [9, 10, 11]
    assert records[0]["topk_ids"].shape == (2, 4) and records[1]["topk_ids"].shape == (2, 4)
