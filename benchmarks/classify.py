"""Classification speed: the full pipeline (every head, language, PII, topics) against the bare encoder.

    .venv/bin/python -m benchmarks.classify [--texts 512] [--repeats 3] [--single 100] \
        [--backends torch onnx onnx-int8] [--threads N]

Prints comments/s for batches and p50/p99 latency for one comment, each variant measured in the same run on
the same texts, and the process's peak memory. With the committed LoRA adapter loaded, a row shows the encoder
pass the pipeline runs (the plain embedding for topics and the adapted one for the heads, sharing the lower
layers). Tweet-length texts, for which the speed targets are stated.

Every variant is measured with each encoder backend (``--backends``, default all of them), round-robin over the
backends (run after run, single text after single text) so that a load change on the shared machine hits them
alike; the ``x torch`` columns are the ratios to the torch row of the same variant (comments/s medians; p50:
torch's p50 over this one's).
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

from classifiers.encoder import BACKENDS, Encoder
from classifiers.pipeline import Pipeline
from classifiers.topics import TopicModel, TopicSpec
from service.classification.loader import build_pipeline
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
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the cores)")
    args = parser.parse_args()

    import onnxruntime
    import torch

    texts = comments(args.texts)
    taxonomy = [TopicSpec(s, None, tuple(f"Question about the {s} {i}" for i in range(8))) for s in SUBJECTS]
    rows: dict[str, list[tuple[str, Callable[[Sequence[str]], object]]]] = {}
    versions: list[str] = []
    for backend in args.backends:
        started = time.perf_counter()
        encoder = Encoder(backend=backend, threads=args.threads)
        pipeline = build_pipeline(Settings(), encoder)
        topics = TopicModel.fit(taxonomy, encoder.encode)
        pipeline.analyse(texts[:64])  # warm up (and build the language detector)
        loaded = time.perf_counter() - started
        versions.append(f"{backend}: {pipeline.model_version} (load + warm-up {loaded:.1f} s)")

        def full(batch: Sequence[str], pipeline: Pipeline = pipeline, topics: TopicModel = topics) -> object:
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
        for name, fn in variants:
            rows.setdefault(name, []).append((backend, fn))
    print(f"Switchboard classification benchmark; {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__} "
          f"({args.threads or 'default'} threads), Python {platform.python_version()}")  # fmt: skip
    print("\n".join(versions))
    print(f"{len(texts)} texts, batches of {encoder.batch_size}, {args.repeats} runs; single: {args.single} texts\n")
    header = (f"{'variant':<36} {'backend':<10} {'comments/s best':>15} {'median':>8} {'x torch':>7} "
              f"{'single p50 ms':>13} {'p99 ms':>7} {'x torch':>7}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, measured in rows.items():
        # Round-robin over the backends, run after run and text after text, so that a load change on the shared
        # machine hits every backend of the variant alike.
        rates: dict[str, list[float]] = {backend: [] for backend, _ in measured}
        samples: dict[str, list[float]] = {backend: [] for backend, _ in measured}
        for _ in range(args.repeats):
            for backend, fn in measured:
                fn(texts[:32])  # the previous backend's threads may still hold the cores: start warm
                rates[backend].append(rate(fn, texts, 1)[0])
        for text in texts[: args.single]:
            for backend, fn in measured:
                samples[backend].append(latency(fn, [text])[0])
        reference: tuple[float, float] | None = None
        for backend, _ in measured:
            best, median = max(rates[backend]), statistics.median(rates[backend])
            p50, p99 = (float(q) for q in np.percentile(samples[backend], [50, 99]))
            if backend == "torch":
                reference = (median, p50)
            ratios = (f"{median / reference[0]:>7.2f}", f"{reference[1] / p50:>7.2f}") if reference else ("", "")
            print(f"{name:<36} {backend:<10} {best:>15.1f} {median:>8.1f} {ratios[0]:>7} "
                  f"{p50:>13.1f} {p99:>7.1f} {ratios[1]:>7}", flush=True)  # fmt: skip
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of this process (every backend loaded): {peak_mib:.0f} MiB")
    print(f"load average after the runs: {os.getloadavg()}")


if __name__ == "__main__":
    main()
