"""``--xp-show-config``: each experiment's merged SETUP and grid overrides, and which layer set each key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pytest_xp.define.config_files import get_dotted
from pytest_xp.errors import SetupFailed
from pytest_xp.run.items import TrialItem, VerifyItem
from pytest_xp.run.session import XpSession
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.store.codec import dumps


def config_lines(session: XpSession, items: Sequence[pytest.Item]) -> list[str]:
    """The lines ``--xp-show-config`` prints. Setup functions run (they are part of SETUP); trials do not."""
    settings = session.settings
    lines = []
    if settings.config_layers:
        lines.append(
            "layers, applied in order: setup functions, " + ", ".join(la.shown for la in settings.config_layers)
        )
        if settings.context_overrides:
            lines[-1] += ", --xp-context"
    seen: dict[str, Any] = {}
    for item in items:
        if isinstance(item, (TrialItem, VerifyItem)) and item.xp_exp.module_id not in seen:
            seen[item.xp_exp.module_id] = item.xp_exp
    if not seen:
        return [*lines, "no experiment collected"]
    for module_id, exp in seen.items():
        lines.append(f"{module_id}: SETUP")
        try:
            merged, origins = session.setup_with_origins(exp)
        except SetupFailed as exc:
            lines.append(f"  setup failed: {str(exc).splitlines()[0]}")
            continue
        rows = [(key, dumps(get_dotted(merged, key)), origin) for key, origin in sorted(origins.items())]
        width = max((len(k) + len(v) for k, v, _ in rows), default=0) + 3
        lines.extend(f"  {f'{key} = {value}':<{width}}  # {origin}" for key, value, origin in rows)
        if not rows:
            lines.append("  (empty)")
        overrides = [o for o in settings.value_overrides if o.trial in exp.trials]
        if overrides:
            lines.append(f"{module_id}: values")
            for o in overrides:
                lines.append(f"  {o.trial}.{o.param} = {dumps(o.values)}  # {o.origin}")
    return lines


def write_config_view(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr is not None else print
    if tr is not None:
        tr.write_sep("=", "pytest-xp configuration (nothing runs)")
    for line in config_lines(config.stash[SESSION_KEY], items):
        write(line)
