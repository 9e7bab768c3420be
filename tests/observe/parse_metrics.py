#!/usr/bin/env python3
"""Parses a Prometheus text exposition with the reference client's parser and prints every
sample on one line, `name{label="value",...} value`, labels sorted by name.

Usage: parse_metrics.py FILE   (FILE "-" reads standard input)

Exit status: 0 parsed; 1 the text does not parse or a histogram is inconsistent (buckets not
cumulative, +Inf bucket != _count); 3 the prometheus_client module is missing
(Debian: python3-prometheus-client).
"""
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("prometheus_client is not installed (apt-get install python3-prometheus-client)",
          file=sys.stderr)
    sys.exit(3)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "-"
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"exposition does not parse: {e}", file=sys.stderr)
        return 1
    seen = set()
    for fam in families:
        if fam.name in seen:
            print(f"family {fam.name} appears twice", file=sys.stderr)
            return 1
        seen.add(fam.name)
        if fam.type == "histogram":
            series = {}
            for s in fam.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                series.setdefault(key, {"buckets": [], "count": None})
                if s.name.endswith("_bucket"):
                    series[key]["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    series[key]["count"] = s.value
            for key, h in series.items():
                values = [v for _, v in sorted(h["buckets"])]
                if values != sorted(values):
                    print(f"{fam.name}{key}: buckets are not cumulative", file=sys.stderr)
                    return 1
                if not h["buckets"] or h["buckets"][-1][0] != float("inf") or values[-1] != h["count"]:
                    print(f"{fam.name}{key}: +Inf bucket differs from _count", file=sys.stderr)
                    return 1
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            print(f"{s.name}{{{labels}}} {s.value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
