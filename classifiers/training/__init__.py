"""Training and evaluation of the classification heads (see :mod:`classifiers.heads`).

``python -m classifiers.training.train`` rebuilds the committed artefacts in ``classifiers/artefacts/heads``;
``python -m classifiers.training.evaluate`` prints the evaluation table of the committed artefacts.
Both read the labelled data from the folder they are given (``--data-dir``; under ``switchboard train`` /
``evaluate`` the ``data_dir`` setting, see :mod:`classifiers.training.data`) and need ``torch``.
"""

from __future__ import annotations

from classifiers.training.data import default_data_dir

__all__ = ["default_data_dir"]
