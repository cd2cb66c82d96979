"""The model card (``card.md``) rendered from ``card.json``."""

from __future__ import annotations

from typing import Any

__all__ = ["render_card"]

_METRIC = {"macro_recall": "macro-recall", "macro_f1": "macro-F1"}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def render_card(card: dict[str, Any]) -> str:
    heads: dict[str, dict[str, Any]] = card["heads"]
    encoder = card["encoder"]
    lines = [
        f"# Switchboard classification heads `{card['version']}`",
        "",
        f"Small heads over frozen **{encoder['model']}** sentence embeddings (encoder version "
        f"`{encoder['version']}`, {encoder['dim']}-d, L2-normalised, max {encoder['max_length']} tokens): one "
        "encoder pass per text feeds every head. Each head is a multinomial logistic regression followed by "
        "temperature scaling, so its outputs are calibrated probabilities; the default decision is the most "
        "probable label. Loaded by `classifiers.heads.Heads.load()`; it refuses embeddings of another encoder "
        "version.",
        "",
        f"- Built {card['date']} by `{card['command']}` in {card['training_seconds']:.0f} s "
        f"(seed {card['seed']}{', limit ' + str(card['limit']) if card['limit'] is not None else ''}).",
        f"- Artefact: `{card['artefact']['file']}`, {card['artefact']['bytes']:,} bytes (float32 weights).",
        "- Scores below are on each dataset's **val** split (for employee-pros-cons a seeded 10% of train), "
        "which took no part in fitting, choosing the weight decay or calibrating. They are not comparable "
        "one-to-one with the reference numbers of the data README, which are on the held-back test splits.",
        "",
        "## Heads",
        "",
        "| head | labels | train / calib. / val | metric | val score | val accuracy | decision "
        "| ECE val before -> after | T | val-optimal threshold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, head in heads.items():
        counts, calibration = head["counts"], head["calibration"]
        threshold = head.get("val_optimal_threshold")
        threshold_text = (
            f"{threshold['label']} >= {threshold['threshold']:.2f} ({_pct(threshold['val_score'])})"
            if threshold
            else "-"
        )
        shown = name if head.get("shipped", True) else f"{name} (not shipped)"
        lines.append(
            f"| {shown} | {', '.join(head['labels'])} | {counts['train_fit']:,} / {counts['calibration']:,} / "
            f"{counts['val']:,} | {_METRIC[head['metric']]} | **{_pct(head['val_score'])}** | "
            f"{_pct(head['val_accuracy'])} | {head['decision']['rule']} | {calibration['ece_val_before']:.3f} -> "
            f"{calibration['ece_val_after']:.3f} | {head['temperature']:.3f} | {threshold_text} |"
        )
    lines += [
        "",
        "ECE: top-label expected calibration error, 15 equal-width bins. T: the fitted temperature (logits / T). "
        "On the calibration split itself ECE goes "
        + "; ".join(
            f"{name} {h['calibration']['ece_calibration_split_before']:.3f} -> "
            f"{h['calibration']['ece_calibration_split_after']:.3f}"
            for name, h in heads.items()
        )
        + ". Mean probability on val vs. the label frequencies of val (calibration of the class shares): "
        + "; ".join(
            f"{name} "
            + ", ".join(
                f"{label} {h['calibration']['mean_probability_val'][label]:.3f}/"
                f"{h['calibration']['frequency_val'][label]:.3f}"
                for label in h["labels"]
            )
            for name, h in heads.items()
        )
        + ". Decision: `argmax` is the most probable label; `prior-corrected` (multi-class heads, where it "
        "scored better on held-out train) is the argmax of probability / training frequency of the label, "
        "which favours the macro metric while the probabilities themselves stay calibrated. The val-optimal "
        "thresholds of the binary heads are chosen on val itself (their scores are optimistic); they are "
        "reported as a guide for the threshold settings (default 0.5, the same decision as argmax).",
        "",
    ]
    comparisons: dict[str, Any] = card.get("comparisons", {})
    if comparisons:
        lines += ["## Comparisons", ""]
        rule = comparisons.get("needs_answer_question_mark_rule")
        if rule:
            lines.append(f"- 'Contains ?' rule on {rule['split']}: macro-F1 {_pct(rule['macro_f1'])}.")
        workplace = comparisons.get("workplace_via_sentiment_head")
        if workplace:
            lines.append(
                f"- The sentiment head on {workplace['split']} ({workplace['how']}): macro-F1 "
                f"{_pct(workplace['macro_f1'])}."
            )
        lines.append("")
    lines += ["## Training", ""]
    first_grid: dict[str, dict[str, float]] = next(iter(heads.values()))["selection"]["grid"]
    lines += [
        "Per head, from the task's train split: a stratified, seeded 10% calibration part is set aside; the L2 "
        "weight decay on the mean cross-entropy ("
        + ", ".join(next(iter(first_grid.values())))
        + ") and, for multi-class heads, the decision rule (argmax / prior-corrected) are chosen on held-out "
        "parts of the rest by the task's metric; the (unweighted) regression is refitted on the whole rest with "
        "full-batch L-BFGS (float64, warm-started along the weight-decay path from zero weights) and its "
        "temperature fitted on the calibration part by minimising the log loss.",
        "",
    ]
    for name, head in heads.items():
        data, selection = head["data"], head["selection"]
        lines += [f"### {name}", ""]
        for source in data["sources"]:
            lines.append(f"- Data: `{source['folder']}`: {source['origin']}. **Licence: {source['licence']}.**")
        lines.append(f"- Val: {data['val']}.")
        if data["train_cap"]:
            lines.append(f"- Train subsampled (seeded) to {data['train_cap']:,} rows to bound the embedding time.")
        lines.append(
            f"- Rows: train (fit) {head['counts']['train_fit_by_label']}, val {head['counts']['val_by_label']}."
        )
        chosen = selection["chosen"]
        lines.append(
            f"- Chosen by {selection['held_out']} ({_METRIC[head['metric']]}): "
            + "; ".join(
                f"{rule}: " + ", ".join(f"{wd}: {_pct(score)}" for wd, score in scores.items())
                for rule, scores in selection["grid"].items()
            )
            + f" -> **{chosen['decision']}, weight decay {chosen['weight_decay']:g}**."
        )
        calibration = head["calibration"]
        lines.append(
            f"- Val log loss {calibration['log_loss_val_before']:.4f} -> {calibration['log_loss_val_after']:.4f} "
            "with temperature scaling."
        )
        sample = head.get("fixed_sample")
        if sample:
            lines.append(
                f"- Reproduction check: {len(sample['rows'])} fixed rows of `{sample['file']}` score "
                f"{sample['score']:.6f} ({_METRIC[sample['metric']]}), mean log loss {sample['mean_log_loss']:.6f}."
            )
        lines.extend(f"- **Note:** {note}" for note in head["notes"])
        lines.append("")
    decisions: dict[str, str] = card.get("decisions", {})
    if decisions:
        lines += ["## Decisions", ""]
        lines.extend(f"- {text}" for text in decisions.values())
        lines.append("")
    lines += [
        "## Limitations",
        "",
        "- Trained on tweets (sentiment, offensive, hate, emotion), everyday dialogue (needs_answer) and employer "
        "reviews (workplace_sentiment), not on intranet comments: expect lower accuracy on workplace text, "
        "and check the thresholds on real comments before acting on them automatically.",
        "- TweetEval hate val differs in distribution from its test split (the README's reference 47.6 is on "
        "test); its val score overstates what to expect.",
        "- English only. The encoder is frozen; the heads are linear, so they inherit what the sentence "
        "embedding does not capture (sarcasm, negation scope, slurs spelled creatively).",
        "",
    ]
    return "\n".join(lines)
