"""``sidemesh drift reference``: summarize a data file here and upload the statistics.

Only statistics travel (about 20 KB per numeric feature), never the training data itself;
the detector stores them as the version's reference. With ``--capture N`` the detector
builds the reference from the next N rows of the version's own traffic instead.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from .errors import InvalidInput

__all__ = ["upload"]

TIMEOUT_S = 30.0


def _call(base: str, method: str, path: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(base.rstrip("/") + path, data=body, method=method,
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return json.loads(response.read() or b"{}")


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("error", exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def upload(args) -> int:
    quote = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
    base_path = f"/v1/references/{quote(args.model)}/{quote(args.version)}"
    try:
        if args.capture is not None:
            if args.capture <= 0:
                print("sidemesh drift reference: --capture: expected a number of rows > 0", file=sys.stderr)
                return 2
            _call(args.drift_url, "POST", base_path + "/capture", json.dumps({"rows": args.capture}).encode(),
                  "application/json")
            print(f"capturing the reference of {args.model} version {args.version} from its next {args.capture} rows")
            return 0
        from .reference import load_reference

        refs = load_reference(args.data, args.input, args.datatype)
        for name, sketch in refs.items():
            body = sketch.to_proto(args.model, args.version, name).SerializeToString()
            query = "?input=" + quote(name)
            _call(args.drift_url, "PUT", base_path + query, body, "application/x-protobuf")
            label = f"input {name!r}" if name else "its only input"
            print(f"reference for {args.model} version {args.version}, {label}: {sketch.rows} rows, "
                  f"{len(sketch.features)} features ({sketch.datatype})")
        return 0
    except InvalidInput as exc:
        print(f"sidemesh drift reference: {exc}", file=sys.stderr)
        return 2
    except urllib.error.HTTPError as exc:
        print(f"sidemesh drift reference: the detector refused it ({exc.code}): {_reason(exc)}", file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"sidemesh drift reference: cannot reach the drift detector at {args.drift_url} ({reason}); "
              "is `sidemesh drift` running? (--drift-url)", file=sys.stderr)
        return 1
