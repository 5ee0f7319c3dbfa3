"""What generate records in OUT and checks against it: the settings that shape rows, the request key
that identifies a row made with them, and the manifest that lists every run that wrote to the folder.

One OUT holds rows made with one value of each ROW_SETTINGS: a run with other values is refused before
anything is written (checked against every manifest, or against the stored rows' request keys where
no manifest survived). Budget, sample count and how requests are sent may change between runs.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from r1distill import __version__
from r1distill.errors import UsageError
from r1distill.prompts import build_messages
from r1distill.generate.store import read_rows, record_run
from r1distill.outputs import read_manifests
from r1distill.redact import redact_command, redact_settings
from r1distill.schema import PROBLEM, PROMPT_ID

if TYPE_CHECKING:
    from r1distill.generate.config import GenerateConfig
    from r1distill.generate.run import GenerateSummary

# The settings that shape a row: one OUT holds rows made with one value of each. Budget, sample count
# and everything about how requests are sent (URLs, concurrency, batches) may change between runs.
# What a manifest written before a setting existed means by its absence.
NOT_RECORDED = {"chat_template_kwargs": [], "thinking_budget": None}
ROW_SETTINGS = ("model", "template", "system", "prompt_template", "temperature", "top_p", "seed", "chat_template_kwargs", "thinking_budget")


def key_settings(cfg: GenerateConfig) -> bytes:
    """The ROW_SETTINGS a request key hashes besides the messages (system and prompt template are in those);
    template variables and the thinking budget only when given, so the rows of runs without them keep their keys."""
    kwargs = cfg.template_kwargs()
    budget = [{"thinking_budget": cfg.thinking_budget}] if cfg.thinking_budget is not None else []
    return orjson.dumps([cfg.model, cfg.template, cfg.temperature, cfg.top_p, cfg.seed] + ([kwargs] if kwargs else []) + budget)


def request_key(settings: bytes, prompt_id: str, messages: list[dict[str, str]]) -> str:
    # The sample index is in the row id, so one key per prompt covers every setting that matters.
    return hashlib.sha256(settings + orjson.dumps([prompt_id, messages])).hexdigest()[:32]


def row_settings(cfg: GenerateConfig) -> dict:
    return {name: getattr(cfg, name) for name in ROW_SETTINGS}


def check_settings(cfg: GenerateConfig, out: Path) -> None:
    """Refuse an OUT whose rows were made with other ROW_SETTINGS, before anything is written to it.

    Every manifest (one per --shard) records them. An OUT without one (its first run was killed by an
    older version, say) is checked through its rows: the key each would get from this run's settings.
    """
    manifests = read_manifests(out)
    wanted = row_settings(cfg)
    for path, manifest in manifests:
        recorded = manifest.get("settings") or {}
        differ = [
            f"{name} {recorded[name]!r} there, {wanted[name]!r} now"
            for name in ROW_SETTINGS
            if recorded.get(name, NOT_RECORDED.get(name)) != wanted[name] and (name in recorded or name in NOT_RECORDED)
        ]
        if differ:
            raise UsageError(f"-o {out} holds traces made with other settings ({', '.join(differ)}; see {path.name}); write to a new -o folder")
    rows = None if manifests else read_rows(out, [PROMPT_ID, PROBLEM, "request_key"])
    if rows is None:
        return
    settings = key_settings(cfg)
    other = sum(
        request_key(settings, prompt_id, build_messages(problem, cfg.template, cfg.system, cfg.prompt_template)) != key
        for prompt_id, problem, key in rows.unique().iter_rows()
    )
    if other:
        raise UsageError(
            f"-o {out} holds traces of {other} prompts made with other settings "
            "(model, template, system or prompt template, temperature, top_p, seed or chat template kwargs); write to a new -o folder"
        )


def versions(backend: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["polars", "pyarrow", "aiohttp"] if backend == "openai" else ["torch", "transformers", "polars", "pyarrow"]
    if backend == "vllm":
        names.append("vllm")
    found = {"r1distill": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_manifest(
    cfg: GenerateConfig, started: datetime, prompts: int, summary: GenerateSummary | None = None, prefilled_think: bool | None = None
) -> None:
    """Record this run in its shard's manifest: when it starts writing (no summary) and, with its counts, when it ends.

    A run that is killed keeps its entry with finished_at null, so the manifest names every run
    whose rows may be in the folder, and the ROW_SETTINGS that every one of them shared.
    `prefilled_think`: the template opened the think block itself, so completions start with the
    `<think>` that generate put back (None when the run generated nothing to tell).
    """
    index, count = cfg.shard_parts()
    options = redact_settings(asdict(cfg))
    options.pop("command")
    counts = {"prompts": prompts}
    if summary is not None:
        counts |= {k: v for k, v in asdict(summary).items() if k != "output"}
    run = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat() if summary is not None else None,
        "command": redact_command(cfg.command),
        "options": options,
        "prefilled_think": prefilled_think,
        "versions": versions(cfg.backend),
        "counts": counts,
    }
    header = {"stage": "generate", "settings": row_settings(cfg), "shard": {"index": index, "count": count}}
    name = "manifest.json" if count == 1 else f"manifest-{index:05d}-of-{count:05d}.json"
    record_run(Path(cfg.output) / name, header, run)
