"""Settings of `r1distill report`, written once: each field's doc is its --help text, its check is in `found`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from r1distill.errors import UsageError
from r1distill.report import inputs


@dataclass
class ReportConfig:
    """Settings of one `r1distill report`."""

    inputs: list[str]
    """Output folders of generate, filter, sft, distill, rl or eval, any number of each; a folder's stage is told by its files."""
    output: str = field(default="report.html", metadata={"flags": ("--output", "-o")})
    """The HTML file to write: one self-contained page, replaced atomically."""
    examples: int = 3
    """Example traces shown per generate output (one per finish reason first)."""

    def found(self) -> list[tuple[str, Path]]:
        """Each input folder with its stage, in pipeline order; one UsageError naming every problem."""
        problems, found, seen = [], [], set()
        for given in self.inputs:
            folder = Path(given)
            if folder.resolve() in seen:
                continue  # the same folder twice (runs/eval and runs/eval/): one section
            seen.add(folder.resolve())
            if not folder.exists():
                problems.append(f"{given}: no such folder")
            elif not folder.is_dir():
                problems.append(f"{given}: not a folder")
            elif (stage := inputs.stage_of(folder)) is None:
                problems.append(f"{given}: not an output of generate, filter, sft, distill, rl or eval (expected {inputs.EXPECTED})")
            else:
                found.append((stage, folder))
        if not self.inputs:
            problems.append("give at least one output folder")
        if Path(self.output).is_dir():
            problems.append(f"-o {self.output}: is a folder; give the HTML file to write")
        if self.examples < 0:
            problems.append(f"--examples must be at least 0, got {self.examples}")
        if problems:
            raise UsageError("; ".join(problems))
        return sorted(found, key=lambda item: inputs.STAGES.index(item[0]))
