"""How a private run shows its guarantee: table labels and the summary sentence. No task or
training imports, so the tasks' renderers can use it."""

from __future__ import annotations

from typing import Any

NON_PRIVATE = "non-private reference"


def row_label(privacy: dict[str, Any] | None, name: str) -> str:
    """A table row's name, marked when it is a non-private reference."""
    refs = (privacy or {}).get("non_private_reference") or []
    return f"{name} ({NON_PRIVATE})" if name in refs else name


def privacy_line(privacy: dict[str, Any] | None) -> str | None:
    """One sentence on the guarantee a run's model has, for the printed table."""
    if not privacy:
        return None
    if privacy.get("not_private"):
        return f"privacy: not private: {privacy['not_private']}"
    target = privacy.get("target_epsilon")
    of = f" of the {target:g} budget" if target is not None else ""
    stop = "; stopped by the budget" if privacy.get("stopped_by_budget") else ""
    return (
        f"privacy: ({privacy['epsilon']:.3g}, {privacy['delta']:.2g})-DP per "
        f"{privacy.get('unit', 'sample')}: epsilon {privacy['epsilon']:.3g} spent{of} in "
        f"{privacy['steps']} steps{stop}; rows marked ({NON_PRIVATE}) were fitted on the raw "
        "training data"
    )
