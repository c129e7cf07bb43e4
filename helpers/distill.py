"""Distillation: STAR's Constrained Knowledge Distillation (CKD), its ablations, a teacher top-k cache,
one training step (online teacher or cached teacher), and the filter for teacher rollouts.

Notation used in every docstring below, per completion token (temperature 1, no renormalisation):
    p_T, p_S   full-vocabulary softmax of the teacher's / student's logits
    T_k        the teacher's k most likely tokens; S_m the student's m most likely tokens

Loss functions take logits that are already aligned with their targets (position t scores token t+1);
``lm_logits`` and the step functions do that alignment. Shapes: logits (B, T, V) or (N, V); a mask is
(B, T) or (N,), non-zero = a completion token that counts. Every loss is the mean over counted tokens
of the whole batch (a token mean, as OpenRLHF's KDLoss and TRL's GKD "batchmean" do), computed in
float32 whatever the dtype of the logits.

The teacher cache stores, for each completion token, the teacher's top-k ids (int32) and full-vocabulary
log-probs (float16): 6 bytes per entry, 600 bytes per token at k=100, against 196,608 bytes for
SmolLM2's full fp32 logits (vocab 49,152). Files are safetensors: tensors only (no pickle, so a cache
from elsewhere cannot run code when loaded), plus a JSON manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import torch

from helpers import runtime

# -----------------------------------------------------------------------------
# config
TOP_K = 100            # teacher tokens kept (STAR's best setting: k=100, lambda=10)
TOP_M = 100            # student tokens checked for confident errors
LAMBDA_TAIL = 10.0     # weight of the tail penalty
IGNORE_INDEX = -100    # label value that marks a token as not counted (PyTorch / TRL convention)
LOSS_NAMES = ("ckd", "topk_fkl", "fkl", "topk_rkl", "sft")
# cache layout
CACHE_FORMAT, CACHE_VERSION = "tinyrl-topk-cache", 1
MANIFEST_NAME = "manifest.json"
SHARD_SEQS = 4096      # sequences per shard file: a few MB at k=100, so a shard loads in one read
ID_DTYPE, LOGPROB_DTYPE = torch.int32, torch.float16
# -----------------------------------------------------------------------------


# ----------------------------------------------------------------------------- shape checks

def _lead(x: torch.Tensor) -> tuple:
    return tuple(x.shape[:-1])


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (2, 3):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be (B, T, V) or (N, V), got shape {shape}")
    if logits.shape[-1] < 1:
        raise ValueError(f"{name} has an empty vocabulary dimension: shape {tuple(logits.shape)}")


def _check_mask(mask, student_logits: torch.Tensor) -> None:
    if mask is not None and tuple(mask.shape) != _lead(student_logits):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the logits' leading dims "
                         f"{_lead(student_logits)} (student logits {tuple(student_logits.shape)})")


def _check_size(name: str, value: int, vocab: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or value > vocab:
        raise ValueError(f"{name}={value!r} must be an integer in [{low}, {vocab}] (vocab size {vocab})")


def _check_pair(student_logits, teacher_logits, mask) -> None:
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(f"vocab sizes differ: student logits {tuple(student_logits.shape)} vs teacher logits "
                         f"{tuple(teacher_logits.shape)}; top-k distillation needs one shared vocabulary")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    _check_mask(mask, student_logits)


def _check_cached(student_logits, ids, logprobs, mask) -> None:
    _check_logits("student_logits", student_logits)
    if ids.shape != logprobs.shape:
        raise ValueError(f"teacher_topk_ids {tuple(ids.shape)} and teacher_topk_logprobs "
                         f"{tuple(logprobs.shape)} must have the same shape")
    if _lead(ids) != _lead(student_logits):
        raise ValueError(f"teacher top-k {tuple(ids.shape)} does not match the student logits "
                         f"{tuple(student_logits.shape)} in the leading dims")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"teacher_topk_ids must be integer token ids, got {ids.dtype}")
    vocab = student_logits.shape[-1]
    _check_size("k (teacher_topk_ids.shape[-1])", ids.shape[-1], vocab, 1)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"teacher_topk_ids hold ids outside [0, {vocab}): the cache was built with another "
                         f"vocabulary than the student's ({tuple(student_logits.shape)})")
    _check_mask(mask, student_logits)


# ----------------------------------------------------------------------------- token selection

def _rows(mask, *tensors):
    """Flatten (B, T, X) / (N, X) tensors to the rows whose mask is non-zero.
    Selecting before any arithmetic means masked positions never enter the loss, even if they hold
    inf or nan (padding often does), and no work is spent on prompt tokens."""
    flat = [t.reshape(-1, t.shape[-1]) for t in tensors]
    if mask is None:
        return flat
    keep = mask.reshape(-1) != 0
    return [t[keep] for t in flat]


def _empty_zero(student_logits: torch.Tensor) -> torch.Tensor:
    """0.0 that is still connected to the graph (backward() works and gives zero grads). Summing an
    empty slice, not multiplying by 0, so an inf/nan logit cannot turn it into nan."""
    return student_logits.reshape(-1)[:0].float().sum()


def _mean(per_token: torch.Tensor) -> torch.Tensor:
    return per_token.sum() / per_token.numel()


def _xlogratio(logp: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """exp(logp) * (a - b), with 0 where exp(logp) == 0 (so a -inf teacher log-prob gives 0, not nan)."""
    p = logp.exp()
    return torch.where(p > 0, p * (a - b), torch.zeros_like(p))


# ----------------------------------------------------------------------------- teacher top-k

def topk_from_logits(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top-k token ids (int32) and their full-vocabulary log-probs (float32), per position.
    log p_T(v) = z_v - logsumexp(z): the values are not renormalised over the k tokens (CKD needs the
    true probabilities, whose top-k sum is below 1). No gradient: the teacher is fixed."""
    _check_logits("logits", logits)
    _check_size("k", k, logits.shape[-1], 1)
    with torch.no_grad():
        z = logits.detach().float()
        values, ids = z.topk(k, dim=-1)
        logprobs = values - torch.logsumexp(z, dim=-1, keepdim=True)
    return ids.to(ID_DTYPE), logprobs


def _student_topk_logprobs(s: torch.Tensor, ids: torch.Tensor):
    """(log p_S on the given ids, log-partition). s: float32 student logits (n, V)."""
    log_z = torch.logsumexp(s, dim=-1, keepdim=True)
    return s.gather(-1, ids.long()) - log_z, log_z


def _tail_penalty(s: torch.Tensor, log_z: torch.Tensor, t_ids: torch.Tensor, m: int) -> torch.Tensor:
    """Σ_{v ∈ S_m \\ T_k} p_S(v) per row. The top-m selection is not differentiated (a set choice);
    the gradient flows through p_S(v) of the chosen tokens, as in the paper's Eq. 26-27."""
    if m == 0:
        return s.new_zeros(s.shape[0])
    top_logits, top_ids = s.topk(m, dim=-1)
    # (n, m, 1) vs (n, 1, k): m*k comparisons per token (10^4 at m=k=100), far less than a (n, V) mask
    outside = (top_ids.unsqueeze(-1) != t_ids.long().unsqueeze(-2)).all(dim=-1)
    return ((top_logits - log_z).exp() * outside).sum(dim=-1)


# ----------------------------------------------------------------------------- losses (cached teacher)

def ckd_loss_cached(student_logits, teacher_topk_ids, teacher_topk_logprobs, mask=None,
                    m: int = TOP_M, lam: float = LAMBDA_TAIL) -> torch.Tensor:
    """STAR's Constrained Knowledge Distillation (arXiv 2602.03022, Eq. 3-5), teacher given as top-k:

        L_CKD = L_FKL-k + λ · L_tail
        L_FKL-k = Σ_{v ∈ T_k} p_T(v) · (log p_T(v) − log p_S(v))
        L_tail  = Σ_{v ∈ S_m \\ T_k} p_S(v)

    averaged over counted tokens. p_S is the student's full-vocabulary softmax and p_T comes from the
    cached full-vocabulary log-probs: neither is renormalised over T_k (the paper's gradient, Eq. 14,
    is q_j·Σ_{i∈I_k} p_i − p_j, which only holds without renormalisation). The tail term is an L1
    penalty on probability, not on log-probability: it pushes down tokens the student is confident
    about and the teacher does not rank, and leaves the rest of the student's tail alone (the
    exploration that the RL stage needs).

    STAR's released code ships CKD as a patch to OpenRLHF's KDLoss (0001-add-ckd.patch), whose text
    was not available when this was written; we follow the paper's equations and that KDLoss's
    conventions: softmax in float32, temperature 1, teacher without gradient, mean over the counted
    tokens of the whole batch. (OpenRLHF's KDLoss is the cross-entropy form −Σ p_T log p_S; it differs
    from the KL form used here by the teacher's entropy, a constant with the same gradient.)

    teacher_topk_ids, teacher_topk_logprobs: (B, T, k) / (N, k), ids any integer dtype, log-probs any
    float dtype. An all-zero mask returns a graph-connected 0.0 (a batch whose completions were all
    truncated away then trains nothing instead of producing nan)."""
    _check_cached(student_logits, teacher_topk_ids, teacher_topk_logprobs, mask)
    _check_size("m", m, student_logits.shape[-1], 0)
    s, t_ids, t_logp = _rows(mask, student_logits, teacher_topk_ids, teacher_topk_logprobs)
    if s.shape[0] == 0:
        return _empty_zero(student_logits)
    s, t_logp = s.float(), t_logp.float()
    s_logp, log_z = _student_topk_logprobs(s, t_ids)
    per_token = _xlogratio(t_logp, t_logp, s_logp).sum(dim=-1)
    if lam:
        per_token = per_token + lam * _tail_penalty(s, log_z, t_ids, m)
    return _mean(per_token)


def topk_forward_kl_cached(student_logits, teacher_topk_ids, teacher_topk_logprobs, mask=None) -> torch.Tensor:
    """Top-k forward KL from a cached teacher (CKD with λ = 0):

        L_FKL-k = Σ_{v ∈ T_k} p_T(v) · (log p_T(v) − log p_S(v))"""
    return ckd_loss_cached(student_logits, teacher_topk_ids, teacher_topk_logprobs, mask, m=0, lam=0.0)


def topk_reverse_kl_cached(student_logits, teacher_topk_ids, teacher_topk_logprobs, mask=None) -> torch.Tensor:
    """Top-k reverse KL from a cached teacher (STAR's ablation, whose gradient is the paper's Eq. 20):

        L_RKL-k = Σ_{v ∈ T_k} p_S(v) · (log p_S(v) − log p_T(v))

    Full-vocabulary p_S and p_T, no renormalisation, so a token's value can be negative. STAR reports
    that this loss collapses training: it says nothing about the student's mass outside T_k."""
    _check_cached(student_logits, teacher_topk_ids, teacher_topk_logprobs, mask)
    s, t_ids, t_logp = _rows(mask, student_logits, teacher_topk_ids, teacher_topk_logprobs)
    if s.shape[0] == 0:
        return _empty_zero(student_logits)
    s_logp, _ = _student_topk_logprobs(s.float(), t_ids)
    return _mean(_xlogratio(s_logp, s_logp, t_logp.float()).sum(dim=-1))


# ----------------------------------------------------------------------------- losses (full teacher logits)

def ckd_loss(student_logits, teacher_logits, mask=None, k: int = TOP_K, m: int = TOP_M,
             lam: float = LAMBDA_TAIL) -> torch.Tensor:
    """STAR's Constrained Knowledge Distillation (arXiv 2602.03022, Eq. 3-5) from full teacher logits:

        L_CKD = Σ_{v ∈ T_k} p_T(v) · (log p_T(v) − log p_S(v))  +  λ · Σ_{v ∈ S_m \\ T_k} p_S(v)

    averaged over counted tokens; see ``ckd_loss_cached`` for the details, which this shares: it takes
    the teacher's top-k (``topk_from_logits``) and calls it, so the two cannot drift apart. The teacher
    logits are detached: no gradient ever reaches the teacher."""
    _check_pair(student_logits, teacher_logits, mask)
    _check_size("k", k, student_logits.shape[-1], 1)
    _check_size("m", m, student_logits.shape[-1], 0)
    s, t = _rows(mask, student_logits, teacher_logits.detach())
    if s.shape[0] == 0:
        return _empty_zero(student_logits)
    t_ids, t_logp = topk_from_logits(t, k)  # only on counted rows: prompt positions cost nothing
    return ckd_loss_cached(s, t_ids, t_logp, None, m=m, lam=lam)


def topk_forward_kl(student_logits, teacher_logits, mask=None, k: int = TOP_K) -> torch.Tensor:
    """Top-k forward KL (CKD with λ = 0):  Σ_{v ∈ T_k} p_T(v) · (log p_T(v) − log p_S(v))."""
    return ckd_loss(student_logits, teacher_logits, mask, k=k, m=0, lam=0.0)


def topk_reverse_kl(student_logits, teacher_logits, mask=None, k: int = TOP_K) -> torch.Tensor:
    """Top-k reverse KL over the teacher's top-k (STAR's ablation):
    Σ_{v ∈ T_k} p_S(v) · (log p_S(v) − log p_T(v)); see ``topk_reverse_kl_cached``."""
    _check_pair(student_logits, teacher_logits, mask)
    _check_size("k", k, student_logits.shape[-1], 1)
    s, t = _rows(mask, student_logits, teacher_logits.detach())
    if s.shape[0] == 0:
        return _empty_zero(student_logits)
    t_ids, t_logp = topk_from_logits(t, k)
    return topk_reverse_kl_cached(s, t_ids, t_logp)


def forward_kl(student_logits, teacher_logits, mask=None) -> torch.Tensor:
    """Full-vocabulary forward KL (the GKD / TRL beta=0 loss, Eq. 1 of the STAR paper):

        L_FKL = Σ_v p_T(v) · (log p_T(v) − log p_S(v))"""
    _check_pair(student_logits, teacher_logits, mask)
    s, t = _rows(mask, student_logits, teacher_logits.detach())
    if s.shape[0] == 0:
        return _empty_zero(student_logits)
    s_logp = torch.log_softmax(s.float(), dim=-1)
    t_logp = torch.log_softmax(t.float(), dim=-1)
    return _mean(_xlogratio(t_logp, t_logp, s_logp).sum(dim=-1))


def sft_loss(student_logits, labels, mask=None) -> torch.Tensor:
    """Cross-entropy on target ids (the SFT baseline):  −log p_S(y_t), averaged over counted tokens.
    labels: (B, T) / (N,) token ids aligned with the logits; mask None counts every label that is not
    IGNORE_INDEX (-100)."""
    _check_logits("student_logits", student_logits)
    if tuple(labels.shape) != _lead(student_logits):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match the logits' leading dims "
                         f"{_lead(student_logits)} (student logits {tuple(student_logits.shape)})")
    _check_mask(mask, student_logits)
    keep = labels != IGNORE_INDEX if mask is None else (mask != 0) & (labels != IGNORE_INDEX)
    s, y = _rows(keep, student_logits, labels.unsqueeze(-1))
    if s.shape[0] == 0:
        return _empty_zero(student_logits)
    vocab = student_logits.shape[-1]
    if int(y.min()) < 0 or int(y.max()) >= vocab:
        raise ValueError(f"labels hold ids outside [0, {vocab}) at counted positions")
    s = s.float()
    return _mean(torch.logsumexp(s, dim=-1) - s.gather(-1, y.long()).squeeze(-1))


_FULL = {"ckd": ckd_loss, "topk_fkl": topk_forward_kl, "fkl": forward_kl, "topk_rkl": topk_reverse_kl}
_CACHED = {"ckd": ckd_loss_cached, "topk_fkl": topk_forward_kl_cached, "topk_rkl": topk_reverse_kl_cached}


def distill_loss(name: str, student_logits, teacher_logits=None, mask=None, labels=None, **kwargs) -> torch.Tensor:
    """One entry point for the lesson's comparison: name in LOSS_NAMES ("ckd", "topk_fkl", "fkl",
    "topk_rkl", "sft"); kwargs go to the loss (k, m, lam where it takes them)."""
    if name == "sft":
        if labels is None:
            raise ValueError("distill_loss('sft', ...) needs labels (the target token ids)")
        return sft_loss(student_logits, labels, mask)
    if name not in _FULL:
        raise ValueError(f"unknown distillation loss {name!r}; choose one of {LOSS_NAMES}")
    if teacher_logits is None:
        raise ValueError(f"distill_loss({name!r}, ...) needs teacher_logits")
    return _FULL[name](student_logits, teacher_logits, mask, **kwargs)


def distill_loss_cached(name: str, student_logits, teacher_topk_ids, teacher_topk_logprobs, mask=None,
                        **kwargs) -> torch.Tensor:
    """``distill_loss`` for a cached teacher: "ckd", "topk_fkl" or "topk_rkl" (a full-vocabulary loss
    cannot be computed from a top-k cache)."""
    if name not in _CACHED:
        raise ValueError(f"loss {name!r} cannot use a top-k cache; cached losses: {tuple(_CACHED)}")
    return _CACHED[name](student_logits, teacher_topk_ids, teacher_topk_logprobs, mask, **kwargs)


# ----------------------------------------------------------------------------- model forward

def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore padding. Hugging Face causal LMs do not derive them from the attention
    mask in forward() (only generate() does), so a left-padded sequence would otherwise start at its
    padding length. RoPE models (Llama, Qwen) barely notice, since attention sees only position
    differences; a model with learned absolute positions would give other logits than the same
    sequence alone. Passing them keeps a cached teacher independent of how its batch was padded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def first_counted(mask: torch.Tensor) -> int:
    """The first shifted position that any row of the batch counts (0 when none does)."""
    cols = mask.reshape(-1, mask.shape[-1]).any(dim=0).nonzero()
    return int(cols[0]) if len(cols) else 0


def lm_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              first: int = 0) -> torch.Tensor:
    """(B, L-1-first, V) logits for positions first .. L-2, aligned with the targets input_ids[:, first+1:].
    first > 0 asks the model for those logits only (Hugging Face's logits_to_keep): the LM head is a
    large share of a small model's compute (SmolLM2: 28M of 135M parameters, vocab 49,152), and in a
    left-padded batch the prompt positions before the earliest completion never need it."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    kwargs = {"logits_to_keep": input_ids.shape[1] - first} if first > 0 else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from(attention_mask), **kwargs)
    return out.logits[:, :-1]


def target_mask(batch: dict) -> torch.Tensor:
    """(B, L-1) bool: which shifted positions predict a counted completion token (the target and the
    position that predicts it are both real tokens)."""
    mask = batch["completion_mask"].bool()
    if batch.get("attention_mask") is None:
        return mask[:, 1:]
    att = batch["attention_mask"].bool()
    return (mask & att)[:, 1:] & att[:, :-1]


def ckd_step_online(student, teacher, batch: dict, loss: str = "ckd", **loss_kwargs) -> torch.Tensor:
    """The loss of one batch with the teacher run on the fly (no grad). batch: input_ids, attention_mask,
    completion_mask, each (B, L). Call .backward() on the result. The teacher's logits exist for this
    step: the memory and the teacher forward that ``ckd_step_cached`` saves."""
    ids, att = batch["input_ids"], batch.get("attention_mask")
    mask = target_mask(batch)
    first = first_counted(mask)
    teacher_logits = None
    if loss != "sft":
        teacher.eval()
        with torch.no_grad():
            teacher_logits = lm_logits(teacher, ids, att, first)
    student_logits = lm_logits(student, ids, att, first)
    return distill_loss(loss, student_logits, teacher_logits, mask[:, first:], labels=ids[:, first + 1:],
                        **loss_kwargs)


def ckd_step_cached(student, batch: dict, loss: str = "ckd", **loss_kwargs) -> torch.Tensor:
    """The loss of one batch from ``collate_cached`` (teacher top-k read from the cache): the teacher
    is not in memory and never runs."""
    mask = batch["loss_mask"]
    first = first_counted(mask)
    student_logits = lm_logits(student, batch["input_ids"], batch["attention_mask"], first)
    return distill_loss_cached(loss, student_logits, batch["teacher_topk_ids"][:, first:],
                               batch["teacher_topk_logprobs"][:, first:], mask[:, first:], **loss_kwargs)


# ----------------------------------------------------------------------------- teacher top-k cache

def cache_bytes_per_token(k: int, id_bytes: int = 4, logprob_bytes: int = 2) -> int:
    """Bytes of teacher output stored per completion token: k int32 ids + k float16 log-probs."""
    return k * (id_bytes + logprob_bytes)


def full_logits_bytes_per_token(vocab: int, dtype=torch.float32) -> int:
    """Bytes per token to store the teacher's full logits instead (vocab x element size)."""
    return vocab * torch.empty((), dtype=dtype).element_size()


def _as_record(rec: dict) -> dict:
    ids = torch.as_tensor(rec["input_ids"]).reshape(-1)
    cm = torch.as_tensor(rec["completion_mask"]).reshape(-1).bool()
    t_ids, t_lp = torch.as_tensor(rec["topk_ids"]), torch.as_tensor(rec["topk_logprobs"])
    if cm.shape != ids.shape:
        raise ValueError(f"completion_mask {tuple(cm.shape)} and input_ids {tuple(ids.shape)} differ in length")
    rows = int(cm[1:].sum())
    if t_ids.dim() != 2 or t_ids.shape != t_lp.shape or t_ids.shape[0] != rows:
        raise ValueError(f"topk_ids {tuple(t_ids.shape)} / topk_logprobs {tuple(t_lp.shape)} must both be "
                         f"({rows}, k): one row per completion token after the first position")
    out = {"input_ids": ids.to(ID_DTYPE), "completion_mask": cm,
           "topk_ids": t_ids.to(ID_DTYPE), "topk_logprobs": t_lp.to(LOGPROB_DTYPE)}
    if rec.get("id") is not None:
        out["id"] = str(rec["id"])
    return out


def save_topk_cache(path, records: list[dict], *, vocab_size: int | None = None, model_id: str | None = None,
                    shard_seqs: int = SHARD_SEQS) -> dict:
    """Write records to a cache folder: shard-NNNNN.safetensors files plus manifest.json (written last,
    so a folder without a manifest is an interrupted write). Returns the manifest.

    A record: input_ids (L,), completion_mask (L,) (1 = completion token), topk_ids and topk_logprobs
    (R, k) with one row per completion token at positions 1..L-1 (R = completion_mask[1:].sum()),
    optional id. Only completion tokens carry teacher outputs: prompts (tool schemas, mostly) are
    most of a sequence and are never distilled on. Ragged sequences are concatenated per shard with
    offset tables, so a shard is five flat tensors."""
    from safetensors.torch import save_file

    recs = [_as_record(r) for r in records]
    ks = {r["topk_ids"].shape[1] for r in recs}
    if len(ks) > 1:
        raise ValueError(f"records mix top-k sizes {sorted(ks)}; a cache has one k")
    k = ks.pop() if ks else 0
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    shards = []
    for start in range(0, len(recs), shard_seqs):
        chunk = recs[start:start + shard_seqs]
        seq_len = torch.tensor([0] + [len(r["input_ids"]) for r in chunk])
        row_len = torch.tensor([0] + [r["topk_ids"].shape[0] for r in chunk])
        tensors = {
            "input_ids": torch.cat([r["input_ids"] for r in chunk]),
            "completion_mask": torch.cat([r["completion_mask"] for r in chunk]).to(torch.uint8),
            "seq_offsets": seq_len.cumsum(0),
            "topk_ids": torch.cat([r["topk_ids"] for r in chunk]).reshape(-1, k),
            "topk_logprobs": torch.cat([r["topk_logprobs"] for r in chunk]).reshape(-1, k),
            "row_offsets": row_len.cumsum(0),
        }
        name = f"shard-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / name), metadata={"ids": json.dumps([r.get("id") for r in chunk])})
        shards.append({"file": name, "sequences": len(chunk), "sha256": _sha256(folder / name)})
    n_rows = sum(r["topk_ids"].shape[0] for r in recs)
    manifest = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "k": k, "vocab_size": vocab_size, "model_id": model_id,
        "id_dtype": "int32", "logprob_dtype": "float16", "logprobs": "full-vocabulary log-softmax, not renormalised",
        "n_sequences": len(recs), "n_tokens": sum(len(r["input_ids"]) for r in recs), "n_target_tokens": n_rows,
        "bytes_per_target_token": cache_bytes_per_token(k), "shards": shards,
    }
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST_NAME)
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_topk_cache(path, verify: bool = True) -> tuple[list[dict], dict]:
    """(records, manifest) from a folder written by ``save_topk_cache``; records as it takes them."""
    from safetensors import safe_open

    folder = Path(path)
    if not (folder / MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {folder}: not a top-k cache, or its write was interrupted")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        raise ValueError(f"{folder}: unknown cache format {manifest.get('format')!r} v{manifest.get('version')}")
    records = []
    for shard in manifest["shards"]:
        file = folder / shard["file"]
        if verify and _sha256(file) != shard["sha256"]:
            raise ValueError(f"{file} does not match its checksum in the manifest: rebuild the cache")
        with safe_open(str(file), framework="pt") as f:
            t = {name: f.get_tensor(name) for name in f.keys()}
            ids = json.loads(f.metadata()["ids"])
        so, ro = t["seq_offsets"].tolist(), t["row_offsets"].tolist()
        for i in range(len(so) - 1):
            rec = {"input_ids": t["input_ids"][so[i]:so[i + 1]],
                   "completion_mask": t["completion_mask"][so[i]:so[i + 1]].bool(),
                   "topk_ids": t["topk_ids"][ro[i]:ro[i + 1]],
                   "topk_logprobs": t["topk_logprobs"][ro[i]:ro[i + 1]]}
            if ids[i] is not None:
                rec["id"] = ids[i]
            records.append(rec)
    return records, manifest


def build_topk_cache(teacher_model, batches, k: int, path, *, model_id: str | None = None) -> dict:
    """Run the teacher (eval, no grad) over tokenised batches and save its top-k for every completion
    token. batches: iterable of dicts with input_ids, attention_mask (optional) and completion_mask,
    each (B, L), left or right padded, and optionally "ids" (a list of B row ids). Returns the manifest."""
    teacher_model.eval()
    records = []
    vocab = None
    with torch.no_grad():
        for batch in batches:
            ids = batch["input_ids"]
            att = batch.get("attention_mask")
            att = torch.ones_like(ids) if att is None else att
            mask = target_mask({"completion_mask": batch["completion_mask"], "attention_mask": att})
            first = first_counted(mask)
            device = next(teacher_model.parameters()).device
            with runtime.autocast_for(device):
                logits = lm_logits(teacher_model, ids.to(device), att.to(device), first).float().cpu()  # (B, L-1-first, V)
            vocab = logits.shape[-1]
            for b in range(ids.shape[0]):
                real = att[b].bool()                     # padding dropped: a record is one real sequence
                t_ids, t_lp = topk_from_logits(logits[b][mask[b, first:]], k)
                rec = {"input_ids": ids[b][real], "completion_mask": batch["completion_mask"][b][real].bool(),
                       "topk_ids": t_ids, "topk_logprobs": t_lp}
                if batch.get("ids") is not None:
                    rec["id"] = batch["ids"][b]
                records.append(rec)
    model_id = model_id or getattr(getattr(teacher_model, "config", None), "name_or_path", None)
    return save_topk_cache(path, records, vocab_size=vocab, model_id=model_id)


def collate_cached(records: list[dict], pad_id: int = 0, padding_side: str = "left") -> dict:
    """Padded training batch from cache records: input_ids, attention_mask (B, L); loss_mask (B, L-1);
    teacher_topk_ids (B, L-1, k) int64 and teacher_topk_logprobs (B, L-1, k) float32, zero where
    loss_mask is 0 (those rows are never read). Left padding by default: completions then end every
    row together, so ``lm_logits`` can skip the LM head on the prompt positions of all rows."""
    if not records:
        raise ValueError("collate_cached needs at least one record")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    k = records[0]["topk_ids"].shape[1]
    n, width = len(records), max(len(r["input_ids"]) for r in records)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width - 1), dtype=torch.bool)
    t_ids = torch.zeros((n, width - 1, k), dtype=torch.long)
    t_lp = torch.zeros((n, width - 1, k), dtype=torch.float32)
    for i, r in enumerate(records):
        length = len(r["input_ids"])
        at = slice(width - length, width) if padding_side == "left" else slice(0, length)
        shifted = slice(at.start, at.stop - 1)           # positions whose target is a real token after them
        input_ids[i, at] = torch.as_tensor(r["input_ids"]).long()
        attention[i, at] = 1
        rows = torch.as_tensor(r["completion_mask"]).bool()[1:]
        loss_mask[i, shifted] = rows
        t_ids[i, shifted][rows] = torch.as_tensor(r["topk_ids"]).long()
        t_lp[i, shifted][rows] = torch.as_tensor(r["topk_logprobs"]).float()
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask,
            "teacher_topk_ids": t_ids, "teacher_topk_logprobs": t_lp}


def tokenize_pair(tokenizer, prompt: str, completion: str, max_length: int | None = None) -> dict:
    """input_ids and completion_mask for prompt + completion, tokenised apart so the boundary is exact
    (a BPE merge across it would blur which token is the first completion token). Over max_length,
    the oldest prompt tokens go first, as TRL's ChatML collator does: the completion is what we train on."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids, cm = p + c, [0] * len(p) + [1] * len(c)
    if max_length is not None and len(ids) > max_length:
        ids, cm = ids[-max_length:], cm[-max_length:]
    return {"input_ids": ids, "completion_mask": cm}


# ----------------------------------------------------------------------------- teacher rollout filter

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.S)


def _prompt_key(row: dict) -> str:
    return json.dumps([row.get("id"), row.get("prompt"), row.get("messages")], sort_keys=True, default=str)


def _rollout_key(calls: list[dict], think: str | None, reply: str | None) -> str:
    """What STAR hashes to de-duplicate a prompt's rollouts: the parsed calls in a canonical order (so
    two completions that differ only in whitespace or call order count once), the reasoning, the reply."""
    canon = sorted((json.dumps(c, sort_keys=True, ensure_ascii=False) for c in calls))
    return json.dumps({"calls": canon, "think": think, "reply": reply}, sort_keys=True)


def rollout_verdict(completion: str, tools, require_call: bool = True, require_think: bool = False):
    """(reason, calls, think): reason is "ok" or why STAR's format check would drop the completion."""
    from helpers.rewards import parse_tool_calls, tool_parameters

    if not isinstance(completion, str):
        return "not_text", None, None
    think = None
    if require_think:
        # STAR's parse_generation: Qwen3 templates put "<think>" in the prompt, so prepend it when missing;
        # then exactly one <think>...</think> must remain.
        text = completion if "<think>" in completion else "<think>" + completion
        found = _THINK_RE.findall(text)
        if len(found) != 1:
            return "bad_think", None, None
        think = found[0].strip()
    # STAR reads calls from the answer after the reasoning: a <tool_call> drafted inside <think> is not a call
    calls = parse_tool_calls(completion.split("</think>")[-1], strict=True)
    if calls is None:
        return "malformed_tool_call", None, think
    if not calls:
        return ("no_tool_call" if require_call else "ok"), calls, think
    params = tool_parameters(tools)
    for call in calls:
        if call["name"] not in params:
            return "unknown_tool", calls, think
        if any(key not in params[call["name"]] for key in call["arguments"]):
            return "unknown_argument", calls, think
    return "ok", calls, think


def filter_rollouts(rows: list[dict], require_call: bool = True,
                    require_think: bool = False) -> tuple[list[dict], dict]:
    """Keep the teacher rollouts fit to distil on, as STAR's teacher_rollout.py does before CKD:
    every <tool_call> block is one JSON object with "name" and a dict "arguments"
    (rewards.parse_tool_calls, strict), every name is a tool of the row, every argument key is one of
    that tool's parameters; then duplicates of one prompt are dropped (same calls in any order, same
    reasoning, same reply). rows: dicts with "completion" (text), "tools", and "id"/"prompt"/"messages"
    naming the prompt. Returns (kept rows, unchanged and in order; stats).

    Differences from STAR, on purpose: require_call=True drops text replies, which STAR keeps (our
    lessons distil tool calls only; set it False for STAR's rule); require_think=False skips STAR's
    "exactly one <think> block" rule, since our cpu and gpu models do not think (True applies it)."""
    kept, seen, reasons = [], set(), Counter()
    for row in rows:
        reason, calls, think = rollout_verdict(row.get("completion"), row.get("tools"), require_call, require_think)
        if reason == "ok":
            reply = None if calls else row["completion"].split("</think>")[-1].strip()
            key = (_prompt_key(row), _rollout_key(calls, think, reply))
            if key in seen:
                reason = "duplicate"
            else:
                seen.add(key)
                kept.append(row)
                continue
        reasons[reason] += 1
    return kept, {"n_in": len(rows), "n_kept": len(kept), "reasons": dict(reasons)}


__all__ = [
    "TOP_K", "TOP_M", "LAMBDA_TAIL", "LOSS_NAMES",
    "ckd_loss", "ckd_loss_cached", "topk_forward_kl", "topk_forward_kl_cached", "forward_kl",
    "topk_reverse_kl", "topk_reverse_kl_cached", "sft_loss", "distill_loss", "distill_loss_cached",
    "topk_from_logits", "save_topk_cache", "load_topk_cache", "build_topk_cache", "collate_cached",
    "cache_bytes_per_token", "full_logits_bytes_per_token", "tokenize_pair",
    "position_ids_from", "first_counted", "lm_logits", "target_mask", "ckd_step_online", "ckd_step_cached",
    "rollout_verdict", "filter_rollouts",
]


# ----------------------------------------------------------------------------- the training loop
# A compact loop rather than a TRL Trainer subclass: the teacher is a cache (no generation, no second
# model in memory), each step is "collate cached records -> student forward -> loss -> AdamW", and the
# whole of it fits on one screen. TRL's GKDTrainer would run the teacher online over the full
# vocabulary (see benchmarks/bench_distill.py for the cost).

def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def pad_batches(examples: list[dict], batch_size: int, pad_id: int = 0, ids: list | None = None) -> list[dict]:
    """Left-padded (B, L) batches of input_ids, attention_mask and completion_mask from ``tokenize_pair``
    outputs, in order; ``ids`` (one per example) travel along so cache records keep their row id."""
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        width = max(len(e["input_ids"]) for e in chunk)
        batch = {name: torch.zeros((len(chunk), width), dtype=torch.long)
                 for name in ("input_ids", "attention_mask", "completion_mask")}
        batch["input_ids"].fill_(pad_id)
        for i, e in enumerate(chunk):
            n = len(e["input_ids"])
            batch["input_ids"][i, width - n:] = torch.tensor(e["input_ids"])
            batch["attention_mask"][i, width - n:] = 1
            batch["completion_mask"][i, width - n:] = torch.tensor(e["completion_mask"])
        if ids is not None:
            batch["ids"] = list(ids[start:start + batch_size])
        out.append(batch)
    return out


def step_loss(student, batch: dict, loss: str = "ckd", teacher=None, **loss_kwargs) -> torch.Tensor:
    """One batch's loss for any name in LOSS_NAMES. ``batch`` comes from ``collate_cached``. The cached
    top-k serves "ckd", "topk_fkl" and "topk_rkl"; "sft" trains on the rollout tokens themselves
    (sequence-level distillation); "fkl" needs the full teacher distribution, so the teacher runs online."""
    if loss in _CACHED:
        return ckd_step_cached(student, batch, loss, **loss_kwargs)
    mask = batch["loss_mask"]
    first = first_counted(mask)
    if loss == "sft":
        logits = lm_logits(student, batch["input_ids"], batch["attention_mask"], first)
        return sft_loss(logits, batch["input_ids"][:, first + 1:], mask[:, first:])
    if loss == "fkl":
        if teacher is None:
            raise ValueError("loss 'fkl' is full-vocabulary forward KL: pass the teacher (online mode)")
        online = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "completion_mask": torch.nn.functional.pad(mask.long(), (1, 0))}
        return ckd_step_online(student, teacher, online, "fkl")
    raise ValueError(f"unknown distillation loss {loss!r}; choose one of {LOSS_NAMES}")


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Record indices for every step: shuffled epochs, fixed by the seed, so a resumed run sees the
    same batches it would have seen without the interruption."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order += torch.randperm(n, generator=gen).tolist()
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def save_checkpoint(path, model, optimizer, step: int, history: list[dict]) -> None:
    """One file per run, replaced atomically: trainable weights, optimizer state, step, loss history."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": {k: v for k, v in model.state_dict().items()}, "optimizer": optimizer.state_dict(),
             "step": step, "history": history}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path, model, optimizer) -> tuple[int, list[dict]]:
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by save_checkpoint
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["history"]


def _world() -> tuple[int, int]:
    """(rank, processes) of an initialised torch.distributed group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_across_ranks(tensors, size: int) -> None:
    """All-reduce in place and divide by the number of processes: what DDP does to gradients."""
    for t in tensors:
        torch.distributed.all_reduce(t)
        t.div_(size)


def train_student(student, records: list[dict], *, loss: str = "ckd", steps: int = 100, lr: float = 5e-5,
                  batch_size: int = 4, seed: int = 0, pad_id: int = 0, teacher=None, checkpoint=None,
                  save_every: int = 25, grad_clip: float = 1.0, progress: bool = False, stop_after: int | None = None,
                  eval_every: int = 0, evaluate=None, trace=None, **loss_kwargs) -> list[dict]:
    """Train ``student`` on cached teacher records for ``steps`` optimizer steps and return the history
    [{"step", "loss", "seconds"}]. With ``checkpoint`` (a file path) the run saves every ``save_every``
    steps and at the end, and a rerun resumes from the saved step (nanoGPT's init_from='resume').
    ``stop_after`` ends this call after that many new steps (saving first): a time budget for Colab
    sessions, and how the tests interrupt a run. ``evaluate(student) -> dict`` every ``eval_every`` steps
    (and at step 0) draws a validation curve: its dict goes into that step's history entry under "eval"
    (step 0 as an entry of its own); its time is not counted in "seconds".

    Under a multi-process launch (torch.distributed initialised, e.g. ``accelerate launch``) every rank
    takes its share of each step's batch (rank r: records r, r + n, ...), the gradients are averaged
    across ranks before the update (the same weights everywhere, as DDP keeps them), the logged loss is
    the ranks' mean, and rank 0 alone writes the checkpoint. ``trace`` (a file path) gets one line per
    step with the record ids this rank trained on."""
    import time
    rank, size = _world()
    if size > batch_size:
        raise ValueError(f"batch_size {batch_size} is split across {size} processes: use at least {size}")
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    start, history = 0, []
    if checkpoint is not None and Path(checkpoint).is_file():
        start, history = load_checkpoint(checkpoint, student, optimizer)
    plan = batch_order(len(records), batch_size, steps, seed)
    device = next(student.parameters()).device
    if evaluate is not None and eval_every > 0 and start == 0:
        history.append({"step": 0, "loss": float("nan"), "seconds": 0.0, "eval": _scored(evaluate, student)})
    student.train()
    iterator = range(start, steps)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc=f"{loss}", initial=start, total=steps)
    for step in iterator:
        t0 = time.perf_counter()
        # cosine decay to 10% of lr, computed from the step so resumed runs follow the same schedule
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(step / max(1, steps) * torch.pi)).item()))
        mine = plan[step][rank::size]
        batch = to_device(collate_cached([records[i] for i in mine], pad_id=pad_id), device)
        with runtime.autocast_for(device):
            value = step_loss(student, batch, loss, teacher=teacher, **loss_kwargs)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        logged = value.detach().float().clone()
        if size > 1:
            _average_across_ranks([p.grad for p in params if p.grad is not None] + [logged], size)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        history.append({"step": step + 1, "loss": float(logged), "seconds": time.perf_counter() - t0})
        if trace is not None:
            _trace_step(trace, step + 1, [records[i].get("id", i) for i in mine], float(value.detach()))
        if evaluate is not None and eval_every > 0 and ((step + 1) % eval_every == 0 or step + 1 == steps):
            history[-1]["eval"] = _scored(evaluate, student)
        stopping = stop_after is not None and step + 1 - start >= stop_after
        if checkpoint is not None and rank == 0 and ((step + 1) % save_every == 0 or step + 1 == steps or stopping):
            save_checkpoint(checkpoint, student, optimizer, step + 1, history)
        if stopping:
            break
    student.eval()
    return history


def _trace_step(path, step: int, ids: list, local_loss: float) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"step": step, "ids": ids, "loss": local_loss}) + "\n")


def _scored(evaluate, model) -> dict:
    """evaluate(model) in eval mode, then back to training mode (dropout, if any, comes back on)."""
    model.eval()
    try:
        return dict(evaluate(model))
    finally:
        model.train()


@torch.no_grad()
def mean_entropy(model, records: list[dict], batch_size: int = 4, pad_id: int = 0) -> float:
    """Mean entropy (nats) of the model's next-token distribution over the counted completion tokens of
    ``records``, teacher-forced. STAR's argument: reverse KL collapses it, and low entropy leaves RL
    nothing to explore."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(records), batch_size):
        batch = to_device(collate_cached(records[i:i + batch_size], pad_id=pad_id), device)
        mask = batch["loss_mask"]
        first = first_counted(mask)
        with runtime.autocast_for(device):   # as the training forward; about 1.5x faster on two bf16 cores
            logits = lm_logits(model, batch["input_ids"], batch["attention_mask"], first).float()
        logp = torch.log_softmax(logits, dim=-1)
        ent = -(logp.exp() * logp).sum(-1)[mask[:, first:]]
        total, count = total + float(ent.sum()), count + ent.numel()
    return total / count if count else float("nan")


# ----------------------------------------------------------------------------- a toy for the lesson

def fit_toy_student(teacher_logits: torch.Tensor, loss: str, *, steps: int = 300, lr: float = 0.05,
                    seed: int = 0, init_scale: float = 2.0, **loss_kwargs) -> dict:
    """Fit free student logits (one distribution over a small vocabulary) to a fixed teacher with one
    of the losses, by Adam. Returns the final student probabilities, the loss curve and the entropy
    curve: a picture of what each loss does to the head and to the tail of the distribution."""
    gen = torch.Generator().manual_seed(seed)
    s = (torch.randn(teacher_logits.shape, generator=gen) * init_scale).requires_grad_(True)
    opt = torch.optim.Adam([s], lr=lr)
    losses, entropies = [], []
    t = teacher_logits.detach().float()
    for _ in range(steps):
        if loss == "sft":
            value = sft_loss(s[None], t.argmax(-1, keepdim=True)[None].squeeze(-1))
        else:
            value = distill_loss(loss, s[None], t[None], **loss_kwargs)
        opt.zero_grad()
        value.backward()
        opt.step()
        p = torch.softmax(s.detach(), -1)
        losses.append(float(value.detach()))
        entropies.append(float(-(p * p.clamp_min(1e-12).log()).sum()))
    return {"probs": torch.softmax(s.detach(), -1), "loss": losses, "entropy": entropies}
