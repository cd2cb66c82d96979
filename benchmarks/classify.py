"""Classification speed: the full pipeline (every head, language, PII, topics) against the bare encoder.

    .venv/bin/python -m benchmarks.classify [--texts 512] [--repeats 3] [--single 100]

Prints comments/s for batches and p50/p99 latency for one comment, each variant measured in the same run on
the same texts, and the process's peak memory. With the committed LoRA adapter loaded, a row shows the encoder
pass the pipeline runs (the plain embedding for topics and the adapted one for the heads, sharing the lower
layers). Tweet-length texts, as the issue's targets are stated for them.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from classifiers.encoder import Encoder
from classifiers.topics import TopicModel, TopicSpec
from service.app import build_pipeline
from service.settings import Settings

SUBJECTS = ["canteen", "VPN", "payslip", "car park", "reorganisation", "pension", "printer", "night shift"]
OPENERS = ["Why is the", "Thanks for sorting the", "Nobody told us about the", "Can someone explain the",
           "Really pleased with the", "Still waiting on the"]  # fmt: skip
ENDINGS = ["?", " again.", " - great work!", " this week?", ", it is a joke.", " for the third time."]


def comments(n: int, seed: int = 0) -> list[str]:
    """Tweet-length, comment-like texts."""
    rng = np.random.default_rng(seed)
    return [
        f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)}{rng.choice(ENDINGS)} #{i}"
        for i in range(n)
    ]  # fmt: skip


def rate(fn: Callable[[Sequence[str]], object], texts: list[str], repeats: int) -> tuple[float, float]:
    """Best and median comments/s over `repeats` runs of fn(texts)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    return max(rates), statistics.median(rates)


def latency(fn: Callable[[Sequence[str]], object], texts: list[str]) -> tuple[float, float]:
    """p50 and p99 milliseconds of fn([one text])."""
    samples = []
    for text in texts:
        start = time.perf_counter()
        fn([text])
        samples.append((time.perf_counter() - start) * 1000)
    q = np.percentile(samples, [50, 99])
    return float(q[0]), float(q[1])


def main() -> None:
    """Run and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=100)
    args = parser.parse_args()

    import torch

    texts = comments(args.texts)
    started = time.perf_counter()
    encoder = Encoder()
    pipeline = build_pipeline(Settings(), encoder)
    taxonomy = [TopicSpec(s, None, tuple(f"Question about the {s} {i}" for i in range(8))) for s in SUBJECTS]
    topics = TopicModel.fit(taxonomy, encoder.encode)
    pipeline.analyse(texts[:64])  # warm up (and build the language detector)
    loaded = time.perf_counter() - started

    def full(batch: Sequence[str]) -> object:
        analyses = pipeline.analyse(batch)
        return topics.classify(np.stack([a.embedding for a in analyses]))

    variants: list[tuple[str, Callable[[Sequence[str]], object]]] = [
        ("bare encoder", encoder.encode),
        *(
            [("encoder, plain + adapted top layers", encoder.encode_both)]  # what the pipeline runs with heads
            if encoder.adapter is not None
            else []
        ),
        ("pipeline: heads + language + PII", pipeline.analyse),
        ("pipeline + topics (8 topics x 8)", full),
    ]
    print(f"Switchboard classification benchmark; {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}")  # fmt: skip
    print(
        f"heads: {pipeline.heads.version if pipeline.heads else 'none loaded'}; model version {pipeline.model_version}"
    )
    print(f"load + warm-up {loaded:.1f} s; {len(texts)} texts, batches of {encoder.batch_size}, {args.repeats} runs\n")
    header = f"{'variant':<36} {'comments/s best':>15} {'median':>8} {'single p50 ms':>14} {'single p99 ms':>14}"
    print(header)
    print("-" * len(header))
    for name, fn in variants:
        best, median = rate(fn, texts, args.repeats)
        p50, p99 = latency(fn, texts[: args.single])
        print(f"{name:<36} {best:>15.1f} {median:>8.1f} {p50:>14.1f} {p99:>14.1f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
