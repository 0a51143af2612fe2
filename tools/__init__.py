"""Generators for files the repository commits (dashboards, the PrometheusRule); not shipped in the package."""
