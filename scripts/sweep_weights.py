"""The sweep behind the weight-update defaults: learning rate x optimizer steps on legal_charges, measured on train
reward and val only (never test).

Harness: the task's default start (rank mode over TF-IDF candidate charges: the agent picks the candidate with the
best mean token log-likelihood) plus any ``-H k=v``; the resolved parameters are written into every result row, and a
results file made under another harness is refused. For each learning rate, one fresh LoRA is trained for the largest
step count,
pausing at each smaller checkpoint to score val; the schedule does not depend on the total, and a continued update
is exact (tested), so the checkpoint *is* the shorter run. Results go to ``OUT/results.jsonl`` line by line (a
killed sweep resumes where it stopped) and a markdown table to stdout.

    .venv/bin/python scripts/sweep_weights.py --lrs 1e-4,3e-4,1e-3 --checkpoints 8,24 --val 48

``--paired DIR ...`` instead scores val case by case without an adapter and with each saved adapter, and prints the
paired difference (adapter minus none) with its bootstrap interval and exact McNemar test (sia_bench.stats).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/sweep-weights"))
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    ap.add_argument("--checkpoints", default="8,24", help="optimizer-step counts at which val is scored")
    ap.add_argument("--val", type=int, default=48, help="val cases (a fixed subsample)")
    ap.add_argument("--algo", default="grpo")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("-H", dest="harness", action="append", default=[], help="extra harness k=v")
    ap.add_argument("--paired", nargs="+", type=Path, help="adapter folders to compare with no adapter on val")
    args = ap.parse_args()

    from sia_bench.agent import Agent
    from sia_bench.improvers.base import LoopState
    from sia_bench.improvers.trainers import WeightUpdate, apply_weight_update
    from sia_bench.loop import build_task
    from sia_bench.models import build_model
    from sia_bench.records import Ledger
    from sia_bench.task import subsample

    task = build_task("legal_charges", {})
    harness = task.default_harness().with_params(dict(kv.split("=", 1) for kv in args.harness))
    params: dict[str, Any] = dict(harness.params)
    if args.paired:
        return _paired(task, harness, args)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    earlier = _read(results_path)
    if any(r.get("harness") != params for r in earlier):
        raise SystemExit(f"{results_path} holds results under another harness; use another --out")
    done = {(r["lr"], r["steps"], r.get("algo")) for r in earlier}
    model = build_model("hf", **({"threads": args.threads} if args.threads else {}))
    agent = Agent(task, model)
    val = subsample(task.split("val"), args.val, 0)
    train = task.split("train")

    def score_val(label: str) -> float:
        t0 = time.perf_counter()
        metrics, _ = agent.evaluate(harness, val, "val", seed=0)
        print(f"[{label}] val accuracy {metrics['accuracy']:.4f} ({len(val)} cases, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
        return metrics["accuracy"]

    if (0.0, 0, "none") not in done:
        model.load_adapter(None)
        _append(results_path, {"lr": 0.0, "steps": 0, "algo": "none", "val": score_val("no adapter"),
                               "val_cases": len(val), "harness": params})
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    for lr in (float(x) for x in args.lrs.split(",")):
        if all((lr, c, args.algo) in done for c in checkpoints):
            continue
        best, previous, rounds, started = None, 0, [], time.perf_counter()
        for ckpt in checkpoints:
            workdir = args.out / f"{args.algo}-lr{lr:g}" / f"steps{ckpt:03d}"
            workdir.mkdir(parents=True, exist_ok=True)
            state = LoopState(generation=1, task=task, agent=agent, train=train, best_harness=harness,
                              best_adapter_dir=best, best_val={}, history=[], ledger=Ledger(), gen_ledger=Ledger(),
                              budget=None, seed=args.seed, workdir=workdir)
            update = WeightUpdate(algo=args.algo, steps=ckpt - previous, lr=lr, group_size=args.group_size,
                                  prompts_per_step=args.prompts)
            best, report = apply_weight_update(state, harness, update)
            rounds += report["steps"]
            previous = ckpt
            row = {"lr": lr, "steps": ckpt, "algo": args.algo, "group_size": args.group_size,
                   "prompts_per_step": args.prompts, "optimizer_steps": report["global_step"],
                   "train_reward_per_step": [r["mean_reward"] for r in rounds],
                   "sample_seconds_per_step": [r.get("sample_seconds") for r in rounds],
                   "train_seconds_per_step": [r.get("train_seconds") for r in rounds],
                   "grad_norm_per_step": [r.get("grad_norm") for r in rounds],
                   "tokens": report["tokens"], "train_flops": report["train_flops"],
                   "sample_flops": report["sample_flops"], "train_wall_seconds": time.perf_counter() - started,
                   "val": score_val(f"{args.algo} lr {lr:g}, {ckpt} steps"), "val_cases": len(val),
                   "harness": params}
            _append(results_path, row)
    _table(_read(results_path))


def _paired(task: Any, harness: Any, args: argparse.Namespace) -> None:
    from sia_bench.agent import Agent
    from sia_bench.models import build_model
    from sia_bench.stats import paired_comparison
    from sia_bench.task import subsample

    model = build_model("hf", **({"threads": args.threads} if args.threads else {}))
    agent = Agent(task, model)
    val = subsample(task.split("val"), args.val, 0)

    def per_case(adapter: Path | None) -> list[float]:
        model.load_adapter(adapter)
        _, trajs = agent.evaluate(harness, val, "val", seed=0)
        return [float(t.score) for t in trajs]

    base = per_case(None)
    print(f"no adapter: val {sum(base) / len(base):.4f} ({len(base)} cases)")
    for folder in args.paired:
        scores = per_case(folder)
        c = paired_comparison([scores], [base])
        print(f"{folder}: val {sum(scores) / len(scores):.4f}; minus no adapter {c.difference:+.4f} "
              f"[{c.lo:+.4f}, {c.hi:+.4f}] 95% paired bootstrap; {c.test}, p = {c.p_value:.4g}", flush=True)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _table(rows: list[dict]) -> None:
    print("| algo | lr | optimizer steps | val accuracy | train reward, first 4 / last 4 steps | s / step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        rewards = r.get("train_reward_per_step") or []
        secs = [a + b for a, b in zip(r.get("sample_seconds_per_step") or [], r.get("train_seconds_per_step") or [])
                if a is not None and b is not None]
        head = ", ".join(f"{x:.2f}" for x in rewards[:4])
        tail = ", ".join(f"{x:.2f}" for x in rewards[-4:])
        print(f"| {r['algo']} | {r['lr']:g} | {r.get('optimizer_steps', 0)} | {r['val']:.4f} | "
              f"{head} / {tail} | {sum(secs) / len(secs) if secs else 0:.1f} |")


if __name__ == "__main__":
    main()
