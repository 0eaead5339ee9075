"""Unstructured pruning: element-wise masks, criteria and sparsity reports.

Example:
    >>> from prunekit import sparse
    >>> sparse.prune_magnitude(model, 0.9, scope="global")
    >>> print(sparse.sparsity_report(model).to_table())
    >>> sparse.bake(model)   # plain tensors with the zeros baked in
"""

from __future__ import annotations

from prunekit.sparse.criteria import (
    CRITERIA,
    Criterion,
    PruneRequest,
    compute_masks,
    masks_for,
    prune,
    prune_magnitude,
    prune_threshold_std,
    prune_to_sparsity,
    pruned_count,
    resolve_amounts,
    std_of,
)
from prunekit.sparse.masks import (
    WeightMask,
    apply_masks,
    bake,
    default_param_names,
    export_state_dict,
    get_masks,
    masked_param_names,
    merge_masked_state_dict,
    parameter_names,
    remove_masks,
    select_params,
    stored_tensor,
)
from prunekit.sparse.report import SparsityReport, SparsityRow, sparsity_report

__all__ = [
    "CRITERIA",
    "Criterion",
    "PruneRequest",
    "SparsityReport",
    "SparsityRow",
    "WeightMask",
    "apply_masks",
    "bake",
    "compute_masks",
    "default_param_names",
    "export_state_dict",
    "get_masks",
    "masked_param_names",
    "masks_for",
    "merge_masked_state_dict",
    "parameter_names",
    "prune",
    "prune_magnitude",
    "prune_threshold_std",
    "prune_to_sparsity",
    "pruned_count",
    "remove_masks",
    "resolve_amounts",
    "select_params",
    "sparsity_report",
    "std_of",
    "stored_tensor",
]
