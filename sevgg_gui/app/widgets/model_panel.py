"""The model panel: architecture, provenance, every attention block (kind, channels, found by),
the article's SE parameter table, device."""

from __future__ import annotations

import html

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QTextBrowser

from ..worker import ModelInfo


def gates_verdict(info: ModelInfo, judged: tuple[bool, float] | None) -> str:
    """What the SE-gates row says: from the weights when they are exactly neutral, else from the
    worker's look at the first frame (flat gates say little, whatever the weights claim)."""
    if info.untrained_gates:
        return "untrained (all exactly 0.5)"
    if judged is None:
        return "input-dependent"
    flat, spread = judged
    if flat:
        return f"flat on the first frame (std {spread:.3f} across channels): untrained or uninformative"
    return f"input-dependent (std {spread:.3f} across channels on the first frame)"


def model_html(info: ModelInfo, judged: tuple[bool, float] | None = None) -> str:
    if info.attention:
        rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(str(b['name']))}</td><td>{html.escape(str(b['kind']))}</td>"
            f"<td align=right>{b['channels'] or ''}</td><td>{html.escape(str(b['found_by']))}</td>"
            f"<td>{'' if b['recorded'] else 'not recorded'}</td></tr>"
            for i, b in enumerate(info.attention, 1)
        )
        head = "<tr><th>#</th><th>module</th><th>kind</th><th>channels</th><th>found by</th><th></th></tr>"
        kinds = {str(b["kind"]): str(b["note"]) for b in info.attention if b["note"]}
        explained = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(n)}</li>" for k, n in kinds.items())
    else:  # a ModelInfo built by hand (tests): the channel-gated blocks only
        rows = "".join(
            f"<tr><td>SE{i}</td><td>{html.escape(n)}</td><td align=right>{c}</td></tr>"
            for i, (n, c) in enumerate(info.blocks, 1)
        )
        head = "<tr><th>#</th><th>module</th><th>channels</th></tr>"
        explained = ""
    probe = f"<p><i>{html.escape(info.probe)}</i></p>" if info.probe else ""
    warn = f"<p style='color:#ffb454'><b>{html.escape(info.warning)}</b></p>" if info.warning else ""
    ckpt = (
        f"<tr><td>checkpoint</td><td>{html.escape(info.checkpoint)}</td></tr>"
        f"<tr><td>sha256</td><td><code>{info.sha256}</code></td></tr>"
        if info.checkpoint
        else ""
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in info.notes)
    return (
        f"<h3>{html.escape(info.name)}</h3>{warn}"
        "<table cellspacing=2>"
        f"<tr><td>weights</td><td>{html.escape(info.provenance)}</td></tr>{ckpt}"
        f"<tr><td>classes</td><td>{info.num_classes}</td></tr>"
        f"<tr><td>device</td><td>{html.escape(info.device)}{' (half precision)' if info.half else ''}</td></tr>"
        f"<tr><td>backend</td><td>{html.escape(info.backend)}"
        f"{' — ' + html.escape(info.backend_note) if info.backend_note else ''}</td></tr>"
        f"<tr><td>SE gates</td><td>{html.escape(gates_verdict(info, judged))}</td></tr>"
        "</table>"
        f"<h4>Attention blocks</h4><table cellspacing=2>{head}{rows}</table>"
        + (f"<ul>{explained}</ul>" if explained else "")
        + probe
        + (
            f"<h4>SE cost (params = 2·C²/r)</h4><pre>{html.escape(info.cost_table)}</pre>"
            if info.cost_table
            else ""
        )
        + (f"<ul>{notes}</ul>" if notes else "")
    )


class ModelPanel(QTextBrowser):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setHtml("<i>Loading model…</i>")

        self.info: ModelInfo | None = None
        self.judged: tuple[bool, float] | None = None

    def set_info(self, info: ModelInfo) -> None:
        if self.info is None or info.provenance != self.info.provenance:
            self.judged = None  # another model: its gates are judged on its first frame
        # (the same model described again, with its cost table after the first frame, keeps the verdict)
        self.info = info
        self.setHtml(model_html(info, self.judged))

    @Slot(bool, float)
    def on_gates_judged(self, flat: bool, spread: float) -> None:
        """The worker's verdict on the current model's first frame (after its set_info)."""
        self.judged = (flat, spread)
        if self.info is not None:
            self.setHtml(model_html(self.info, self.judged))
