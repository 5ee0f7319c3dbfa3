"""Settings of `r1distill distill` (on-policy distillation), written once: each field's doc is its --help
text, its check is in `check`.

A recipe (`--config recipe.yaml`) may set these fields and any other field of TRL's `DistillationConfig`
(`top_p`, `top_k`, `disable_dropout`, `vllm_gpu_memory_utilization`...), which go to the trainer as they
are; options typed on the command line win over it. A DistillationConfig field that one of these settings
already sets (`learning_rate` is `lr`) must be given under this settings' name.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import context, models, requirements
from r1distill.errors import UsageError, first_line, missing_training
from r1distill.rewards import ACCURACY_MODES
from r1distill.training import recipe
from r1distill.training.settings import TrainingSettings

log = logging.getLogger(__name__)

TEMPLATES = ("chat", "teacher", "r1-zero")
VLLM_MODES = ("colocate", "server")
GOLD = "trl.experimental.gold"


@dataclass
class DistillConfig(TrainingSettings):
    """Settings of one `r1distill distill` run."""

    input: str
    """Prompts: a prompt table (a problem column), a `r1distill filter` output or a `generate` output; a Hub dataset id too. Only the problems are read: the student writes the answers."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """Output folder: the trained student (plain Hugging Face layout), checkpoints, metrics.jsonl and a model card."""
    teacher: str = field(metadata={"flags": ("--teacher", "-t")})
    """Teacher whose next-token distributions score every token the student writes: a Hub id, a local folder or 'smollm2-135m'; it must share the student's tokenizer."""
    model: str = field(default="smollm2-135m", metadata={"flags": ("--student", "--model", "-m")})
    """Student to train: 'smollm2-135m' (embedded, offline), a Hub id or a local folder."""
    template: str = "chat"
    """Prompt: chat (the student's chat template, asking for a boxed answer; r1distill's think-keeping one when the student's strips the reasoning), teacher (the teacher's tokenizer and chat template, which the student then keeps, as DeepSeek's R1-Distill students did) or r1-zero (the R1-Zero prompt as raw text)."""
    system: str | None = None
    """System prompt (chat template only)."""
    beta: float = 1.0
    """Divergence between the student's and the teacher's next-token distributions (a generalized JSD): 1 reverse KL (mode-seeking, the on-policy distillation default), 0 forward KL, 0.5 JSD."""
    temperature: float = 1.0
    """Sampling temperature of the student's completions, also applied to both distributions in the loss."""
    max_completion_length: int = 1024
    """Most tokens per student completion; longer ones are cut."""
    cross_tokenizer: bool = False
    """Distil across different tokenizers with TRL's experimental GOLD trainer (trl.experimental.gold: the two distributions are aligned by text span, ULD loss) instead of token by token; recipe fields then go to GOLDConfig."""
    accuracy: str = "math"
    """How --eval-prompts answers are compared with the gold ones."""
    batch_size: int = 8
    """Prompts (one completion each) per device per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step; completions are generated once for all of them."""
    lr: float = 1e-6
    """Peak learning rate (full weights: 1e-6 to 1e-5; LoRA wants 1e-5 to 1e-4)."""
    lr_scheduler: str = "constant"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = 0.0
    """Share of the steps spent warming the learning rate up from 0."""
    epochs: float = 1.0
    """Passes over the prompts."""
    max_steps: int | None = None
    """Stop after this many optimizer steps, overriding --epochs."""
    use_vllm: bool = False
    """Generate the student's completions with vLLM (GPU; needs `pip install 'r1distill[gpu]'`); the teacher scores them in the training processes."""
    vllm_mode: str = "colocate"
    """colocate: vLLM inside each training process, sharing its GPU; server: a separate `trl vllm-serve` of the student on other GPUs."""
    vllm_server_url: str | None = None
    """Base URL of the student's `trl vllm-serve` server (server mode) [default: http://0.0.0.0:8000]."""
    logging_steps: int = 1
    """Optimizer steps between lines of metrics.jsonl."""
    save_steps: int = 100
    """Optimizer steps between checkpoints (what --resume continues from)."""
    seed: int = 0
    """Seed of the prompt order, the sampling and LoRA's initialisation."""
    trl: dict = field(default_factory=dict, metadata={"cli": False})
    """Other DistillationConfig fields, from --config, passed to the trainer as they are."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in the model card."""

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings (the prompts are read later)."""
        problems = self.shared_problems("distill", self.output, self.lr_scheduler)
        for name, value, allowed in (("template", self.template, TEMPLATES), ("accuracy", self.accuracy, ACCURACY_MODES),
                                     ("vllm-mode", self.vllm_mode, VLLM_MODES)):
            if value not in allowed:
                problems.append(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0 <= self.beta <= 1:
            problems.append(f"--beta must be in [0, 1] (0 forward KL, 1 reverse KL), got {self.beta}")
        for name in ("batch_size", "grad_accum", "max_completion_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.epochs <= 0 or self.lr <= 0 or self.temperature <= 0:
            problems.append("--epochs, --lr and --temperature must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.system is not None and self.template == "r1-zero":
            problems.append("--system applies to --template chat only; the r1-zero prompt is sent as it is")
        if self.vllm_server_url is not None and not (self.use_vllm and self.vllm_mode == "server"):
            problems.append("--vllm-server-url needs --use-vllm --vllm-mode server")
        if self.cross_tokenizer and importlib.util.find_spec("trl") is not None and not _has_gold():
            problems.append(f"--cross-tokenizer needs {GOLD}, which {_trl_version()} does not have; use a teacher that shares the student's tokenizer")
        if self.cross_tokenizer and self.template != "chat":
            problems.append("--cross-tokenizer prompts each model with its own tokenizer: it takes --template chat only")
        problems += requirements.missing(self)
        if self.max_completion_length >= 1:
            problems += [problem for problem in self.context_problems() if problem]
        if problem := self.held_out_context_problem(self.model):
            problems.append(problem)
        if not self.cross_tokenizer and not missing_training("distill") and (problem := tokenizer_problem(self.model, self.teacher, self.template, local_only=True)):
            problems.append(problem)
        if problems:
            raise UsageError("; ".join(problems))

    def context_problems(self) -> list[str | None]:
        """A prompt plus --max-completion-length must fit the student (it writes them, with colocated vLLM
        within vllm_max_model_length) and the teacher (it reads them whole)."""
        colocated = self.use_vllm and self.vllm_mode == "colocate"
        student = context.generation_problem(self.model, self.max_completion_length, "--max-completion-length", vllm=colocated,
                                             max_model_len=self.trl.get("vllm_max_model_length") if colocated else None,
                                             length_option="vllm_max_model_length")
        teacher = context.generation_problem(self.teacher, self.max_completion_length, "--max-completion-length", vllm=False,
                                             max_model_len=None, length_option="vllm_max_model_length")
        return [student, teacher and f"the teacher: {teacher}"]


def _has_gold() -> bool:
    """Whether the installed TRL has GOLD, looked up without importing trl.experimental (which warns that it is)."""
    spec = importlib.util.find_spec("trl")
    return spec is not None and any((Path(folder) / "experimental" / "gold" / "__init__.py").is_file() for folder in spec.submodule_search_locations or [])


def _trl_version() -> str:
    from importlib.metadata import version

    return f"TRL {version('trl')}"


def tokenizer_problem(student: str, teacher: str, template: str, *, local_only: bool) -> str | None:
    """Why the teacher cannot score the student's tokens one by one, or None.

    Both must have the same regular vocabulary (the same text for the same id). Tokens added on top of
    it (chat markers, <think>) may be named differently at the same ids: Qwen2.5 calls id 151644
    `<|im_start|>`, DeepSeek-R1-Distill-Qwen `<｜User｜>`. The ids are then the same rows to both
    models but a template written with one's names is plain text to the other, so that pair needs
    --template teacher (the student takes the teacher's tokenizer and template, as DeepSeek's
    distilled students did). With `local_only` a tokenizer that is not on this machine yet (a Hub model
    not cached, the embedded model not converted) is not checked: the run checks it again."""
    from transformers import AutoTokenizer

    tokenizers = []
    for option, name in (("--student", student), ("--teacher", teacher)):
        path = models.cached(name) if local_only else models.resolve(name)
        local = Path(path).expanduser()
        if local_only and not (local / "config.json").is_file() and (local.exists() or path.count("/") != 1):
            return None
        try:
            tokenizers.append(AutoTokenizer.from_pretrained(str(local) if local.exists() else path, local_files_only=local_only))
        except Exception as err:  # OSError, ValueError, the Hub's errors: all mean "cannot read it here"
            if local_only:
                log.debug("%s %s: tokenizer not readable offline (%s); checked when the run starts", option, name, first_line(err))
                return None
            raise UsageError(f"{option} {name}: its tokenizer cannot be loaded ({first_line(err)})") from err
    (ours, ours_added), (theirs, theirs_added) = [_regular_vocabulary(tokenizer) for tokenizer in tokenizers]
    if ours != theirs or ours_added.keys() != theirs_added.keys():
        mine, other = tokenizers[0].get_vocab(), tokenizers[1].get_vocab()
        only_student, only_teacher = len(set(mine.values()) - set(other.values())), len(set(other.values()) - set(mine.values()))
        moved = sum(1 for token in ours.keys() & theirs.keys() if ours[token] != theirs[token])
        return (
            f"--teacher {teacher} and --student {student} have different vocabularies ({len(other):,} and {len(mine):,} tokens; "
            f"{only_teacher:,} ids only the teacher's, {only_student:,} only the student's, {moved:,} tokens at other ids), so the teacher "
            "cannot score the student's tokens one by one: use a teacher of the student's family, or --cross-tokenizer (GOLD)"
        )
    renamed = sorted(i for i in ours_added.keys() & theirs_added.keys() if ours_added[i] != theirs_added[i])
    if renamed and template != "teacher":
        first = renamed[0]
        return (
            f"--teacher {teacher} names {len(renamed)} of the student's added tokens differently (id {first}: {theirs_added[first]!r} "
            f"there, {ours_added[first]!r} in {student}), so a template written with one's names is plain text to the other: "
            "give --template teacher (the student takes the teacher's tokenizer and chat template)"
        )
    return None


def _regular_vocabulary(tokenizer) -> tuple[dict[str, int], dict[int, str]]:
    """(token -> id of the vocabulary the tokenizer was trained with, id -> token of those added on top)."""
    added = tokenizer.get_added_vocab()
    return {token: i for token, i in tokenizer.get_vocab().items() if token not in added}, {i: token for token, i in added.items()}


# Settings that may change between the runs of one OUT: how long, how often, where to report.
RESUMABLE = ("epochs", "max_steps", "resume", "logging_steps", "save_steps", "save_total_limit", "report_to", "push_to_hub",
             "merge_lora", "command", "vllm_server_url", "eval_every", "eval_prompts", "eval_max_tokens")

# The DistillationConfig field each setting above sets; a recipe gives these under the settings' names.
TRL_NAMES = {
    "output_dir": "output", "learning_rate": "lr", "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs", "lr_scheduler_type": "lr_scheduler", "warmup_steps": "warmup_ratio",
    "activation_checkpointing": "gradient_checkpointing", "gradient_checkpointing": "gradient_checkpointing",
    "vllm_server_base_url": "vllm_server_url", "teacher_model_name_or_path": "teacher",
    **{name: name for name in ("max_completion_length", "temperature", "beta", "max_steps", "use_vllm", "vllm_mode", "logging_steps",
                                "save_steps", "save_total_limit", "seed", "report_to")},
}
# Fields that would load code or weights behind the stage's back (the stage loads both models itself), or
# make GOLD something other than on-policy distillation across tokenizers.
REFUSED = ("trust_remote_code", "model_init_kwargs", "teacher_model_init_kwargs", "teacher_model_revision", "teacher_tokenizer_name_or_path",
           "lmbda", "use_uld_loss")


def _trl_fields(path: str, unknown: dict) -> dict:
    """The recipe keys that are other DistillationConfig (or, for --cross-tokenizer, GOLDConfig) fields, as the
    `trl` setting; UsageError for any other key."""
    missing = missing_training("distill")
    if missing:
        raise UsageError(missing)
    from trl import DistillationConfig

    fields = {f.name for f in dataclasses.fields(DistillationConfig)}
    # --cross-tokenizer's GOLDConfig fields too; the trainer config that does not take one names it. Looked up
    # only for a key DistillationConfig lacks: importing trl.experimental loads TRL's vLLM integration too.
    if any(key not in fields for key in unknown) and _has_gold():
        from trl.experimental.gold import GOLDConfig

        fields |= {f.name for f in dataclasses.fields(GOLDConfig)}
    ours = sorted(f"{key} (write {TRL_NAMES[key]})" for key in unknown if key in TRL_NAMES)
    if ours:
        raise UsageError(f"--config {path}: {', '.join(ours)}: these DistillationConfig fields are r1distill distill settings; give them under their names")
    refused = sorted(key for key in unknown if key in REFUSED)
    if refused:
        raise UsageError(f"--config {path}: {', '.join(refused)}: r1distill distill sets these itself (it loads both models, without remote code, and is always fully on-policy); leave them out")
    bad = sorted(key for key in unknown if key not in fields)
    if bad:
        raise UsageError(f"--config {path}: unknown setting(s) {', '.join(bad)}; use the fields of `r1distill distill --help` with _ for -, or of TRL's DistillationConfig")
    return {"trl": dict(unknown)}


def read_recipe(path: str | Path) -> dict:
    """The settings in a YAML recipe: DistillConfig fields checked and typed, other DistillationConfig fields under `trl`."""
    return recipe.read_recipe(path, DistillConfig, "distill", extra=_trl_fields)
