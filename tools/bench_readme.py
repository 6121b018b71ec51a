#!/usr/bin/env python3
"""Regenerate README's "folded vs unfolded" table: `foldkit bench` on darknet53, yolov3-tiny, yolov3.

    python tools/bench_readme.py [--rounds 10] [--threads N] > table.md

Each network at its cfg's input size, batch 1, CPU provider, seeded random weights; prints the
machine line and one markdown table per network.
"""

from __future__ import annotations

import argparse

from foldkit.bench import BenchConfig, bn_nodes_ran, parse_variants, run_benchmark
from foldkit.bench.report import session_spread

NETWORKS = ("darknet53", "yolov3-tiny", "yolov3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    args = parser.parse_args()
    for network in args.networks.split(","):
        config = BenchConfig(model=network, variants=parse_variants("all"), batches=[1],
                             providers=["cpu"], threads=args.threads, rounds=args.rounds)
        result = run_benchmark(config)
        env = result.environment
        print(f"\n**{network}** ({env['cpu']}, {env['cores']} cores, onnxruntime {env['versions']['onnxruntime']}, "
              f"torch {env['versions']['torch']}, batch 1, threads {args.threads or 'default'}, "
              f"{args.rounds} interleaved rounds of latency and of session creation)\n")
        print("| variant | BN nodes run | session ms, median (min–max) | p50 ms | p90 ms | img/s "
              "| vs unfolded, ORT off | peak MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in result.rows:
            s = r.stats
            print(f"| {r.description} | {bn_nodes_ran(r)} | {session_spread(r)} | {s['p50_ms']:.1f} "
                  f"| {s['p90_ms']:.1f} | "
                  f"{s['images_per_s']:.1f} | {r.ratio:.2f}× | {r.peak_rss_mb:.0f} |")


if __name__ == "__main__":
    main()
