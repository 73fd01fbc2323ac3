"""A plan written back as YAML: what `zdm expand` prints, a plan file that validates again."""

from __future__ import annotations

from typing import Any

import yaml

from zdm.plan.loader import LoadedPlan


class _Dumper(yaml.SafeDumper):
    """Multi-line SQL as literal blocks, so an expanded swap reads as it runs."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def expanded_yaml(loaded: LoadedPlan) -> str:
    """The plan's five phases (its changes expanded), as a plan file."""
    data: dict[str, Any] = loaded.plan.model_dump(by_alias=True, exclude_defaults=True)
    data.setdefault("name", loaded.name)
    data.pop("changes", None)
    data.pop("version_schema", None)
    ordered: dict[str, Any] = {k: data[k] for k in ("version", "name") if k in data}
    ordered.update({key: value for key, value in data.items() if key not in ordered})
    ordered["phases"] = {phase: steps for phase, steps in data.get("phases", {}).items() if steps}
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
