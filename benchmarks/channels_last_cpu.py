"""Why ``channels_last`` keeps some layers NCHW on a CPU: BatchNorm's backward by layout, on ``deim_shapes``' sizes.

Two measurements, each a median over ``--repeats`` timings of BatchNorm2d forward + backward (training mode, batch
16), the arms alternating in one process:

- by channel count: the input NCHW with an NCHW gradient, against the input channels_last with a channels_last
  gradient, at the sizes of ``deim_shapes``' backbone (ResNet18-vd at width 16, 128 px images). Where NHWC is slower,
  ``builders.build_train_model`` keeps the convolution NCHW (fewer than 16 output channels);
- the gradient's layout: a channels_last map flattened into tokens and concatenated with the other levels, as the
  encoder and decoder input projections' maps are, gets back a slice of the tokens' gradient (strided like neither
  layout). Arms: that slice as it comes, and made contiguous channels_last first (``models.layers.grad_in_layout``,
  the copy's time included).

    python benchmarks/channels_last_cpu.py            # writes the RESULTS.md section
    python benchmarks/channels_last_cpu.py --no-write --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name  # noqa: E402
from results import write_section  # noqa: E402

CL = torch.channels_last
SIZES = [(8, 64), (16, 64), (16, 32), (32, 16), (64, 8), (128, 4)]  # (channels, side): deim_shapes' backbone maps
LEVELS = [(16, 16), (8, 8), (4, 4)]  # the input projections' maps at 128 px: strides 8, 16, 32, D = 64


def step(bn: torch.nn.BatchNorm2d, x: torch.Tensor, grad_fn):
    """One ``bn(x)`` forward and the backward of the gradient ``grad_fn()`` returns (its making included)."""
    return lambda: torch.autograd.grad(bn(x), x, grad_fn())


def pair_ms(a, b, repeats: int) -> tuple[float, float]:
    """Median ms of ``a()`` and of ``b()``, timed in turns (3 untimed turns first)."""
    times: tuple[list, list] = ([], [])
    for i in range(repeats + 3):
        for arm, fn in enumerate((a, b)):
            start = time.perf_counter()
            fn()
            if i >= 3:
                times[arm].append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def by_channels(repeats: int) -> list[tuple]:
    rows = []
    for c, side in SIZES:
        bn = torch.nn.BatchNorm2d(c)
        x = torch.randn(16, c, side, side, requires_grad=True)
        x_cl = x.detach().contiguous(memory_format=CL).requires_grad_()
        g = torch.randn(16, c, side, side)
        g_cl = g.contiguous(memory_format=CL)
        nchw, nhwc = pair_ms(step(bn, x, lambda g=g: g), step(bn, x_cl, lambda g=g_cl: g), repeats)
        rows.append((c, side, nchw, nhwc))
    return rows


def by_gradient_layout(repeats: int, dim: int = 64) -> list[tuple]:
    n = sum(h * w for h, w in LEVELS)
    tokens_grad = torch.randn(16, n, dim)
    rows, start = [], 0
    for h, w in LEVELS:
        bn = torch.nn.BatchNorm2d(dim)
        x = torch.randn(16, dim, h, w).contiguous(memory_format=CL).requires_grad_()
        piece = tokens_grad[:, start : start + h * w]  # what cat's backward hands each level
        start += h * w
        sliced = piece.transpose(1, 2).unflatten(2, (h, w))  # and flatten/transpose's backward turns it into
        assert not sliced.is_contiguous() and not sliced.is_contiguous(memory_format=CL)
        fixed = lambda s=sliced: s.contiguous(memory_format=CL)  # noqa: E731
        as_is, made = pair_ms(step(bn, x, lambda s=sliced: s), step(bn, x, fixed), repeats)
        rows.append((h, w, as_is, made))
    return rows


def to_markdown(channels: list[tuple], layouts: list[tuple], repeats: int) -> str:
    lines = [
        "## channels_last on a CPU: BatchNorm's backward by channel count and by the gradient's layout",
        "",
        f"Written by `python benchmarks/channels_last_cpu.py` (see its docstring): BatchNorm2d forward + backward, "
        f"training mode, batch 16, medians of {repeats} timings, the arms alternating. Machine: {_cpu_name()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}.",
        "",
        "| channels | map | NCHW ms | NHWC ms | NHWC / NCHW |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c} | {s}x{s} | {a:.3f} | {b:.3f} | {b / a:.2f}x |" for c, s, a, b in channels]
    lines += [
        "",
        "The input projections' maps (64 channels, channels_last), their gradient as a slice of the tokens' one "
        "(as it comes from the concatenation), against that slice made contiguous channels_last first (the copy "
        "included):",
        "",
        "| map | gradient as it comes ms | made channels_last ms | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {h}x{w} | {a:.3f} | {b:.3f} | {a / b:.2f}x |" for h, w, a, b in layouts]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    text = to_markdown(by_channels(args.repeats), by_gradient_layout(args.repeats), args.repeats)
    print(text)
    if not args.no_write:
        write_section("channels_last_cpu", text)


if __name__ == "__main__":
    main()
