"""Seconds of the ESRGAN-family upscalers (nets/esrgan.py) on this machine, printed as JSON: RealESRGAN_x4plus's
architecture (RRDBNet, 64 features, 23 blocks; random weights — the cost does not depend on them) and the
compact SRVGGNetCompact (realesr-general-x4v3's: 64 features, 32 convs), one pass vs tiled (`--tile`,
overlap 1/8 of it), and the largest difference between the two outputs (the seam check on real sizes).

    .venv/bin/python bench/upscale.py [--size 96] [--tile 48] [--repeats 2] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from toonbooth.nets.esrgan import RRDBConfig, RRDBNet, SRVGGConfig, SRVGGNetCompact, tiled_forward


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--tile", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    nets = {"RRDBNet x4 (23 blocks)": RRDBNet(RRDBConfig()).eval(),
            "SRVGGNetCompact x4 (32 convs)": SRVGGNetCompact(SRVGGConfig()).eval()}  # fmt: skip
    x = torch.rand(1, 3, args.size, args.size)
    report: dict = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "input": f"{args.size}x{args.size}", "tile": args.tile, "results": {}}  # fmt: skip
    with torch.no_grad():
        for name, net in nets.items():
            one, full = timed(lambda net=net: net(x), args.repeats)
            tiled_s, tiled = timed(lambda net=net: tiled_forward(net, x, 4, args.tile, args.tile // 8), args.repeats)
            report["results"][name] = {"one_pass_s": round(one, 3), "tiled_s": round(tiled_s, 3),
                                       "max_abs_diff": round((full - tiled).abs().max().item(), 5),
                                       "mean_abs_diff": round((full - tiled).abs().mean().item(), 6)}  # fmt: skip
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
