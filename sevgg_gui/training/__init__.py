"""Training, evaluation and their data: ``sevgg train`` / ``sevgg eval``.

Kept import-free (no torch here) so the CLI can build its parser from :mod:`.cli_args` instantly; the
modules themselves (``data``, ``models``, ``train``, ``evaluate``) import torch when used.
"""
