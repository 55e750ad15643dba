"""TARS's analyses over eval run dirs: the safety–refusal trade-off, thinking length by prompt label and
category, and the separation of harmful from ambiguous prompts in a model's hidden states."""

from safereason.analysis.lengths import group_lengths, lengths, plot_lengths
from safereason.analysis.page import write_analysis
from safereason.analysis.representations import (
    embed_prompts,
    group_separation,
    plot_separation,
    project_2d,
    separation_score,
)
from safereason.analysis.runs import Group, bootstrap_ci, load_groups, role_of
from safereason.analysis.tradeoff import frontier, plot_tradeoff, tradeoff, tradeoff_point

__all__ = ["Group", "bootstrap_ci", "embed_prompts", "frontier", "group_lengths", "group_separation", "lengths",
           "load_groups", "plot_lengths", "plot_separation", "plot_tradeoff", "project_2d", "role_of",
           "separation_score", "tradeoff", "tradeoff_point", "write_analysis"]
