"""Hyperparameter search (Optuna) over a model's catalog ``tune:`` space.

Trials are tracked trainings (status ``trial`` or ``pruned``) on the model's
current inputs; the study lives in the registry's database, so workers that
tune the same model share it. The best trial's parameters are not a version:
they become a candidate run (the model, everything downstream of it and the
release) that passes the same contracts and gates as any other, and at best
reaches Staging.
"""
