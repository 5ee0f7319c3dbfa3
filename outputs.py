"""Where the stages' outputs keep what other stages read: generate's trace shards and manifests, eval's
results and samples. report reads them all and eval reads generate's; their layouts live here, not in
the stage that writes them, so a reader does not import a writer's internals.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from r1distill.errors import UsageError, first_line

SHARD_GLOB = "traces-*.parquet"
"""generate: the trace shards in OUT (schema.TRACE_SCHEMA), read together with schema.scan_shards."""
MANIFEST_GLOB = "manifest*.json"
"""generate: manifest.json, and the manifest-i-of-N.json of `--shard` runs."""
RESULTS = "results.json"
"""eval: every setting that changes a score and every metric per model and group."""
SAMPLES = "samples.parquet"
"""eval: every sample with its verdict."""


def read_manifests(out: Path) -> list[tuple[Path, dict]]:
    """Every manifest in `out`: manifest.json and the manifest-i-of-N.json of `--shard` runs."""
    found = []
    for path in sorted(out.glob(MANIFEST_GLOB)):
        try:
            found.append((path, orjson.loads(path.read_bytes())))
        except (OSError, orjson.JSONDecodeError) as err:
            raise UsageError(f"{path}: cannot read it ({first_line(err)}); restore it or write to a new -o folder") from err
    return found
