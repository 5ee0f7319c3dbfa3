"""What makes a score reproducible, written into results.json, and how results are shown and compared.

A reasoning score moves with the model's exact weights, its chat template, the backend and its version,
the dtype, every sampling setting, the seed, the verifier and its version. results.json records each
(`settings` for the run, `settings` per model), and `differences` names those that differ between two
results, so two numbers are never compared without saying what else changed.

Weights are fingerprinted without reading them whole (tens of GB would take minutes): a Hub model by
the commit of its cached snapshot, a local folder by the SHA-256 of its config files and of each
weight file's size, first and last MiB.
"""

from __future__ import annotations

import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import orjson
from rich.table import Table

from r1distill import __version__, models
from r1distill.console import stderr_console
from r1distill.errors import UsageError, first_line

_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
_CONFIGS = ("config.json", "generation_config.json", "tokenizer_config.json", "chat_template.jinja")
MIB = 1 << 20


def versions(backend: str | None) -> dict[str, str | None]:
    """Versions of what changes a score: r1distill, Python, the verifier and the backend's libraries."""
    names = ["math-verify", "sympy"] + {"transformers": ["torch", "transformers"], "vllm": ["torch", "vllm"], "openai": ["aiohttp"]}.get(backend or "", [])
    found: dict[str, str | None] = {"r1distill": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def weights_fingerprint(folder: Path) -> str:
    """SHA-256 over a model folder's config files and each weight file's name, size, first and last MiB."""
    digest = hashlib.sha256()
    for pattern in (*_CONFIGS, *_WEIGHTS):
        for path in sorted(folder.glob(pattern)):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
            with open(path, "rb") as handle:
                digest.update(handle.read(MIB))
                if path.stat().st_size > 2 * MIB:
                    handle.seek(-MIB, 2)
                    digest.update(handle.read(MIB))
    return digest.hexdigest()


def model_settings(model: str, backend: str | None, tokenizer, device: str | None) -> dict:
    """What identifies the model a score belongs to: its weights, chat template, backend and dtype."""
    found: dict = {"model": model, "backend": backend}
    if backend in ("transformers", "vllm"):
        path = Path(models.resolve(model))
        if path.is_dir():
            found["weights_sha256"] = weights_fingerprint(path)
            found["source"] = str(path.resolve()) if model not in models.EMBEDDED else models.EMBEDDED[model].source
        else:
            found["revision"] = _hub_revision(model)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        found["chat_template_sha256"] = hashlib.sha256(tokenizer.chat_template.encode()).hexdigest()
    if backend == "transformers":
        from r1distill.backends.hf import dtype_name

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        found["dtype"], found["device"] = dtype_name(device), device
    elif backend == "vllm":
        found["dtype"] = "auto (the model's own)"
    elif backend == "openai":
        found["dtype"] = "the server's"
    return found


def _hub_revision(model: str) -> str | None:
    """The commit of a Hub model's cached snapshot (no network: generate has downloaded it by now)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None


def load_results(path: str) -> dict:
    """An earlier eval's results.json (the file or its folder)."""
    file = Path(path) / "results.json" if Path(path).is_dir() else Path(path)
    try:
        results = orjson.loads(file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as err:
        raise UsageError(f"--compare {path}: cannot read it as an eval's results.json ({first_line(err)})") from err
    if not isinstance(results, dict) or "models" not in results or "settings" not in results:
        raise UsageError(f"--compare {path}: not an eval's results.json (no settings or models)")
    results["_from"] = str(file)
    return results


def _flat(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(mine: dict, theirs: dict) -> list[str]:
    """The settings that differ between two results: the run's, and the model settings of models both hold.

    >>> a = {"settings": {"temperature": 0.6, "n": 4}, "models": [{"model": "m", "settings": {"dtype": "float32"}}]}
    >>> b = {"settings": {"temperature": 1.0, "n": 4}, "models": [{"model": "m", "settings": {"dtype": "bfloat16"}}]}
    >>> differences(a, b)
    ['temperature: 0.6 here, 1.0 there', "m dtype: 'float32' here, 'bfloat16' there"]
    """
    found = []
    here, there = _flat(mine["settings"]), _flat(theirs["settings"])
    for key in [k for k in here if k not in _NOT_SETTINGS] + [k for k in there if k not in here and k not in _NOT_SETTINGS]:
        if here.get(key) != there.get(key):
            found.append(f"{key}: {here.get(key)!r} here, {there.get(key)!r} there")
    theirs_by_name = {entry["model"]: entry["settings"] for entry in theirs["models"]}
    for entry in mine["models"]:
        other = theirs_by_name.get(entry["model"])
        if other is None:
            continue
        for key in sorted(set(entry["settings"]) | set(other)):
            if entry["settings"].get(key) != other.get(key):
                found.append(f"{entry['model']} {key}: {entry['settings'].get(key)!r} here, {other.get(key)!r} there")
    return found


# Recorded for the record, but not a setting that changes a score.
_NOT_SETTINGS = frozenset({"command", "started_at", "finished_at", "output", "workers"})


def _number(value, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if percent else f"{value:,.0f}"


def print_results(results: list[tuple[str | None, dict]]) -> None:
    """The models of (source, results) pairs side by side, one column per model, on stderr; source None is this run."""
    columns = [(entry, source) for source, result in results for entry in result["models"]]
    table = Table(title=f"eval: {results[0][1]['settings']['benchmark']['name']}", show_lines=False)
    table.add_column("")
    for entry, source in columns:
        table.add_column(entry["model"] + (f"\n({source})" if source else ""), justify="right")

    def row(name: str, pick, percent: bool = True) -> None:
        table.add_row(name, *[_number(pick(entry["metrics"]), percent) for entry, _ in columns])

    metrics_of = [entry["metrics"] for entry, _ in columns]
    table.add_row("problems / samples", *[f"{m['problems']:,} / {m['samples']:,}" for m in metrics_of])
    table.add_row("pass@1 ± s.e.", *[f"{_number(m['pass@1'])} ± {_number(m['pass@1_stderr'])}" for m in metrics_of])
    for k in sorted({k for m in metrics_of for k in m["pass@k"]}, key=int)[1:]:
        row(f"pass@{k}", lambda m, k=k: m["pass@k"].get(k))
    for k in sorted({k for m in metrics_of for k in m["maj@k"]}, key=int)[1:]:
        row(f"maj@{k}", lambda m, k=k: m["maj@k"].get(k))
    for name, key in (("truncated", "truncated"), ("no answer", "no_answer"), ("verify timeout", "timeout"), ("verifier error", "verifier_error")):
        row(name, lambda m, key=key: m[key])
    row("generation errors", lambda m: m["generation_errors"], percent=False)
    # Results written before refusals were counted apart have no such entry.
    row("of which refused for good", lambda m: m.get("generation_refused"), percent=False)
    # Results written before the format check was measured have no such entry.
    row("format pass (R1 layout)", lambda m: m.get("format_pass"))
    row("mean thinking tokens", lambda m: m["mean_thinking_tokens"], percent=False)
    row("mean response tokens", lambda m: m["mean_response_tokens"], percent=False)
    budgets = sorted({point["budget"] for entry, _ in columns for point in entry.get("thinking_budget", {}).get("forced", [])})
    for budget in budgets:
        cells = []
        for entry, _ in columns:
            point = next((p for p in entry.get("thinking_budget", {}).get("forced", []) if p["budget"] == budget), None)
            cells.append("-" if point is None else f"{_number(point['pass@1'])} ({_number(point['mean_thinking_tokens'], False)} tok)")
        table.add_row(f"pass@1, thinking ≤ {budget}", *cells)
    stderr_console().print(table)
