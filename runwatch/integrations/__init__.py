"""One-line hook-ups of runwatch to training frameworks.

Each framework has its own module, imported by name; nothing here imports a
framework, so ``import runwatch`` and ``import runwatch.integrations`` stay
cheap:

- :mod:`runwatch.integrations.lightning`: ``RunwatchLogger``, a PyTorch Lightning ``Logger``.
- :mod:`runwatch.integrations.transformers`: ``RunwatchCallback``, a Hugging Face ``TrainerCallback``.
- :mod:`runwatch.integrations.stable_baselines3`: ``RunwatchCallback`` and ``RunwatchOutputFormat``.
- :mod:`runwatch.integrations.gymnasium`: ``RunwatchEpisodeStatistics``, an environment wrapper.
- :mod:`runwatch.integrations.keras`: ``RunwatchCallback``, a Keras 3 ``Callback``.

All of them share :class:`runwatch.integrations.RunRecorder`'s rules: which
run they record into, how the framework's outcome becomes the run's status,
and that runwatch's own trouble never raises into the training loop. See
docs/integrations.md.
"""

from __future__ import annotations

from ._recorder import Outcome as Outcome
from ._recorder import RunRecorder as RunRecorder
from ._recorder import outcome_of as outcome_of

__all__ = ["Outcome", "RunRecorder", "outcome_of"]
