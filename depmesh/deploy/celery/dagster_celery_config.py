"""Celery settings for `depmesh worker`: dagster_celery.app imports a module of
this name when it can. The broker and result backend come from the
environment, so no URL (or password) is written to disk."""

import os

broker_url = os.environ["DEPMESH_CELERY_BROKER"]
result_backend = os.environ.get("DEPMESH_CELERY_BACKEND") or broker_url
worker_prefetch_multiplier = 1
