"""One-to-many (top-k) against one-to-one (Hungarian) assignment on the tiny RT-DETRv2, scored with and without NMS.

The one-to-one arm is the committed MAL arm of ``benchmarks/vfl_vs_mal.py`` (``rtdetr_shapes`` with
``loss_class=mal``, seed 0; its config, log and fp16 EMA weights are in ``benchmarks/vfl_vs_mal/mal/seed0/``). The
one-to-many arm is the same run with only the assignment changed: ``assignment=topk``, ``assignment_k=4`` and
``nms_iou=0.7`` (the run evaluates with NMS and logs the AP without it too). Why k = 4: a shapes image holds about
4 objects and the model has 50 queries, so up to 4 positives per target (about 12 per image in practice, after
conflicts) still leave most queries as negatives (the background the classifier must learn), while each target
gets several gradients per layer; a larger k on 50 queries would turn most of them into positives.

    python benchmarks/o2m_vs_o2o.py          # one run, about 7 minutes on 2 CPU cores

Writes ``benchmarks/o2m_vs_o2o/topk/seed0/{config.json,metrics.jsonl,model.pt}`` (model.pt: fp16 EMA weights with
their config, for the lessons), then evaluates both saved models (this one and the one-to-one MAL model) on the val
set with and without NMS, and writes a section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from minidetr.data import build_dataloader
from minidetr.evaluation import CocoEvaluator, PostProcess
from minidetr.predict import load_model
from minidetr.train.builders import build_datasets, resolve_data
from minidetr.train.engine import evaluate
from minidetr.train.logs import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name, _load  # noqa: E402  (benchmarks/ is a folder of scripts)
from results import write_section  # noqa: E402
from vfl_vs_mal import OUT as O2O_OUT  # noqa: E402
from vfl_vs_mal import epoch_curve, train_arm  # noqa: E402

NMS_IOU = 0.7
ARMS = {"topk": ["loss_class=mal", "assignment=topk", "assignment_k=4", f"nms_iou={NMS_IOU}"]}
OUT = Path(__file__).with_name("o2m_vs_o2o")
O2O_MODEL = O2O_OUT / "mal" / "seed0" / "model.pt"


def run_arm(arm: str, seed: int, out: Path, epochs: int | None, extra: list[str] = ()) -> dict:
    overrides = [*ARMS[arm], f"seed={seed}", *extra] + ([f"epochs={epochs}"] if epochs else [])
    stats, wall = train_arm(overrides, out / arm / f"seed{seed}", keep_model=seed == 0)
    keys = ("AP", "AP50", "AP_no_nms", "AP50_no_nms")
    return {"arm": arm, "seed": seed, **{k: stats[k] for k in keys}, "wall_s": wall}


@torch.no_grad()
def evaluate_saved(model_path: Path, nms_iou: float = NMS_IOU) -> dict[str, float]:
    """AP / AP50 of a saved model on its config's val set, from the same outputs without and with NMS."""
    model, cfg, _ = load_model(model_path)
    _, val_set = build_datasets(cfg, resolve_data(cfg))
    loader = build_dataloader(val_set, cfg.batch_size, False, 0, cfg.seed)
    posts = [PostProcess(cfg.model.sigmoid_head, cfg.num_top_queries, iou) for iou in (None, nms_iou)]
    evaluators = [CocoEvaluator(val_set.coco, val_set.label_to_category_id) for _ in posts]
    evaluate(model, posts, loader, evaluators, "cpu", progress=False)
    (plain, nms) = (ev.summarize() for ev in evaluators)
    return {"AP_no_nms": plain["AP"], "AP50_no_nms": plain["AP50"], "AP": nms["AP"], "AP50": nms["AP50"]}


def to_markdown(run: dict, saved: dict[str, dict], data: dict, out: Path, load_before: str, load_after: str) -> str:
    lines = [
        "## One-to-many (top-k) vs one-to-one assignment on the tiny RT-DETRv2",
        "",
        "Written by `nice python benchmarks/o2m_vs_o2o.py` (OMP_NUM_THREADS=2). The one-to-many arm is the MAL "
        "seed-0 run of `benchmarks/vfl_vs_mal.py` (`rtdetr_shapes`, `loss_class=mal`, 12 epochs) with only "
        f"`assignment=topk`, `assignment_k=4` and `nms_iou={NMS_IOU}` changed; the one-to-one reference is that "
        "committed run (`benchmarks/vfl_vs_mal/mal/seed0/`). Both saved fp16 EMA models are scored on the 200 val "
        "images from the same outputs without and with class-aware NMS (torchvision `batched_nms`, IoU "
        f"{NMS_IOU}). Logs, config and model: `benchmarks/o2m_vs_o2o/topk/seed0/`.",
        "",
        f"Machine: {_cpu_name()}, nproc {os.cpu_count()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; load average before / after {load_before} ; {load_after}. "
        f"Wall time of the top-k run: {run['wall_s']:.0f} s.",
        "",
        "| model (saved, fp16 EMA) | AP without NMS | AP with NMS | AP50 without NMS | AP50 with NMS |",
        "|---|---|---|---|---|",
    ]
    for name, s in saved.items():
        lines.append(f"| {name} | {s['AP_no_nms']:.3f} | {s['AP']:.3f} | {s['AP50_no_nms']:.3f} | {s['AP50']:.3f} |")
    lines += [
        "",
        f"In-run final evaluation of the top-k run (fp32 EMA): AP {run['AP']:.3f} with NMS, {run['AP_no_nms']:.3f} "
        f"without. Last epoch's matching statistics: {data['targets_per_image']:.2f} targets and "
        f"{data['positives_per_image']:.2f} positives per training image.",
        "",
        "AP after each epoch (top-k with NMS, top-k without NMS, one-to-one MAL without NMS):",
        "",
        "| epoch | top-k + NMS | top-k | one-to-one |",
        "|---|---|---|---|",
    ]
    topk = read_metrics(out / "topk" / "seed0", kind="eval")
    o2o = epoch_curve(O2O_OUT / "mal" / "seed0" / "metrics.jsonl")
    for r, (_, o2o_ap, _) in zip(topk, o2o, strict=False):
        lines.append(f"| {r['epoch'] + 1} | {r['AP']:.3f} | {r['AP_no_nms']:.3f} | {o2o_ap:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, help="shorter runs, for a smoke test (not written to RESULTS.md)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load_before = _load()
    start = time.perf_counter()
    run = run_arm("topk", 0, args.out, args.epochs)
    print(f"topk seed 0: AP {run['AP']:.3f} (no NMS {run['AP_no_nms']:.3f}) ({run['wall_s']:.0f} s)", flush=True)
    saved = {
        "top-k (k=4)": evaluate_saved(args.out / "topk" / "seed0" / "model.pt"),
        "one-to-one MAL": evaluate_saved(O2O_MODEL),
    }
    for name, s in saved.items():
        print(f"{name}: AP {s['AP_no_nms']:.3f} without NMS, {s['AP']:.3f} with NMS", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.epochs is None:
        data = read_metrics(args.out / "topk" / "seed0", kind="data")[-1]
        print(write_section("o2m_vs_o2o", to_markdown(run, saved, data, args.out, load_before, _load()), args.results))


if __name__ == "__main__":
    main()
