"""Where the minutes of a run went: per notebook, its wall time, the training inside it (per student loss,
per GRPO run, the teacher's SFT) and the rest (generation, scoring, loading), from the runner's run.json
and the metrics the notebooks wrote; and, where the run folder keeps the executed notebooks (notebooks/,
which the reference snapshot leaves out), the slowest cells as papermill timed them, under the section
heading they belong to. Reads a run folder; runs nothing.

    python benchmarks/run_minutes.py runs/cpu
    python benchmarks/run_minutes.py results/reference/cpu
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed_parts(name: str, metrics: dict) -> dict:
    """{what: seconds} of the parts a notebook's metrics time: training, and the teacher's rollouts."""
    extra, values = metrics.get("extra", {}), metrics.get("metrics", {})
    out = {}
    if name.startswith("02"):
        here = values.get("teacher_trained_here")
        if values.get("teacher_sft_seconds") and here != 0:   # a reused teacher cost this run no time
            out["teacher SFT" + ("" if here else " (maybe an earlier run)")] = values["teacher_sft_seconds"]
        if values.get("rollout_seconds"):
            out["teacher rollouts (generation)"] = values["rollout_seconds"]
        for s in extra.get("students", []):
            out[f"student {s['loss']} seed {s['seed']}"] = s["train_seconds"]
    elif name.startswith("03"):
        for r in extra.get("after", []):
            out[f"GRPO {r['reward']} seed {r['seed']}"] = r["train_seconds"]
    return out


def slowest_cells(notebook: dict, at_least: float = 30.0) -> list[tuple[float, str]]:
    """[(seconds, "section heading | first line of code")] of the code cells that took at least
    ``at_least`` seconds, slowest first, from the durations papermill writes into each cell's metadata."""
    heading, out = "", []
    for cell in notebook.get("cells", []):
        lines = "".join(cell.get("source", "")).splitlines()
        if cell.get("cell_type") == "markdown":
            heading = next((ln.lstrip("#").strip() for ln in lines if ln.startswith("#")), heading)
            continue
        seconds = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
        if cell.get("cell_type") == "code" and seconds is not None and seconds >= at_least:
            code = next((ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
            out.append((float(seconds), f"{heading[:48]} | {code[:48]}"))
    return sorted(out, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run folder (run.json, metrics/)")
    args = ap.parse_args()
    run = Path(args.run)
    entries = json.loads((run / "run.json").read_text())["notebooks"]
    total = sum(e["seconds"] for e in entries)
    print(f"{run}: {total / 60:.1f} minutes in {len(entries)} notebooks")
    for e in entries:
        path = run / "metrics" / f"{e['notebook']}.json"
        parts = timed_parts(e["notebook"], json.loads(path.read_text())) if path.is_file() else {}
        trained = sum(parts.values())
        print(f"\n{e['notebook']}: {e['seconds'] / 60:.1f} min wall (commit {e.get('commit')}), "
              f"{trained / 60:.1f} min in the parts below, {(e['seconds'] - trained) / 60:.1f} min the rest (scoring, loading)")
        for what, seconds in parts.items():
            print(f"  {what:<32} {seconds:7.0f} s")
        executed = run / "notebooks" / f"{e['notebook']}.ipynb"
        cells = slowest_cells(json.loads(executed.read_text())) if executed.is_file() else []
        if cells:
            print("  slowest cells (papermill):")
        for seconds, label in cells:
            print(f"    {seconds:7.0f} s  {label}")


if __name__ == "__main__":
    main()
