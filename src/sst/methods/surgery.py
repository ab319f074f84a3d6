"""Module surgery: find target nn.Linear layers by name pattern and replace them.

A pattern matches a module whose dotted name equals it, ends with "." + pattern, or matches it as
an fnmatch glob ("layers.*.attn.q_proj"). "all-linear" means every nn.Linear except excluded
names and the model's output embedding (``get_output_embeddings()`` where the model has one).
All targets are validated before anything is replaced, so a failure leaves the model untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from torch import nn

from sst.errors import ConfigError

ALL_LINEAR = "all-linear"
DEFAULT_EXCLUDE = ["lm_head", "output_proj", "classifier", "embed_out", "project_in", "project_out"]


class TargetError(ConfigError):
    """A target pattern matched nothing, matched a non-Linear module, or a rank does not fit
    (``method.target_modules``, ``method.exclude_modules``, ``method.rank``)."""


def matches(name: str, pattern: str) -> bool:
    """True if module ``name`` is selected by ``pattern`` (exact, dotted suffix or glob)."""
    return name == pattern or name.endswith("." + pattern) or fnmatchcase(name, pattern)


def find_targets(
    model: nn.Module, targets: Sequence[str], exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> dict[str, nn.Linear]:
    """Names -> nn.Linear modules selected by ``targets`` minus ``exclude``, in model order."""
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise TargetError("method.target_modules: empty: name at least one pattern or 'all-linear'")
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    selected: dict[str, nn.Linear] = {}
    used = {p: False for p in targets}
    for name, module in model.named_modules():
        if not name:
            continue
        hits = [p for p in targets if p != ALL_LINEAR and matches(name, p)]
        for p in hits:
            used[p] = True
        wanted = bool(hits) or (ALL_LINEAR in targets and isinstance(module, nn.Linear))
        if not wanted or any(matches(name, e) for e in exclude) or module is output:
            continue
        if not isinstance(module, nn.Linear):
            raise TargetError(
                f"method.target_modules: pattern(s) {hits} match module {name!r} of type "
                f"{type(module).__name__}, which is not an nn.Linear"
            )
        selected[name] = module
    missing = [p for p, hit in used.items() if p != ALL_LINEAR and not hit]
    if missing:
        raise TargetError(f"method.target_modules: pattern(s) {missing} match no module of {type(model).__name__}")
    if not selected:
        raise TargetError(f"method.target_modules: no nn.Linear layer of {type(model).__name__} is selected by {list(targets)}")
    return selected


def check_rank(targets: dict[str, nn.Linear], rank: int) -> None:
    """Raise TargetError naming the first layer whose min(in, out) is below ``rank``."""
    if not isinstance(rank, int) or rank <= 0:
        raise TargetError(f"method.rank: must be a positive integer, got {rank!r}")
    for name, layer in targets.items():
        k = min(layer.in_features, layer.out_features)
        if rank > k:
            raise TargetError(
                f"method.rank: rank {rank} is larger than layer {name!r} allows "
                f"(shape {layer.out_features}x{layer.in_features}, min = {k})"
            )


def check_layer_rank(in_features: int, out_features: int, rank: int) -> None:
    """Raise TargetError unless ``rank`` is an integer in [1, min(in, out)] for one layer's shape."""
    k = min(in_features, out_features)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 < rank <= k:
        raise TargetError(f"rank must be an integer in [1, {k}] for a {out_features}x{in_features} layer, got {rank!r}")


def replace_modules(
    model: nn.Module, targets: dict[str, nn.Linear], factory: Callable[[str, nn.Linear], nn.Module]
) -> dict[str, nn.Module]:
    """Build every replacement first, then swap them in; -> names -> new modules."""
    new = {name: factory(name, layer) for name, layer in targets.items()}
    for name, module in new.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module)
    return new
