"""The Jupyter control panel, in parts with one job each.

=============  =================================================================================
module         job
=============  =================================================================================
``settings``   the form rules: `PanelSettings` (pure) and `make_transcriber` (no widgets)
``render``     pure renderers: a session or stats to the HTML and text the widgets show
``loop``       the session thread: starts the recorder, refreshes the view at most `update_hz`
``saving``     what Save writes, through the one save path (`nbscribe.export.save`)
``layout``     the widgets only: building, arranging, showing, reading the form
``control``    the `Panel`: wires the parts together and is the public face
=============  =================================================================================

Only ``layout`` and ``control`` import ipywidgets; `Panel` is loaded on first use, so the pure
parts can be imported (and tested) without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .control import Panel

__all__ = ["Panel"]


def __getattr__(name: str) -> object:
    # ipywidgets only when the panel itself is asked for (PEP 562)
    if name == "Panel":
        from .control import Panel

        return Panel
    raise AttributeError(f"module 'nbscribe.panel' has no attribute {name!r}")
