"""The distillation default chosen on validation (issue 12 item 2): the default run (Victoria
2014, MiniLM + LoRA) trained once per seed, each compressed with `distill` at every ``alpha``
(the weight of the task loss against the distance to the teacher); alpha is chosen by the
students' median best validation loss (the task loss, whatever alpha) and test MAPE is read
once, for every alpha, beside it.

    .venv/bin/python benchmarks/distill_sweep.py [--alphas 0.2 0.5 0.8] [--seeds 0 1 2]

Writes benchmarks/results/compress_distill_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GREENTUNE = str(ROOT / ".venv" / "bin" / "greentune")


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.2, 0.5, 0.8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            parent = Path(tmp) / f"parent-{seed}"
            _run([GREENTUNE, "run", f"output_dir={tmp}", f"name={parent.name}",
                  f"seed={seed}", "eval.baselines=[]"])  # fmt: skip
            teacher = json.loads((parent / "metrics.json").read_text())
            methods = [x for a in args.alphas for x in ("-m", f"distill:alpha={a:g}")]
            _run([GREENTUNE, "compress", str(parent), *methods, "--rounds", "1"])
            report = json.loads((parent / "compression.json").read_text())
            for v in report["variants"]:
                training = v["notes"]["training"]
                rows.append({
                    "seed": seed,
                    "alpha": float(v["options"]["alpha"]),
                    "val_loss": training["best_val_loss"],
                    "test_mape": v["metrics"]["mape"],
                    "teacher_val_loss": teacher["training"]["best_val_loss"],
                    "teacher_test_mape": teacher["test"][teacher["model"]]["mape"],
                    "build_wh": v["build_wh"],
                    "energy_kind": v.get("energy_kind"),
                    "steps": training["steps"],
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    by_alpha = {
        a: {
            key: statistics.median(r[key] for r in rows if r["alpha"] == a)
            for key in ("val_loss", "test_mape", "build_wh", "teacher_test_mape")
        }
        for a in args.alphas
    }
    chosen = min(by_alpha, key=lambda a: by_alpha[a]["val_loss"])
    result = {
        "what": "distill students of the default run at several alpha, one parent per seed; "
        "alpha chosen by the median best validation loss, test read once",
        "commands": [
            "greentune run seed=S eval.baselines=[]",
            "greentune compress RUN -m distill:alpha=A ... --rounds 1",
        ],
        "seeds": args.seeds,
        "chosen_alpha": chosen,
        "medians": {f"{a:g}": m for a, m in by_alpha.items()},
        "rows": rows,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / "compress_distill_sweep.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
