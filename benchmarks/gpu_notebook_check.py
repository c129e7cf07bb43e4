"""Run a notebook's gpu-profile code path on a GPU that cannot reach the hub, then load what it saved.

    python benchmarks/gpu_notebook_check.py --tokenizer DIR --notebook 04 --dtype float16 --out /tmp/check

The gpu profile's models (Qwen2.5-0.5B-Instruct and friends) are replaced by one model with
Qwen2.5-0.5B's shapes and random weights (``TINYRL_MODEL_<ROLE>``), so what this checks is the code
path: 4-bit nf4 loading, LoRA, SFT with a completion mask, GRPO with a custom rollout function,
saving adapters, loading them back (merged as a new starting point, or on the 4-bit base for
evaluation). Scores of a random model mean nothing and are not printed as results.
``--dtype float16`` runs the card the way a T4 must (no bf16 there: fp16 with a GradScaler).

The notebook's code cells run in this process, one after the other, with its parameters cell
overridden (papermill is not needed on the GPU machine). Per cell: seconds and peak GPU memory.
"""

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def code_cells(notebook: Path) -> tuple[str, list[str]]:
    """(parameters cell, the other code cells) of a notebook file."""
    nb = json.loads(notebook.read_text())
    params, cells = None, []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            params = source
        else:
            cells.append(source)
    if params is None:
        raise SystemExit(f"{notebook} has no cell tagged 'parameters'")
    return params, cells


def run_cells(notebook: Path, overrides: dict) -> list[dict]:
    import matplotlib
    matplotlib.use("Agg")  # no display; plt.show() becomes a no-op
    import torch
    params, cells = code_cells(notebook)
    namespace = {"__name__": "__main__", "display": print}
    exec(compile(params, f"{notebook.name}:parameters", "exec"), namespace)
    unknown = sorted(set(overrides) - set(namespace))
    if unknown:   # a misspelt knob would otherwise be set beside the real one and change nothing
        raise SystemExit(f"{notebook.name}'s parameters cell has no {', '.join(unknown)}")
    namespace.update(overrides)
    os.chdir(notebook.parent)   # the notebooks' setup cell finds the repo from here
    timings = []
    for i, source in enumerate(cells):
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            exec(compile(source, f"{notebook.name}:cell{i}", "exec"), namespace)
        except Exception:
            head = "\n".join("    " + line for line in source.strip().splitlines()[:8])
            print(f"\nFAILED in code cell {i}:\n{head}\n", flush=True)
            traceback.print_exc()
            raise SystemExit(1)
        timings.append({"cell": i, "seconds": round(time.perf_counter() - t0, 1),
                        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                        "first_line": source.strip().splitlines()[0][:70] if source.strip() else ""})
        print(f"cell {i:>2}: {timings[-1]['seconds']:>6.1f} s, peak {timings[-1]['peak_gib']:.2f} GiB  {timings[-1]['first_line']}",
              flush=True)
    return timings


def load_saved_models(out: Path) -> list[dict]:
    """What notebook 05 does with each saved model: find it, load it (adapter on the 4-bit base), generate."""
    from helpers import models, runtime, scoreboard
    rt = runtime.setup("gpu", seed=0)
    tok = models.load_tokenizer(rt.models["policy"])
    rows = []
    for entry in scoreboard.find_models(out, rt.models["policy"]):
        if not entry["present"]:
            continue
        model = scoreboard.load_model(entry, rt)
        text = models.generate(model, tok, ["Hola"], max_new_tokens=8)[0]
        rows.append({"stage": entry["stage"], "adapter": (Path(entry["path"]) / "adapter_config.json").is_file(),
                     "four_bit": any(type(m).__name__ == "Linear4bit" for m in model.modules()),
                     "generated_chars": len(text)})
        print(f"loaded {entry['stage']}: {rows[-1]}", flush=True)
        del model
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="any ChatML tokenizer folder")
    ap.add_argument("--notebook", default="04", help="notebook number")
    ap.add_argument("--dtype", choices=["auto", "float16", "bfloat16"], default="auto")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--full", action="store_true", help="the notebook's own step counts instead of its smoke run")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a parameter after the parameters cell, e.g. --set 'START_FROM=\"teacher\"' "
                         "(VALUE is read as JSON, as papermill's -p would; repeatable)")
    args = ap.parse_args()
    settings = {}   # read before any model is built, so that a typo fails at once
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected NAME=VALUE")
        if name.strip() in ("PROFILE", "SMOKE", "OUTPUT_DIR"):
            ap.error(f"--set {item!r}: the script sets {name.strip()} itself (--full for the notebook's own sizes)")
        try:
            settings[name.strip()] = json.loads(value)
        except ValueError:
            ap.error(f"--set {item!r}: VALUE must be JSON (a string needs its quotes)")

    from gpu_grpo_memory import build_random_qwen
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.out / "random-qwen2.5-0.5b"
    if not (model_dir / "config.json").is_file():
        build_random_qwen(model_dir, args.tokenizer)
    for role in ("policy", "teacher", "student"):
        os.environ[f"TINYRL_MODEL_{role.upper()}"] = str(model_dir.resolve())
    if args.dtype != "auto":
        os.environ["TINYRL_GPU_DTYPE"] = args.dtype
    notebook = next((ROOT / "notebooks").glob(f"{args.notebook}_*.ipynb"))
    run_dir = (args.out / f"run-{args.dtype}").resolve()
    t0 = time.perf_counter()
    overrides = {"PROFILE": "gpu", "SMOKE": not args.full, "OUTPUT_DIR": str(run_dir), **settings}
    timings = run_cells(notebook, overrides)
    seconds = time.perf_counter() - t0
    loaded = load_saved_models(run_dir)
    import torch
    result = {"device": torch.cuda.get_device_name(0), "dtype": args.dtype, "notebook": notebook.name, "set": args.set,
              "smoke": not args.full, "model": "random weights, Qwen2.5-0.5B shapes", "seconds": round(seconds, 1),
              "peak_gib": max(t["peak_gib"] for t in timings), "cells": timings, "loaded": loaded}
    print(json.dumps({k: v for k, v in result.items() if k != "cells"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
