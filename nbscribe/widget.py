"""``nbscribe.widget.Panel``: where the control panel lived; it is now `nbscribe.panel`."""

from __future__ import annotations

from .panel.control import Panel

__all__ = ["Panel"]
