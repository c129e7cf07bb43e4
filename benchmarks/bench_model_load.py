"""Time the cpu profile's model loads: the first (dequantize the GGUF and write the cache) and the
second (read the cached safetensors). Targets: first under 60 s, second under 10 s.

    python benchmarks/bench_model_load.py [--repeats 3]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="cached loads to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TINYRL_CACHE"] = cache  # a cold cache, whatever the user's holds
        from helpers import models, runtime
        rt = runtime.setup("cpu", verbose=False)
        t0 = time.perf_counter()
        models.load_policy(rt, lora=False)
        first = time.perf_counter() - t0
        cached = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model, tok = models.load_policy(rt, lora=False)
            cached.append(time.perf_counter() - t0)
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 2**20
    print(f"first load (GGUF -> fp32 cache): {first:6.1f} s   target < 60 s   {'ok' if first < 60 else 'MISSED'}")
    print(f"cached load, best of {args.repeats}:      {min(cached):6.1f} s   target < 10 s   {'ok' if min(cached) < 10 else 'MISSED'}")
    print(f"cached load, worst:              {max(cached):6.1f} s")
    print(f"cache size:                      {size:6.0f} MiB")


if __name__ == "__main__":
    main()
