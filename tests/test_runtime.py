import pytest

from helpers import runtime


def test_auto_follows_cuda(monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    assert runtime.resolve_profile("auto", has_cuda=False) == "cpu"
    assert runtime.resolve_profile("auto", has_cuda=True) == "gpu"
    assert runtime.resolve_profile(None, has_cuda=False) == "cpu"


def test_env_overrides_auto_only(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV, "cpu")
    assert runtime.resolve_profile("auto", has_cuda=True) == "cpu"
    # an explicit request wins over the environment
    assert runtime.resolve_profile("gpu", has_cuda=True) == "gpu"


def test_gpu_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    with pytest.raises(runtime.ProfileError, match="needs a CUDA GPU.*profile='cpu'"):
        runtime.resolve_profile("gpu", has_cuda=False)


def test_unknown_profile():
    with pytest.raises(runtime.ProfileError, match="unknown profile 'tpu'"):
        runtime.resolve_profile("tpu", has_cuda=False)


def test_this_machine_has_no_cuda_so_gpu_fails(monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    if runtime.cuda_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(runtime.ProfileError):
        runtime.setup("gpu", verbose=False)


@pytest.mark.parametrize("profile,bf16,expected", [
    ("cpu", None, "float32"), ("gpu", True, "bfloat16"), ("gpu", False, "float16"),
])
def test_dtype_rule(profile, bf16, expected):
    assert runtime.pick_dtype(profile, bf16_supported=bf16) == expected


def test_setup_seeds_and_summarises(capsys):
    import random

    import torch
    rt = runtime.setup("cpu", seed=123)
    a = (random.random(), torch.rand(3).tolist())
    runtime.setup("cpu", seed=123, verbose=False)
    b = (random.random(), torch.rand(3).tolist())
    assert a == b
    out = capsys.readouterr().out
    assert "profile      cpu" in out and "torch" in out and "embedded:SmolLM2-135M-Instruct" in out
    assert rt.dtype_name == "float32" and rt.use_cpu and not rt.bf16 and not rt.fp16
    assert set(rt.models) == {"policy", "teacher", "student", "embedder"}


def test_profiles_name_every_role():
    assert runtime.PROFILE_MODELS["cpu"].keys() == runtime.PROFILE_MODELS["gpu"].keys()


def test_model_env_overrides_one_role(monkeypatch):
    monkeypatch.setenv(runtime.MODEL_ENV + "POLICY", "Qwen/Qwen3-0.6B")
    table = runtime.describe("cpu").models
    assert table["policy"] == "Qwen/Qwen3-0.6B"
    assert table["teacher"] == runtime.PROFILE_MODELS["cpu"]["teacher"]
    assert runtime.PROFILE_MODELS["cpu"]["policy"] != "Qwen/Qwen3-0.6B"   # the table itself is untouched


def test_gpu_dtype_can_be_forced_to_the_t4_setting(monkeypatch):
    monkeypatch.setenv(runtime.GPU_DTYPE_ENV, "float16")
    assert runtime.pick_dtype("gpu", bf16_supported=True) == "float16"
    assert runtime.pick_dtype("cpu") == "float32"          # the cpu profile ignores it
    monkeypatch.setenv(runtime.GPU_DTYPE_ENV, "bfloat16")
    with pytest.raises(runtime.ProfileError, match="no bf16"):
        runtime.pick_dtype("gpu", bf16_supported=False)
    monkeypatch.setenv(runtime.GPU_DTYPE_ENV, "int8")
    with pytest.raises(runtime.ProfileError, match="float16 or bfloat16"):
        runtime.pick_dtype("gpu", bf16_supported=True)


def test_cpu_bf16_rule(monkeypatch):
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "auto")
    assert runtime.cpu_bf16_enabled(supported=True) and not runtime.cpu_bf16_enabled(supported=False)
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "0")
    assert not runtime.cpu_bf16_enabled(supported=True)
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "1")
    assert runtime.cpu_bf16_enabled(supported=True)
    with pytest.raises(runtime.ProfileError, match="no native bf16"):
        runtime.cpu_bf16_enabled(supported=False)
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "yes")
    with pytest.raises(runtime.ProfileError, match="auto, 1 or 0"):
        runtime.cpu_bf16_enabled(supported=True)


def test_cpu_bf16_is_autocast_over_fp32_weights(monkeypatch):
    import torch
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "0")
    rt = runtime.describe("cpu")
    assert not rt.cpu_bf16 and not rt.bf16
    x = torch.ones(2, 2)
    with runtime.autocast_for("cpu"):
        assert (x @ x).dtype == torch.float32
    if not runtime.cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "1")
    rt = runtime.describe("cpu")
    assert rt.cpu_bf16 and rt.bf16 and rt.dtype_name == "float32"   # weights stay fp32; trainers get bf16=True
    with runtime.autocast_for(torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
    with runtime.autocast_for("cuda"):                               # never on another device
        assert (x @ x).dtype == torch.float32
    assert "bf16 autocast" in runtime.summary(rt)
