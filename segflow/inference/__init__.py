"""Inference: sliding-window prediction of a preprocessed case and its export to the
original geometry."""
