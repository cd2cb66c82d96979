"""Encoder speed and agreement: ``Encoder.encode_both`` on the torch backend against ``onnx`` and ``onnx-int8``.

    .venv/bin/python -m benchmarks.onnx_speed [--texts 256] [--repeats 5] [--single 100] [--threads 2] \
        [--blocked] [--pipeline]
    .venv/bin/python -m benchmarks.onnx_speed --accuracy [--limit N]   # adds the heads' val scores

The ONNX graphs come from the encoder's cache (``var/onnx``; exported on first use, or ahead of time with
``python -m classifiers.onnx_export``). For the speed of the whole pipeline with every backend, see
``benchmarks/classify.py``.

Same comment-like texts as ``benchmarks/classify.py`` (its ``comments()``), batches of 32 sorted by length as the
Encoder does, every variant in the same run with the same thread count (torch.set_num_threads and the ORT
intra-op threads). Max abs difference: of the plain and the adapted embeddings against torch, over all texts.

``--accuracy``: the val score of every head (as ``classifiers.training.evaluate`` computes it: the committed heads
on the adapted embeddings, ``Heads.probabilities`` + ``decide``; and the pipeline's way, with ``texts=`` so that
heads with a lexical variant use it) with the torch embeddings and with the int8 ones (``--accuracy-all``: with the
fp32 ONNX ones too).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from benchmarks.classify import comments, rate
from classifiers.encoder import Encoder
from service.settings import Settings


def _cached_torch(encoder: Encoder) -> Callable[[Sequence[str]], np.ndarray]:
    """encode_heads, cached under var/cache/embeddings/onnx-bench by the hash of the texts."""
    import hashlib

    from classifiers.training.embeddings import default_cache_dir

    folder = default_cache_dir() / "onnx-bench" / encoder.model_version.replace("/", "_")

    def encode(texts: Sequence[str]) -> np.ndarray:
        key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        path = folder / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        x = encoder.encode_heads(texts)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
        return x

    return encode


def accuracy(encoders: dict[str, Callable[[Sequence[str]], np.ndarray]], limit: int | None) -> list[tuple]:
    """Rows (task, metric, n, {variant: (score, score with texts)})."""
    import json

    from classifiers.heads import Heads, default_heads_dir
    from classifiers.training import metrics
    from classifiers.training.data import TASKS, load_task

    heads = Heads.load()
    card = json.loads((default_heads_dir() / "card.json").read_text(encoding="utf-8"))
    seed = int(card.get("seed", 0))
    rows = []
    for task in TASKS:
        if task.name not in heads.names:
            continue
        val = load_task(task, Settings().data_dir, seed=seed, limit=limit, extra=False).val
        scores: dict[str, tuple[float, float, float, float]] = {}
        reference = np.zeros(0, dtype=np.int64)
        for name, encode in encoders.items():
            started = time.perf_counter()
            x = encode(val.texts)
            head = heads[task.name]
            p = heads.probabilities(x)[task.name]
            plain_score = metrics.score(task.metric, val.labels, head.decide(p), len(task.labels))
            p_lex = heads.probabilities(x, texts=val.texts)[task.name]
            lex_score = metrics.score(task.metric, val.labels, head.decide(p_lex, lexical=True), len(task.labels))
            decided = head.decide(p_lex, lexical=True)
            reference = decided if not scores else reference
            agree = float((decided == reference).mean())
            scores[name] = (plain_score, lex_score, time.perf_counter() - started, agree)
        rows.append((task.name, task.metric, len(val), scores))
        print(f"  {task.name}: n={len(val)} "
              + "  ".join(f"{k}={100 * v[0]:.2f}/{100 * v[1]:.2f} ({v[2]:.0f}s)" for k, v in scores.items()),
              flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accuracy", action="store_true", help="also score the heads on val with each variant")
    parser.add_argument("--limit", type=int, default=None, help="seeded subsample of at most N val rows per task")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--blocked", action="store_true", help="time each variant in one block, not interleaved")
    parser.add_argument("--pipeline", action="store_true", help="also time the pipeline with torch and with ORT int8")
    parser.add_argument("--accuracy-all", action="store_true", help="score the fp32 ONNX backend too, not only int8")
    args = parser.parse_args()

    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    encoder = Encoder(backend="torch")
    ort = {name: Encoder(backend=name, threads=args.threads) for name in ("onnx", "onnx-int8")}
    variants: list[tuple[str, Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]]] = [
        ("torch fp32 encode_both", encoder.encode_both),
        *((f"ORT {name}", e.encode_both) for name, e in ort.items()),
    ]
    if args.pipeline:
        # The pipeline of benchmarks/classify.py ("heads + language + PII") over the torch and the int8 Encoder.
        from classifiers.heads import Heads
        from classifiers.language import LanguageDetector
        from classifiers.pipeline import Pipeline

        heads = Heads.load()
        language = LanguageDetector()
        variants += [
            ("pipeline, torch", Pipeline(encoder, heads=heads, language=language).analyse),
            ("pipeline, ORT onnx-int8", Pipeline(ort["onnx-int8"], heads=heads, language=language).analyse),
        ]
    texts = comments(args.texts)
    for _, fn in variants:
        fn(texts[:64])  # warm up

    print(f"ONNX encoder benchmark; {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}")  # fmt: skip
    print(f"encoder {encoder.model_version}; {len(texts)} texts, batches of {encoder.batch_size}, "
          f"{args.repeats} runs; single: {args.single} texts\n")  # fmt: skip
    if not args.no_speed:
        reference = encoder.encode_both(texts)
        header = (f"{'variant':<38} {'comments/s best':>15} {'median':>8} {'p50 ms':>7} {'p99 ms':>7} "
                  f"{'max|d| plain':>12} {'max|d| adapted':>14} {'min cos adapted':>15}")  # fmt: skip
        print(header)
        print("-" * len(header))
        # Interleaved (round-robin over the variants, repeat after repeat and text after text) so that a load
        # change on the shared machine hits every variant alike.
        rates: dict[str, list[float]] = {name: [] for name, _ in variants}
        samples: dict[str, list[float]] = {name: [] for name, _ in variants}

        # --blocked: one variant after the other instead (as benchmarks/classify.py): interleaving puts each
        # variant right after another runtime's worker threads, which keep spinning for a while after a call.
        def one_rate(name: str, fn: Callable[[Sequence[str]], object]) -> None:
            rates[name].append(rate(fn, texts, 1)[0])

        def one_latency(name: str, fn: Callable[[Sequence[str]], object], text: str) -> None:
            started = time.perf_counter()
            fn([text])
            samples[name].append((time.perf_counter() - started) * 1000)

        if args.blocked:
            for name, fn in variants:
                fn(texts[:32])
                for _ in range(args.repeats):
                    one_rate(name, fn)
                for text in texts[: args.single]:
                    one_latency(name, fn, text)
        else:
            for _ in range(args.repeats):
                for name, fn in variants:
                    one_rate(name, fn)
            for text in texts[: args.single]:
                for name, fn in variants:
                    one_latency(name, fn, text)
        for name, fn in variants:
            best, median = max(rates[name]), statistics.median(rates[name])
            p50, p99 = (float(q) for q in np.percentile(samples[name], [50, 99]))
            if name.startswith("pipeline"):
                print(f"{name:<38} {best:>15.1f} {median:>8.1f} {p50:>7.2f} {p99:>7.2f}", flush=True)
                continue
            plain, adapted = fn(texts)
            d_plain = float(np.abs(plain - reference[0]).max())
            d_adapted = float(np.abs(adapted - reference[1]).max())
            cos = float((adapted * reference[1]).sum(axis=1).min())
            print(f"{name:<38} {best:>15.1f} {median:>8.1f} {p50:>7.2f} {p99:>7.2f} "
                  f"{d_plain:>12.2e} {d_adapted:>14.2e} {cos:>15.6f}", flush=True)  # fmt: skip
        print(f"\nload average after the speed runs: {os.getloadavg()}")

    if args.accuracy:
        print(
            f"\nheads on val{'' if args.limit is None else f' (at most {args.limit} rows per task)'}: "
            "score without texts / with texts (lexical variants), in percent"
        )
        # torch: Encoder.encode_heads, cached in var/cache/embeddings/onnx-bench (gitignored) by the texts' hash.
        encoders: dict[str, Callable[[Sequence[str]], np.ndarray]] = {"torch": _cached_torch(encoder)}
        encoders.update({f"ORT {n}": e.encode_heads for n, e in ort.items() if args.accuracy_all or "int8" in n})
        rows = accuracy(encoders, args.limit)
        names = list(encoders)
        header = f"{'head':<14} {'metric':<13} {'n':>6} " + " ".join(f"{n:>24}" for n in names)
        print("\n" + header)
        print("-" * len(header))
        for task, metric, n, scores in rows:
            cells = []
            for name in names:
                s, lex, _, agree = scores[name]
                if name == "torch":
                    cells.append(f"{100 * s:>11.2f} /{100 * lex:>10.2f}")
                else:
                    ds, dl = 100 * (s - scores["torch"][0]), 100 * (lex - scores["torch"][1])
                    cells.append(f"{ds:>+7.2f} /{dl:>+6.2f} /{100 * agree:>6.2f}%")
            print(f"{task:<14} {metric:<13} {n:>6} " + " ".join(f"{c:>24}" for c in cells))
        print(
            "(torch column: score without texts / with texts; ORT columns: the same as differences to torch in "
            "points, then the share of val rows whose label (with texts, as the pipeline) is the same as torch's)"
        )


if __name__ == "__main__":
    main()
