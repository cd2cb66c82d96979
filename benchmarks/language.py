"""How often the language check refuses English: the heads withheld because another language was detected.

    .venv/bin/python -m benchmarks.language [--data-dir DIR]

Reads the validation split (``val.jsonl``) of every task in the shared data (all English; the folder is
``$SWITCHBOARD_DATA_DIR`` or ``../shared/data``, as for training) and prints, per split, the share of texts whose
heads would be withheld: under the earlier rule (lingua's best guess is another language with confidence at least
0.25) and under the current one (:class:`classifiers.language.LanguageDetector`: another language only when every
supported language is all but ruled out). The last rows run both rules over a few hand-written non-English
comments, to show what the current rule still withholds: a small set, written for this benchmark, not a
measurement of detection accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from classifiers.language import LanguageDetector
from classifiers.training.data import read_jsonl
from service.settings import Settings

NON_ENGLISH = [
    "Wann öffnet die Kantine morgens für die Nachtschicht?",
    "Danke für die schnelle Hilfe!",
    "Mein Laptop ist schon wieder kaputt.",
    "Warum wurde das Gehalt noch nicht überwiesen?",
    "Das neue Büro ist viel zu laut.",
    "Die neue Regelung für das Homeoffice ist völlig unklar, wer kann das erklären?",
    "Ich finde die Entscheidung der Geschäftsführung enttäuschend.",
    "Super Artikel, vielen Dank an das Team!",
    "Kann mir jemand sagen, wo ich den Antrag für Elternzeit finde?",
    "La cantine ouvrira-t-elle plus tôt pour l'équipe de nuit ?",
    "Merci pour l'info !",
    "Mon mot de passe ne marche plus.",
    "Pourquoi le parking est-il réservé aux cadres ?",
    "Bravo à toute l'équipe !",
    "Je ne comprends pas pourquoi les horaires ont changé sans prévenir.",
    "Qui dois-je contacter pour un problème de badge ?",
    "C'est inadmissible, on attend depuis trois semaines.",
    "¿Abrirá la cafetería más temprano para el turno de noche?",
    "¡Gracias por todo!",
    "No puedo acceder a la VPN desde casa.",
    "¿Cuándo pagan las horas extra?",
    "Excelente noticia, enhorabuena a todos.",
    "Nadie nos ha explicado el nuevo sistema de turnos.",
    "El aparcamiento está lleno otra vez.",
    "Gaat de kantine eerder open voor de nachtploeg?",
    "Bedankt voor de uitleg.",
    "Mijn wachtwoord werkt niet meer.",
    "Waarom is de vergadering verplaatst naar vrijdag?",
    "Ik heb nog steeds geen antwoord gekregen van HR.",
    "Quando apre la mensa per il turno di notte?",
    "Grazie mille a tutti!",
    "Il mio computer non si accende.",
    "Non è giusto che i turni vengano cambiati all'ultimo momento.",
    "Qualcuno sa quando arriva la tredicesima?",
    "Kiedy stołówka będzie otwarta dla nocnej zmiany?",
    "Dziękuję za pomoc!",
    "Nie rozumiem nowych zasad dotyczących pracy zdalnej.",
    "Quando é que a cantina abre para o turno da noite?",
    "Obrigado pela ajuda!",
    "Não recebi o meu recibo de vencimento este mês.",
    "När öppnar matsalen för nattskiftet?",
    "Tack för hjälpen!",
    "Varför har ingen svarat på mitt mejl om semestern?",
    "Hvornår åbner kantinen igen efter ferien?",
    "Milloin ruokala aukeaa yövuorolle?",
    "Kiitos avusta!",
    "Miksi palkka on myöhässä tässä kuussa?",
    "Proč nám nikdo neřekl o změně směn?",
    "Kdy bude opravena tiskárna ve druhém patře?",
    "Miért nem kaptunk tájékoztatást a változásokról?",
    "Когда откроется столовая для ночной смены?",
    "Спасибо за помощь!",
    "Почему зарплату задерживают уже вторую неделю?",
    "Gece vardiyası için yemekhane ne zaman açılıyor?",  # noqa: RUF001  (Turkish: the dotless i is meant)
    "Yardımınız için teşekkürler!",  # noqa: RUF001  (Turkish: the dotless i is meant)
    "Bu karar hakkında neden bizimle konuşulmadı?",  # noqa: RUF001  (Turkish: the dotless i is meant)
]
EARLIER_MIN_CONFIDENCE = 0.25


def withheld_before(detector: Any, text: str, supported: frozenset[str]) -> bool:
    """The earlier rule: withheld whenever lingua's best guess (at 0.25 or more) is not a supported language."""
    confidences = detector.compute_language_confidence_values(text) if text.strip() else []
    if not confidences or confidences[0].value < EARLIER_MIN_CONFIDENCE:
        return False
    return confidences[0].language.iso_code_639_1.name.lower() not in supported


def count(texts: list[str], language: LanguageDetector) -> tuple[int, int, int, int]:
    """Texts, withheld under the earlier rule, withheld now, undetermined now."""
    lingua = language._get()  # the detector's own lingua models, for the earlier rule
    before = sum(withheld_before(lingua, t, language.supported) for t in texts)
    results = language.detect(texts)
    return len(texts), before, sum(not r.supported for r in results), sum(r.code == "und" for r in results)


def row(name: str, n: int, before: int, after: int, undetermined: int) -> str:
    """One table row: shares (and counts)."""
    return (
        f"| {name} | {n:,} | {100 * before / n:.2f} % ({before}) | {100 * after / n:.2f} % ({after}) "
        f"| {100 * undetermined / n:.1f} % |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: the data_dir setting (SWITCHBOARD_DATA_DIR)"
    )
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir or Settings().data_dir
    language = LanguageDetector()
    language.load()
    print(f"English validation splits in {data_dir}: heads withheld (supported: false) under each rule\n")
    print("| split | texts | withheld, earlier rule | withheld, now | und now |")
    print("|---|---:|---:|---:|---:|")
    total = [0, 0, 0, 0]
    for path in sorted(data_dir.glob("*/val.jsonl")):
        counts = count([text for text, _ in read_jsonl(path)[1]], language)
        total = [a + b for a, b in zip(total, counts, strict=True)]
        print(row(path.parent.name, *counts), flush=True)
    print(row("**all English val**", *total))
    print(row("hand-written non-English (not English!)", *count(NON_ENGLISH, language)))


if __name__ == "__main__":
    main()
