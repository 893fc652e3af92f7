"""Deployment manifests (`launch/*.yaml`): which nodes run, with which parameters.

Both `ros2 launch launch/<name>.launch.py` (on a robot with ROS 2) and `s2r deploy --manifest ...` (on
any machine) turn a manifest into the same node list with `node_list()`, so what the launch files start
is tested where `ros2 launch` is not installed. Standard library + PyYAML only.

Format::

    name: sim
    description: ...
    arguments:                       # set with `ros2 launch ... key:=value` or `s2r deploy --arg key=value`
      policy: {required: true, help: exported policy.onnx}
      robot: {default: "$(dir)/robots/go1.yaml"}
    record_topics: [/joint_states, ...]   # what `s2r deploy --record` writes to MCAP
    nodes:
      - name: policy
        package: s2r_ros
        executable: policy_node
        lifecycle: true              # a managed (lifecycle) node
        enabled: "$(arg teleop)"     # optional; false, 0, no, off, none or empty leave the node out
        parameters: {policy: "$(arg policy)", autostart: active}

Substitutions: `$(arg NAME)` is an argument's value, `$(dir)` the manifest's folder. A parameter that
contained a substitution is read as YAML afterwards, so "$(arg lockstep)" given "true" is a bool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from s2r.real.documents import read_document

_SUB = re.compile(r"\$\((arg|dir)\s*([^)]*)\)")
_OFF = {"false", "0", "no", "off", "none", ""}


class ManifestError(ValueError):
    """A manifest that cannot be read or filled in."""


@dataclass(frozen=True, kw_only=True)
class ArgSpec:
    """A manifest argument: required, or with a default."""

    name: str
    default: str | None = None
    required: bool = False
    help: str = ""


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """One node to start."""

    name: str
    package: str
    executable: str
    parameters: dict[str, Any] = field(default_factory=dict)
    lifecycle: bool = False
    namespace: str = ""
    enabled: str = "true"


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A parsed manifest (substitutions not yet applied)."""

    name: str
    description: str
    arguments: dict[str, ArgSpec]
    nodes: tuple[NodeSpec, ...]
    record_topics: tuple[str, ...]
    source: Path


def _keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ManifestError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest; raises ManifestError naming the file and the bad entry."""
    path = Path(path).resolve()
    raw = read_document(path, ManifestError, "manifest", "(see launch/*.yaml)")
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list):
        raise ManifestError(f"{path}: expected a mapping with a 'nodes' list")
    _keys(raw, {"name", "description", "arguments", "nodes", "record_topics"}, str(path))
    args = {}
    for name, spec in (raw.get("arguments") or {}).items():
        spec = spec or {}
        _keys(spec, {"default", "required", "help"}, f"{path}: argument '{name}'")
        default = spec.get("default")
        args[name] = ArgSpec(name=name, default=None if default is None else str(default),
                             required=bool(spec.get("required", False)), help=str(spec.get("help", "")))
    nodes = []
    for i, n in enumerate(raw["nodes"]):
        where = f"{path}: node {i}"
        if not isinstance(n, dict):
            raise ManifestError(f"{where}: expected a mapping")
        _keys(n, {f.name for f in NodeSpec.__dataclass_fields__.values()}, where)
        missing = {"name", "package", "executable"} - set(n)
        if missing:
            raise ManifestError(f"{where}: missing {sorted(missing)}")
        nodes.append(NodeSpec(**{**n, "parameters": dict(n.get("parameters") or {}), "enabled": str(n.get("enabled", "true"))}))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ManifestError(f"{path}: node names must be unique, got {names}")
    return Manifest(name=str(raw.get("name", path.stem)), description=str(raw.get("description", "")),
                    arguments=args, nodes=tuple(nodes), record_topics=tuple(raw.get("record_topics") or ()),
                    source=path)


def resolve_args(manifest: Manifest, given: dict[str, str]) -> dict[str, str]:
    """Argument values: given ones over defaults; unknown or missing required arguments are errors."""
    unknown = set(given) - set(manifest.arguments)
    if unknown:
        raise ManifestError(f"{manifest.source}: unknown arguments {sorted(unknown)}; "
                            f"it takes {sorted(manifest.arguments)}")
    values = {}
    for name, spec in manifest.arguments.items():
        if name in given:
            values[name] = str(given[name])
        elif spec.default is not None:
            values[name] = _substitute(spec.default, {}, manifest.source.parent, manifest.source)
        else:
            raise ManifestError(f"{manifest.source}: argument '{name}' is required ({spec.help or 'no default'}); "
                                f"pass {name}:=VALUE")
    return values


def describe_arguments(manifest: Manifest) -> str:
    """The manifest's arguments as help text: name, required or default (with `$(dir)` filled in), help."""
    lines = [f"arguments of manifest '{manifest.name}' ({manifest.source})"
             + (f": {manifest.description}" if manifest.description else ""),
             "  set with --arg NAME=VALUE (or NAME:=VALUE); --policy and --robot set their arguments"]
    if not manifest.arguments:
        lines.append("  (none)")
    width = max((len(n) for n in manifest.arguments), default=0)
    for name, spec in manifest.arguments.items():
        if spec.default is not None:
            value = _substitute(spec.default, {}, manifest.source.parent, manifest.source)
            given = f"default {value!r}" if value else "default ''"
        else:
            given = "required"
        lines.append(f"  {name:<{width}}  {spec.help or '(no help)'} ({given})")
    return "\n".join(lines)


def _substitute(text: str, args: dict[str, str], folder: Path, source: Path) -> str:
    def one(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2).strip()
        if kind == "dir":
            return str(folder)
        if name not in args:
            raise ManifestError(f"{source}: $(arg {name}) names no argument; known: {sorted(args)}")
        return args[name]

    return _SUB.sub(one, text)


def _fill(value: Any, args: dict[str, str], folder: Path, source: Path) -> Any:
    if isinstance(value, str) and _SUB.search(value):
        filled = _substitute(value, args, folder, source)
        parsed = yaml.safe_load(filled) if filled.strip() else ""
        return parsed if isinstance(parsed, bool | int | float | list) else filled
    if isinstance(value, list):
        return [_fill(v, args, folder, source) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, args, folder, source) for k, v in value.items()}
    return value


def node_list(manifest: Manifest, args: dict[str, str] | None = None,
              overrides: dict[str, Any] | None = None) -> list[NodeSpec]:
    """The nodes to start, substitutions applied, disabled nodes left out.

    Args:
        manifest: A loaded manifest.
        args: Argument values (`policy` -> path, ...).
        overrides: "node.param" -> value, applied after substitution (e.g. from `s2r deploy --set`).

    Raises:
        ManifestError: Unknown/missing arguments, or an override naming no node.
    """
    values = resolve_args(manifest, args or {})
    folder, src = manifest.source.parent, manifest.source
    nodes = []
    for n in manifest.nodes:
        params = _fill(n.parameters, values, folder, src)
        enabled = str(_substitute(n.enabled, values, folder, src)).strip().lower() not in _OFF
        nodes.append(replace(n, parameters=params, enabled=str(enabled).lower()))
    by_name = {n.name: n for n in nodes}
    for key, value in (overrides or {}).items():
        node, _, param = key.partition(".")
        if node not in by_name or not param:
            raise ManifestError(f"override '{key}' should read NODE.PARAM with NODE one of {sorted(by_name)}")
        target = by_name[node]
        parsed = yaml.safe_load(value) if isinstance(value, str) and value.strip() else value
        by_name[node] = replace(target, parameters={**target.parameters, param: parsed})
    return [by_name[n.name] for n in nodes if by_name[n.name].enabled == "true"]
