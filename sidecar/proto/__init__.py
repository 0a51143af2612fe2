"""Envoy v3 xDS messages trimmed to what the sidecar reads, as google.protobuf classes.

The ``.proto`` files here keep Envoy's package names, message names and field numbers, so
type URLs and bytes match the real ones and anything left out is skipped as an unknown
field. They replace envoy-data-plane in the sidecar, whose import alone costs ~46 MiB.
Regenerate the ``*_pb2`` modules with ``make proto``.
"""

__all__: list[str] = []
