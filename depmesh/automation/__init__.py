"""Automation: the coordinated-retraining sensor, domain jobs and retraining schedules."""
