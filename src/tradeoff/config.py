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


Num = float | list[float]
Int = int | list[int]

# Which parameters each strategy takes; a list value expands into one configuration per value.
STRATEGY_PARAMS: dict[str, set[str]] = {
    "single": {"model", "temperature", "max_tokens"},
    "vote": {"model", "temperature", "max_tokens", "n", "adaptive"},
    "budget": {"model", "temperature", "budget", "think_budget"},
    "cascade": {"models", "temperature", "max_tokens", "signal", "k", "threshold"},
    "switch": {"models", "max_tokens", "threshold", "threshold_low", "window"},
    "route": {"policy"},
}
STRATEGIES = list(STRATEGY_PARAMS)
_REQUIRED = {
    "single": ["model"],
    "vote": ["model"],
    "budget": ["model", "budget"],
    "cascade": ["models", "threshold"],
    "switch": ["models", "threshold"],
    "route": ["policy"],
}
_LISTABLE = [
    "temperature",
    "max_tokens",
    "n",
    "budget",
    "think_budget",
    "k",
    "threshold",
    "threshold_low",
    "window",
]


class ConfigSpec(BaseModel):
    """One entry of `configs:`. Which fields apply depends on `strategy` (STRATEGY_PARAMS)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["single", "vote", "budget", "cascade", "switch", "route"] = "single"
    name: str | None = None
    model: str | None = None
    models: list[str] | None = None
    temperature: Num | None = None
    max_tokens: Int | None = None
    n: Int | None = None
    adaptive: bool | None = None
    budget: Int | None = None
    think_budget: Int | None = None
    signal: Literal["agreement", "logprob", "entropy"] | None = None
    k: Int | None = None
    threshold: Num | None = None
    threshold_low: Num | None = None
    window: Int | None = None
    policy: str | None = None

    def model_post_init(self, __context: Any) -> None:
        allowed = STRATEGY_PARAMS[self.strategy] | {"strategy", "name"}
        given = {f for f in self.model_fields_set if getattr(self, f) is not None}
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(
                f"strategy '{self.strategy}' takes no {', '.join(extra)}; "
                f"it takes: {', '.join(sorted(STRATEGY_PARAMS[self.strategy]))}"
            )
        missing = [f for f in _REQUIRED[self.strategy] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"strategy '{self.strategy}' needs {', '.join(missing)}")
        if self.models is not None and len(self.models) != 2:
            raise ValueError(f"strategy '{self.strategy}' needs models: [SMALL, LARGE]")

    def expand(self) -> list[ConfigSpec]:
        """One spec per combination of list-valued parameters."""
        specs = [self]
        for field_name in _LISTABLE:
            out = []
            for spec in specs:
                value = getattr(spec, field_name)
                if isinstance(value, list):
                    out += [spec.model_copy(update={field_name: v}) for v in value]
                else:
                    out.append(spec)
            specs = out
        return specs


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(default_factory=dict)
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
        if not self.models and not any(c.strategy == "route" for c in self.configs):
            raise ValueError("models: give at least one model")
        if not self.tasks:
            raise ValueError("tasks: give at least one task")
        if not self.configs:  # default: one `single` configuration per model
            self.configs = [ConfigSpec(model=alias) for alias in self.models]
        for i, c in enumerate(self.configs):
            for alias in [c.model] if c.model else c.models or []:
                if alias not in self.models:
                    raise ValueError(
                        f"configs[{i}]: '{alias}' is not a model alias of this spec; "
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
    models: dict[str, str]  # alias -> reference, the models this configuration uses, in order
    model: str  # the alias that answers (single, vote, budget) or the first of `models`
    sampling: Sampling
    params: dict[str, Any] = Field(default_factory=dict)  # strategy parameters, scalars
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def aliases(self) -> list[str]:
        return list(self.models)

    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = {
            "strategy": self.strategy,
            "model": self.model,
            "models": self.models,
            "sampling": self.sampling.model_dump(),
        }
        if self.params:  # only when given, so ids of plain configurations stay as they were
            content["params"] = self.params
        if self.model_options:
            content["model_options"] = self.model_options
        return content


_DEFAULTS: dict[str, dict[str, Any]] = {
    "vote": {"n": 5, "adaptive": False},
    "budget": {},
    "cascade": {"signal": "logprob", "k": 3},
    "switch": {"window": 4},
}
# Strategies that sample several answers need temperature > 0; this is their default.
_SAMPLING_TEMPERATURE = 0.7


def policy_configs(path: str) -> list[Config]:
    """The configurations a policy file chooses between, as they were profiled."""
    from tradeoff.policy.fit import Policy

    policy = Policy.load(path)
    out = []
    for name, content in zip(policy.configs, policy.config_specs):
        if not content.get("models") or content.get("strategy") not in STRATEGY_PARAMS:
            raise UserError(
                f"policy {path}: configuration '{name}' cannot be run (imported outcomes have no "
                "model to call); route needs a policy fitted on profiled configurations"
            )
        out.append(
            Config(
                config_id=hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[
                    :12
                ],
                name=name,
                strategy=content["strategy"],
                models=content["models"],
                model=content["model"],
                sampling=Sampling(**content["sampling"]),
                params=content.get("params", {}),
                model_options=content.get("model_options", {}),
            )
        )
    return out


def _resolve_route(c: ConfigSpec) -> Config:
    path = str(Path(c.policy or "").expanduser().resolve())
    subs = policy_configs(path)
    models: dict[str, str] = {}
    for sub in subs:
        for alias, ref in sub.models.items():
            if models.setdefault(alias, ref) != ref:
                raise UserError(f"policy {path}: alias '{alias}' names two different models")
    draft = Config(
        config_id="",
        name="",
        strategy="route",
        models=models,
        model=subs[0].model,
        sampling=subs[0].sampling,
        params={"policy": path, "configs": [s.name for s in subs]},
    )
    content = json.dumps(draft.content(), sort_keys=True)
    draft.config_id = hashlib.sha256(content.encode()).hexdigest()[:12]
    return draft


def route_config(policy: str | Path, name: str) -> Config:
    """The `route` configuration that runs the policy file `policy`, under `name`."""
    config = _resolve_route(ConfigSpec(strategy="route", policy=str(policy)))
    config.name = name
    return config


def _resolve_one(c: ConfigSpec, spec: RunSpec) -> Config:
    if c.strategy == "route":
        return _resolve_route(c)
    aliases = [c.model] if c.model else list(c.models or [])
    overrides: dict[str, Any] = {}
    if c.temperature is not None:
        overrides["temperature"] = c.temperature
    if c.max_tokens is not None:
        overrides["max_tokens"] = c.max_tokens
    if c.budget is not None:
        overrides["max_tokens"] = c.budget
    sampling = spec.sampling.model_copy(update=overrides)
    params = dict(_DEFAULTS.get(c.strategy, {}))
    for key in (
        "n",
        "adaptive",
        "budget",
        "think_budget",
        "signal",
        "k",
        "threshold",
        "threshold_low",
        "window",
    ):
        value = getattr(c, key)
        if value is not None:
            params[key] = value
    sampled = c.strategy == "vote" or (c.strategy == "cascade" and params["signal"] == "agreement")
    if sampled:
        if c.temperature is None and sampling.temperature == 0.0:
            sampling = sampling.model_copy(update={"temperature": _SAMPLING_TEMPERATURE})
        if sampling.temperature == 0.0:
            raise UserError(
                f"strategy '{c.strategy}' samples several answers: it needs temperature > 0"
            )
    if c.strategy == "switch":
        params.setdefault("threshold_low", params["threshold"])
    options = {a: spec.model_options[a].model_dump() for a in aliases if a in spec.model_options}
    draft = Config(
        config_id="",
        name="",
        strategy=c.strategy,
        models={a: spec.models[a] for a in aliases},
        model=aliases[0],
        sampling=sampling,
        params=params,
        model_options=options,
    )
    content = json.dumps(draft.content(), sort_keys=True)
    draft.config_id = hashlib.sha256(content.encode()).hexdigest()[:12]
    return draft


def _derived_name(c: Config, spec: RunSpec) -> str:
    p = c.params
    if c.strategy == "vote":
        name = f"vote-n{p['n']}{'a' if p.get('adaptive') else ''}-{c.model}"
    elif c.strategy == "budget":
        name = f"budget{p['budget']}-{c.model}"
        if p.get("think_budget") is not None:
            name += f"-think{p['think_budget']}"
    elif c.strategy == "cascade":
        small, large = c.aliases
        name = f"cascade-{small}-{large}-{p['signal']}{p['threshold']:g}"
    elif c.strategy == "switch":
        small, large = c.aliases
        name = f"switch-{small}-{large}-t{p['threshold']:g}"
        if p["threshold_low"] != p["threshold"]:
            name += f"-{p['threshold_low']:g}"
    elif c.strategy == "route":
        name = f"route-{Path(p['policy']).stem}"
    else:
        name = c.model
    if c.strategy == "route":
        return name
    if c.strategy != "budget" and c.sampling.max_tokens != spec.sampling.max_tokens:
        name += f"-max{c.sampling.max_tokens}"
    if c.strategy not in ("vote",) and c.sampling.temperature != spec.sampling.temperature:
        name += f"-t{c.sampling.temperature:g}"
    return name


def resolve_configs(spec: RunSpec) -> list[Config]:
    """Every configuration of the spec, list-valued parameters expanded, named and hashed."""
    out: list[Config] = []
    names: set[str] = set()
    for entry in spec.configs:
        for c in entry.expand():
            config = _resolve_one(c, spec)
            name = c.name or _derived_name(config, spec)
            if entry.name and len(entry.expand()) > 1:
                name = f"{entry.name}-{_derived_name(config, spec)}"
            if name in names:
                if c.name and len(entry.expand()) == 1:
                    raise UserError(
                        f"configuration name '{name}' is used twice; names must be unique"
                    )
                n = 2
                while f"{name}-{n}" in names:
                    n += 1
                name = f"{name}-{n}"
            names.add(name)
            config.name = name
            out.append(config)
    ids = [c.config_id for c in out]
    if len(set(ids)) != len(ids):
        raise UserError("two configurations are identical; remove the duplicate")
    return out


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


def profile_spec(
    spec_file: Path | None,
    models: list[str] | None,
    tasks: list[str] | None,
    *,
    out: Path | None,
    resume: Path | None,
    overrides: dict[str, Any],
    sampling: dict[str, Any],
) -> RunSpec | None:
    """The spec `tradeoff profile` runs, from a spec file or --model/--task, with the flags given
    (`overrides`: limit, samples, concurrency, timeout_s; `sampling`: temperature, max_tokens,
    seed; None for a flag not given) laid over it. None with --resume DIR: the stored run's own
    spec is used, so nothing else may be given."""
    if resume is not None:
        if spec_file or models or tasks or out:
            raise UserError(
                "--resume DIR takes no spec, --model, --task or --out: the run's own spec is used"
            )
        if any(v is not None for v in [*overrides.values(), *sampling.values()]):
            raise UserError(
                "--resume DIR continues the stored run as specified; drop the other options"
            )
        return None
    if out is None:
        raise UserError("--out DIR is required: the run directory to create (or --resume DIR)")
    if spec_file is not None:
        if models or tasks:
            raise UserError("give either a spec file or --model/--task flags, not both")
        data = load_spec(spec_file).model_dump(mode="json")
    else:
        if not models or not tasks:
            raise UserError("give a spec file, or at least one --model and one --task")
        data = {"models": models, "tasks": tasks}
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["sampling"] = {
        **data.get("sampling", {}),
        **{k: v for k, v in sampling.items() if v is not None},
    }
    return parse_spec(data, str(spec_file) if spec_file else "flags")
