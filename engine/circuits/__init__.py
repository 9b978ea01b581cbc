"""Sparse feature circuits: tasks, SAE sites spliced into a model, node and edge
effects, and the evaluation of circuits by ablation (faithfulness, completeness)."""
