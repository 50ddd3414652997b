"""Run specs: YAML (or command-line flags) in, validated pydantic models out, clear errors.

A spec names models by alias, tasks by reference, and a list of configurations; each
configuration gets a stable id (a hash of what it runs) and a short readable name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tradeoff.errors import UserError

STRATEGIES = ["single"]


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=5.0)
    max_tokens: int = Field(64, ge=1, le=32768)
    seed: int = 0


class TaskSpec(BaseModel):
    """A task reference with optional field mapping and scorer (for jsonl: and hf: tasks)."""

    model_config = ConfigDict(extra="forbid")

    ref: str
    prompt_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    scorer: str | None = None
    pattern: str | None = None


class Price(BaseModel):
    """Dollars per million input and output tokens, or per hour of the hardware."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    per_hour: float | None = Field(None, ge=0)


class ModelOptions(BaseModel):
    """Per-model engine options. `extra_body`: fields added to every request to an `openai:`
    server (e.g. llama.cpp's `repeat_penalty`, vLLM's `top_k`)."""

    model_config = ConfigDict(extra="forbid")

    extra_body: dict[str, Any] = Field(default_factory=dict)


class ConfigSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["single"] = "single"
    model: str
    name: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    max_tokens: int | None = Field(None, ge=1, le=32768)


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, str]
    tasks: list[TaskSpec]
    configs: list[ConfigSpec] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)
    samples: int = Field(1, ge=1, le=1000)
    sampling: Sampling = Field(default_factory=Sampling)
    concurrency: int = Field(1, ge=1, le=4096)
    timeout_s: float = Field(120.0, gt=0)
    prices: dict[str, Price] = Field(default_factory=dict)
    model_options: dict[str, ModelOptions] = Field(default_factory=dict)

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"ref": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _model_list(cls, value: Any) -> Any:
        if isinstance(value, list):  # a plain list of references: each is its own alias
            return {model_alias(str(v)): str(v) for v in value}
        return value

    def model_post_init(self, __context: Any) -> None:
        if not self.models:
            raise ValueError("models: give at least one model")
        if not self.tasks:
            raise ValueError("tasks: give at least one task")
        if not self.configs:  # default: one `single` configuration per model
            self.configs = [ConfigSpec(model=alias) for alias in self.models]
        for i, c in enumerate(self.configs):
            if c.model not in self.models:
                raise ValueError(
                    f"configs[{i}].model: '{c.model}' is not a model alias of this spec; "
                    f"aliases: {', '.join(self.models)}"
                )
        for field_name in ("prices", "model_options"):
            for alias in getattr(self, field_name):
                if alias not in self.models:
                    raise ValueError(
                        f"{field_name}: '{alias}' is not a model alias; "
                        f"aliases: {', '.join(self.models)}"
                    )


def model_alias(ref: str) -> str:
    """A short alias for a model reference: the bundled name, the file stem, or the served name."""
    if ref.startswith("openai:"):
        return ref.split("#", 1)[1] if "#" in ref else "openai"
    if ref.startswith("gguf:"):
        return Path(ref[5:]).stem
    return ref


class Config(BaseModel):
    """A configuration resolved against its spec: what runs, under a stable id and a name."""

    config_id: str
    name: str
    strategy: str
    models: dict[str, str]  # alias -> reference, only the models this configuration uses
    model: str  # the alias of the model that answers (single)
    sampling: Sampling
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def content(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "model": self.model,
            "models": self.models,
            "sampling": self.sampling.model_dump(),
            "model_options": self.model_options,
        }


def resolve_configs(spec: RunSpec) -> list[Config]:
    out: list[Config] = []
    names: set[str] = set()
    for c in spec.configs:
        sampling = spec.sampling.model_copy(
            update={
                k: v
                for k, v in {"temperature": c.temperature, "max_tokens": c.max_tokens}.items()
                if v is not None
            }
        )
        options = {
            a: spec.model_options[a].model_dump() for a in [c.model] if a in spec.model_options
        }
        content = {
            "strategy": c.strategy,
            "model": c.model,
            "models": {c.model: spec.models[c.model]},
            "sampling": sampling.model_dump(),
        }
        if options:  # only when given, so ids of runs without options stay as they were
            content["model_options"] = options
        config_id = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
        name = c.name or _derived_name(c, spec)
        if name in names:
            if c.name:
                raise UserError(f"configuration name '{name}' is used twice; names must be unique")
            n = 2
            while f"{name}-{n}" in names:
                n += 1
            name = f"{name}-{n}"
        names.add(name)
        out.append(
            Config(
                config_id=config_id,
                name=name,
                strategy=c.strategy,
                models={c.model: spec.models[c.model]},
                model=c.model,
                sampling=sampling,
                model_options=options,
            )
        )
    ids = [c.config_id for c in out]
    if len(set(ids)) != len(ids):
        raise UserError("two configurations are identical; remove the duplicate")
    return out


def _derived_name(c: ConfigSpec, spec: RunSpec) -> str:
    parts = [c.model]
    if c.temperature is not None and c.temperature != spec.sampling.temperature:
        parts.append(f"t{c.temperature:g}")
    if c.max_tokens is not None and c.max_tokens != spec.sampling.max_tokens:
        parts.append(f"max{c.max_tokens}")
    return "-".join(parts)


def _format_error(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "spec"
    if err["type"] == "extra_forbidden":
        parent = err["loc"][:-1]
        valid = _valid_fields(parent)
        return f"{source}: unknown field '{loc}'; valid fields here: {valid}"
    if err["type"] == "literal_error":
        return f"{source}: {loc}: {err['input']!r} is not valid; expected {err['ctx']['expected']}"
    if err["type"] == "missing":
        return f"{source}: missing required field '{loc}'"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":
        return f"{source}: {msg}"
    return f"{source}: {loc}: {msg} (got {err.get('input')!r})"


_NESTED: dict[str, type[BaseModel]] = {
    "sampling": Sampling,
    "tasks": TaskSpec,
    "configs": ConfigSpec,
    "prices": Price,
    "model_options": ModelOptions,
}


def _valid_fields(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = RunSpec
    for part in loc:
        if isinstance(part, str) and part in _NESTED:
            model = _NESTED[part]
    return ", ".join(model.model_fields)


def parse_spec(data: Any, source: str = "spec") -> RunSpec:
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: expected a mapping with fields {', '.join(RunSpec.model_fields)}"
        )
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(source, exc)) from None


def load_spec(path: str | Path) -> RunSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"spec file {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read spec file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, str(path))


def _absolute(ref: str, prefix: str) -> str:
    body = ref[len(prefix) :]
    head, sep, rest = body.partition(":") if prefix == "hf:" else (body, "", "")
    path = Path(head).expanduser()
    if prefix == "hf:" and not path.exists():
        return ref  # a dataset name in the local cache, not a path
    return f"{prefix}{path.resolve()}{sep}{rest}"


def with_absolute_paths(spec: RunSpec) -> RunSpec:
    """The spec with local file references made absolute, so `--resume` works from anywhere."""
    models = {
        alias: _absolute(ref, "gguf:") if ref.startswith("gguf:") else ref
        for alias, ref in spec.models.items()
    }
    tasks = []
    for t in spec.tasks:
        ref = t.ref
        for prefix in ("jsonl:", "hf:"):
            if ref.startswith(prefix):
                ref = _absolute(ref, prefix)
        tasks.append(t.model_copy(update={"ref": ref}))
    return spec.model_copy(update={"models": models, "tasks": tasks})
