"""``--set KEY=VALUE`` overrides of a YAML config (``train-bc`` and ``train``)."""
from __future__ import annotations

SET_HELP = 'override config keys (YAML values; a dotted key, grpo.clip=0.1, sets one nested field)'


def parse_overrides(pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs as a mapping of YAML-parsed values (a plain exponent such as 5e-5 as a float)."""
    import yaml
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep:
            raise ValueError(f'--set expects KEY=VALUE, got {pair!r}')
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            try:
                parsed = float(parsed)   # YAML 1.1 reads 5e-5 (no dot) as a string
            except ValueError:
                pass
        values[key] = parsed
    return values


def with_overrides(values: dict, pairs: list[str]) -> dict:
    """``values`` (a config mapping) with ``--set`` pairs applied; a dotted key (grpo.log_ratio=mean)
    sets one field of a nested mapping and keeps its others."""
    import copy
    merged = copy.deepcopy(values)
    for key, value in parse_overrides(pairs).items():
        node = merged
        *parents, leaf = key.split('.')
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(f'--set {key}: {parent} is not a mapping')
        node[leaf] = value
    return merged
