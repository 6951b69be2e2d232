"""Studies: what crosses many runs of the pipeline. An experiment over procedures, folds,
seeds and techniques (with its results tables), a hyperparameter sweep, prompt robustness and
the demo."""
