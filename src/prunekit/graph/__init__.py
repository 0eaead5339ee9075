"""Dependency graph: trace a model and find the channel groups that are pruned together."""

from prunekit.graph.graph import DependencyGraph, Group, Slot, trace
from prunekit.graph.tracer import register_op

__all__ = ["DependencyGraph", "Group", "Slot", "register_op", "trace"]
