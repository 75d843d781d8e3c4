"""Cross-validation, the stages between training and model selection.

``validate {configuration}/fold_{k}`` (:mod:`segflow.crossval.validate`, runs the network)
predicts and scores each fold's held-out cases; ``crossval {configuration}``
(:mod:`segflow.crossval.merge`, metrics only) merges the folds of a configuration. The package
imports neither, so that merging does not load torch.
"""
