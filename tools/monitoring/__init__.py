"""Grafana dashboards and the PrometheusRule of manifests/monitoring, generated: ``python -m tools.monitoring.generate``."""
