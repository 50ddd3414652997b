"""Run specs: YAML (or command-line flags) in, validated pydantic models out, clear errors.

A spec names models by alias, tasks by reference, and a list of configurations; each
configuration gets a stable id (a hash of what it runs) and a short readable name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tradeoff.errors import UserError
from tradeoff.paths import user_path

# A whole number as YAML writes one: `true` is not 1 (pydantic's lax mode would take it).
Int = Annotated[int, Strict()]


def _not_a_boolean(value: Any) -> Any:
    """A YAML `true` or `false` where a number belongs is refused as no number: pydantic's lax
    mode took it as 1.0 or 0.0. (Strict mode would refuse `1e-7` too, which YAML 1.1, PyYAML's,
    reads as text.)"""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


# A number of the spec: finite (NaN compares false to every threshold, inf never times out),
# and not a YAML boolean.
Finite = Annotated[float, BeforeValidator(_not_a_boolean), Field(allow_inf_nan=False)]
# A parameter that takes one value, or a list of values (one configuration each).
Num = Finite | list[Finite]
PositiveInt = Annotated[Int, Field(ge=1)]
PositiveInts = PositiveInt | list[PositiveInt]
# Answers drawn for one query (vote's n, cascade's k): at most as many as a spec's `samples`.
Draws = Annotated[Int, Field(le=1000)]  # at least 2: each strategy says why (n 1 is single)
Drawses = Draws | list[Draws]
Temperature = Annotated[Finite, Field(ge=0.0, le=5.0)]
Temperatures = Temperature | list[Temperature]
MaxTokens = Annotated[Int, Field(ge=1, le=32768)]
# How a record's requests' seeds step from the run's (`strategies.context.request_seed`), and
# the largest seed: 2**31 - 1, which every engine takes.
SAMPLE_STRIDE, DRAW_STRIDE = 2_000_029, 1_000_003
SEED_MAX = 2**31 - 1


def _two_different(models: list[str]) -> list[str]:
    if len(models) == 2 and models[0] == models[1]:
        raise ValueError("needs two different models, [SMALL, LARGE]")
    return models


# cascade's and switch's models: a small one that hands over to a large one
SmallLarge = Annotated[
    list[str],
    Field(min_length=2, max_length=2, description="[SMALL, LARGE]"),
    AfterValidator(_two_different),
]
MaxTokenses = MaxTokens | list[MaxTokens]


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: Temperature = 0.0
    max_tokens: MaxTokens = 64
    # At least 0: llama.cpp takes a negative seed (-1) as "draw one at random", which no run
    # could repeat.
    seed: Annotated[Int, Field(ge=0, le=SEED_MAX)] = 0


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

    input: Finite = Field(0.0, ge=0)
    output: Finite = Field(0.0, ge=0)
    per_hour: Finite | None = Field(None, ge=0)


class ModelOptions(BaseModel):
    """Per-model engine options. `extra_body`: fields added to every request to an `openai:`
    server (e.g. llama.cpp's `repeat_penalty`, vLLM's `top_k`), replacing tradeoff's own; one
    given as null is left out of the request."""

    model_config = ConfigDict(extra="forbid")

    extra_body: dict[str, Any] = Field(default_factory=dict)


# Strategies that sample several answers need temperature > 0; this is their default.
SAMPLING_TEMPERATURE = 0.7


class RayExecutor(BaseModel):
    """Where a run's work goes with `executor: {ray: ...}` (or `--ray`): the cluster's address
    ('auto': the one `ray start` began on this machine; 'local': a new one for this run; or
    HOST:PORT), and how many actors (workers) each model group gets."""

    model_config = ConfigDict(extra="forbid")

    address: str = "auto"
    workers: Int = Field(1, ge=1, le=4096)


class Executor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ray: RayExecutor | None = None


# What a model's worker asks of a Ray node: num_cpus, num_gpus, memory (bytes), or a custom
# resource a node was started with (`ray start --resources '{"big": 1}'`).
Resources = dict[str, Annotated[float, Field(ge=0)]]
# The keywords a Ray actor asks for a node's own resources by, and the node's names for them.
NODE_RESOURCES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


# Fields every configuration entry may have whatever its strategy, and the sampling fields a
# strategy may override; the rest of an entry are its strategy's own parameters.
_ENTRY_FIELDS = {"strategy", "name", "model", "models", "temperature", "max_tokens"}


@dataclass(frozen=True)
class Report:
    """Something a strategy's outcome says (a key of `Outcome.extra`) that a served answer
    reports: an `x-tradeoff-*` header, and a Prometheus metric by served model.
    kind "flag" counts answers where it is true, "count" adds it up, "label" counts answers by
    its value (under the label `label`); "seconds" (a key ending `_s`) is a duration: a header
    in milliseconds (`decision_s`: `x-tradeoff-decision-ms`) and a histogram."""

    key: str
    kind: Literal["flag", "count", "label", "seconds"]
    metric: str
    help: str
    label: str = ""


class StrategyParams(BaseModel):
    """One entry of a spec's `configs:`: a strategy and its parameters.

    Each strategy declares its own subclass next to its `run` (see tradeoff.strategies), tagged
    by `strategy: Literal[NAME]`: its fields (required ones without a default), their bounds and
    defaults, which of them expand from lists, its derived name, the batch sizes it asks of a
    model, and whether it streams. Fields left unset are not part of the configuration.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: str
    name: str | None = None

    # Parameters whose list values expand into one configuration per value, in this order.
    listable: ClassVar[tuple[str, ...]] = ()
    # Served answers stream the tokens as they are generated (else the answer once decided).
    streams: ClassVar[bool] = False
    # What a served answer reports of the outcome's `extra` (headers, /metrics).
    reports: ClassVar[tuple[Report, ...]] = ()
    # The derived name shows a max_tokens, a temperature that differs from the spec's sampling.
    names_max_tokens: ClassVar[bool] = True
    names_temperature: ClassVar[bool] = True
    # The configuration's max_tokens is what it is (`budget`): a served request may ask for
    # fewer tokens, never more.
    caps_max_tokens: ClassVar[bool] = False

    def aliases(self) -> list[str]:
        """The model aliases this configuration uses; the first one answers."""
        return []

    def strategy_params(self) -> dict[str, Any]:
        """The strategy's own parameters, as stored and hashed (unset ones left out)."""
        return self.model_dump(exclude=_ENTRY_FIELDS, exclude_none=True)

    def samples_several(self) -> bool:
        """Whether it draws several answers per query (so needs temperature > 0)."""
        return False

    def sampling(self, base: Sampling) -> Sampling:
        """The spec's sampling with this entry's overrides."""
        overrides = self.model_dump(include={"temperature", "max_tokens"}, exclude_none=True)
        sampling = base.model_copy(update=overrides)
        if self.samples_several():
            if "temperature" not in overrides and sampling.temperature == 0.0:
                sampling = sampling.model_copy(update={"temperature": SAMPLING_TEMPERATURE})
            if sampling.temperature == 0.0:
                raise UserError(
                    f"strategy '{self.strategy}' samples several answers: it needs temperature > 0"
                )
        return sampling

    def base_name(self, config: Config) -> str:
        """The name of a configuration that gives none: the strategy and what sets it apart."""
        return f"{self.strategy}-{'-'.join(config.aliases)}"

    @classmethod
    def batch_sizes(cls, config: Config, alias: str) -> set[int]:
        """The batch sizes `config` asks of model `alias` (besides 1)."""
        return set()

    @classmethod
    def choices(cls, config: Config) -> list[Config]:
        """The configurations a query to `config` may run as: itself, or a route's policy's
        (each with its own max_tokens and model options)."""
        return [config]

    @classmethod
    def prepare(cls, config: Config) -> None:
        """Load what runs of `config` need once per process, beside its models (a route's
        policy), before the first request, so that no request's time includes it."""

    def expand(self) -> list[StrategyParams]:
        """One entry per combination of list-valued parameters."""
        entries: list[StrategyParams] = [self]
        for field_name in self.listable:
            out: list[StrategyParams] = []
            for entry in entries:
                value = getattr(entry, field_name)
                if value == []:
                    raise UserError(
                        f"{self.strategy}: {field_name}: [] gives no configuration; give one "
                        "value, or a list of the values to try"
                    )
                if isinstance(value, list):
                    out += [entry.model_copy(update={field_name: v}) for v in value]
                else:
                    out.append(entry)
            entries = out
        return entries

    def resolve(self, spec: RunSpec) -> Config:
        """The configuration this (expanded) entry runs, under its id; named by the caller."""
        aliases = self.aliases()
        options = {
            a: spec.model_options[a].model_dump() for a in aliases if a in spec.model_options
        }
        return with_id(
            Config(
                config_id="",
                name="",
                strategy=self.strategy,
                models={a: spec.models[a] for a in aliases},
                model=aliases[0],
                sampling=self.sampling(spec.sampling),
                params=self.strategy_params(),
                model_options=options,
            )
        )

    def derived_name(self, config: Config, spec: RunSpec) -> str:
        name = self.base_name(config)
        if self.names_max_tokens and config.sampling.max_tokens != spec.sampling.max_tokens:
            name += f"-max{config.sampling.max_tokens}"
        if self.names_temperature and config.sampling.temperature != spec.sampling.temperature:
            name += f"-t{config.sampling.temperature:g}"
        return name


def with_id(config: Config) -> Config:
    """`config` with its id: a hash of what it runs (a route's: its policy file's path and
    content hash; `same_but_where` tells a policy moved or copied)."""
    content = json.dumps(config.content(), sort_keys=True)
    config.config_id = hashlib.sha256(content.encode()).hexdigest()[:12]
    return config


def same_but_where(stored: dict[str, Any], config: Config) -> bool:
    """Whether `stored` (a configuration's content as a run stored it) runs what `config`
    runs, but for where a route's policy file sits: the same file moved or copied (its content
    hash the same) is the same configuration, though its id, which hashes the path, is not."""
    now = config.content()
    if "policy_sha256" not in config.params or not isinstance(stored.get("params"), dict):
        return stored == now
    unplaced = [{**c, "params": {k: v for k, v in c["params"].items() if k != "policy"}}
                for c in (stored, now)]  # fmt: skip
    return unplaced[0] == unplaced[1]


def _entries(value: Any) -> Any:
    """Configuration entries as their strategies' params (tradeoff.strategies' registry).
    A missing `strategy` is `single`; a null field is an unset one (stored specs have them)."""
    from tradeoff.strategies import params_adapter

    if not isinstance(value, list):
        return value
    entries = [
        {"strategy": "single", **{k: v for k, v in e.items() if v is not None}}
        if isinstance(e, dict)
        else e
        for e in value
    ]
    return params_adapter().validate_python(entries)


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(default_factory=dict)
    tasks: list[TaskSpec] = Field(default_factory=list)  # none in a spec that is only served
    configs: list[StrategyParams] = Field(default_factory=list)
    limit: Int | None = Field(None, ge=1)
    samples: Int = Field(1, ge=1, le=1000)
    sampling: Sampling = Field(default_factory=Sampling)
    concurrency: Int = Field(1, ge=1, le=4096)
    # Processes that dispatch requests to models behind servers (openai:), each with its own
    # event loop, connections and share of `concurrency` (tradeoff.dispatch). "auto": one per 32
    # requests in flight, at most one per core, for runs of 1,000 requests or more.
    processes: Literal["auto"] | Annotated[Int, Field(ge=1, le=256)] = "auto"
    # openai: seconds to wait for a connection and for each piece of an answer (not the whole
    # answer: a long one that keeps streaming is not cut; tradeoff.engines.openai)
    timeout_s: Finite = Field(120.0, gt=0)
    prices: dict[str, Price] = Field(default_factory=dict)
    model_options: dict[str, ModelOptions] = Field(default_factory=dict)
    # Per model alias, what its Ray worker asks of a node (given in `models:` as
    # {NAME: {ref: REF, resources: {...}}}); read only on Ray (tradeoff.ray_run).
    resources: dict[str, Resources] = Field(default_factory=dict)
    executor: Executor | None = None

    @model_validator(mode="before")
    @classmethod
    def _model_entries(cls, value: Any) -> Any:
        """`models: {NAME: {ref: REF, resources: {...}}}`: the reference stays under `models`,
        the resources go under `resources`, so that they never change a configuration's id."""
        models = value.get("models") if isinstance(value, dict) else None
        if not isinstance(models, dict) or not any(isinstance(v, dict) for v in models.values()):
            return value
        given = value.get("resources")
        refs, resources = {}, dict(given) if isinstance(given, dict) else {}
        for alias, entry in models.items():
            if isinstance(entry, dict):
                unknown = set(entry) - {"ref", "resources"}
                if "ref" not in entry or unknown:
                    raise ValueError(
                        f"models: {alias}: give {{ref: REF, resources: {{...}}}}"
                        + (f", not {', '.join(sorted(unknown))}" if unknown else "")
                    )
                refs[alias] = entry["ref"]
                if entry.get("resources") is not None:
                    resources[alias] = entry["resources"]
            else:
                refs[alias] = entry
        if given is not None and not isinstance(given, dict):
            return {**value, "models": refs}  # field validation asks for a mapping
        return {**value, "models": refs, "resources": resources}

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"ref": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("tasks")
    @classmethod
    def _tasks_once(cls, value: list[TaskSpec]) -> list[TaskSpec]:
        # A task's items are keyed by its reference: one given twice would run its requests
        # twice and keep one record of each. Compared as stored, paths made absolute: one file
        # named two ways ("s.jsonl", "./s.jsonl") ran once, with one entry's scorer lost.
        from tradeoff.tasks import task_name

        seen: set[str] = set()
        for task in value:
            ref = task_name(_absolute_task(task.ref))  # a synthetic: one canonically
            # The reference names the task, as given and as stored (a relative path's directory
            # may be named in another encoding).
            for given in dict.fromkeys((task.ref, ref)):
                if problem := text_problem(given):
                    raise ValueError(f"tasks: {given!r} {problem}")
            if ref in seen:
                raise ValueError(f"tasks: {task.ref!r} is given twice; give each task once")
            seen.add(ref)
        return value

    @field_validator("prices", mode="before")
    @classmethod
    def _prices_with_units(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for alias, price in value.items():
                if not isinstance(price, dict) or not price:  # {} priced every query at 0
                    raise ValueError(
                        f"prices: {alias}: {price!r} has no unit; give {{input: USD, output: "
                        "USD} per million tokens, or {per_hour: USD} for the hardware"
                    )
                if len({"input", "output"} & set(price)) == 1:  # else one side is free unsaid
                    missing = "output" if "input" in price else "input"
                    raise ValueError(
                        f"prices: {alias}: {missing} is missing; give both input and output in "
                        "USD per million tokens (0 for a side that is free)"
                    )
        return value

    @field_validator("resources")
    @classmethod
    def _resource_keywords(cls, value: dict[str, Resources]) -> dict[str, Resources]:
        # A node's CPUs are "CPU" to Ray (and in tradeoff's messages), but an actor that asks
        # for them as such is refused: it must say num_cpus.
        for alias, asked in value.items():
            for keyword, name in NODE_RESOURCES.items():
                if name != keyword and name in asked:
                    raise ValueError(
                        f"resources: {alias}: give {keyword}: {asked[name]:g}, not "
                        f"{name}: {asked[name]:g}; a model asks for num_cpus, num_gpus, memory "
                        "(bytes), or a custom resource a node was started with"
                    )
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _model_list(cls, value: Any) -> Any:
        if isinstance(value, list):  # a plain list of references: each is its own alias
            aliases: dict[str, str] = {}
            for i, ref in enumerate(value):
                if not isinstance(ref, str):  # its Python text was taken for a model's name
                    raise ValueError(
                        f"models[{i}]: give a model reference as text, not {ref!r}"
                        + (
                            "; to give a model resources, name it: models: {NAME: {ref: REF, "
                            "resources: {...}}}"
                            if isinstance(ref, dict)
                            else ""
                        )
                    )
                alias = model_alias(ref)
                if aliases.get(alias) == ref:
                    raise ValueError(f"models: {ref!r} is given twice")
                if alias in aliases:
                    raise ValueError(
                        f"models: {aliases[alias]!r} and {ref!r} share a name; name each in a "
                        "spec (models: {NAME: REF})"
                    )
                aliases[alias] = ref
            return aliases
        return value

    @field_validator("models")
    @classmethod
    def _named(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, ref in value.items():
            if not alias.strip():
                raise ValueError(f"models: the alias {alias!r} is empty; name each model")
            if problem := name_problem(alias):  # it names the configurations derived from it
                raise ValueError(f"models: the alias {alias!r} {problem}")
            if not ref.strip():
                raise ValueError(f"models: {alias}: the reference is empty; give a model")
        return value

    @field_validator("configs", mode="before")
    @classmethod
    def _configs(cls, value: Any) -> Any:
        return _entries(value)

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> Any:
        number = isinstance(value, int) and not isinstance(value, bool)  # `true` is no 1
        if value != "auto" and not (number and 1 <= value <= 256):
            raise ValueError(f"processes: give auto or a number from 1 to 256, not {value!r}")
        return value

    @field_serializer("configs")
    def _dump_configs(self, configs: list[StrategyParams]) -> list[dict[str, Any]]:
        return [c.model_dump(mode="json", exclude_none=True) for c in configs]

    def model_post_init(self, __context: Any) -> None:
        from tradeoff.strategies.single import Params as Single

        if not self.models and not any(c.strategy == "route" for c in self.configs):
            raise ValueError("models: give at least one model")
        if not self.configs:  # default: one `single` configuration per model
            self.configs = [Single(strategy="single", model=alias) for alias in self.models]
        routed = any(c.strategy == "route" for c in self.configs)

        def from_policy(use: str) -> str:
            """The hint where a route's models were taken for the spec's."""
            return (
                " (a route configuration's models come from its policy: name them under "
                f"models: too, by the same aliases, to {use})"
                if routed
                else ""
            )

        for i, c in enumerate(self.configs):
            if c.name is not None and (problem := name_problem(c.name)):
                raise ValueError(f"configs[{i}].name: {c.name!r} {problem}")
            for alias in c.aliases():
                if alias not in self.models:
                    raise ValueError(
                        f"configs[{i}]: '{alias}' is not a model alias of this spec; "
                        f"aliases: {', '.join(self.models) or 'none'}"
                        + from_policy("use them in other configurations")
                    )
        for field_name in ("prices", "model_options", "resources"):
            for alias in getattr(self, field_name):
                if alias not in self.models:
                    raise ValueError(
                        f"{field_name}: '{alias}' is not a model alias; aliases: "
                        f"{', '.join(self.models) or 'none'}"
                        + from_policy(f"give them {field_name}")
                    )


def name_problem(name: str) -> str | None:
    """What keeps `name` from naming a configuration: every table shows it on one line, and
    --configs takes names separated by commas."""
    if not name.strip():
        return "is blank; give a name, or leave name out for one derived from the configuration"
    if name != name.strip():
        return "begins or ends with a space, which --configs leaves out; give it without"
    if "," in name:
        return "holds a comma, which separates names in --configs; give a name without one"
    return text_problem(name)


def text_problem(name: str) -> str | None:
    """What keeps a configuration's or a task's `name` from its one line in every table, and from
    a page's filter menu, which reads a carriage return as a newline: a control character. Or
    from being stored at all: a byte of the command line (or a path) that is not UTF-8, which
    Python holds as a lone surrogate that no UTF-8 file or database can write."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character (a newline, a tab); give a name on one line"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8 text (a byte of another encoding, such as Latin-1); give it in UTF-8"
    return None


def model_alias(ref: str) -> str:
    """A short alias for a model reference: the bundled name, the file stem, or the served name."""
    if ref.startswith("openai:"):
        return ref.partition("#")[2] or "openai"  # none: its loader says what is missing
    if ref.startswith("gguf:"):
        return Path(ref[5:].partition("?")[0]).stem or "gguf"  # no path: its loader says so
    return ref.partition("?")[0] if not ref.startswith("torch:") else ref


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


def policy_configs(path: str) -> list[Config]:
    """The configurations a policy file chooses between, as they were profiled."""
    from tradeoff.policy.fit import ROUTES_ITSELF, Policy

    policy = Policy.load(path)
    out = []
    for name, content in zip(policy.configs, policy.config_specs):
        if content.get("strategy") == "route":
            raise UserError(f"policy {path}: configuration '{name}' {ROUTES_ITSELF}")
        if not content.get("models"):
            raise UserError(
                f"policy {path}: configuration '{name}' cannot be run (imported outcomes have no "
                "model to call); route needs a policy fitted on profiled configurations"
            )
        try:
            _check_params(content)
            config = Config(
                config_id="",
                name=name,
                strategy=content["strategy"],
                models=content["models"],
                model=content["model"],
                sampling=Sampling(**content["sampling"]),
                params=content.get("params", {}),
                model_options=content.get("model_options", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError too
            why = (
                f"no {exc}"
                if isinstance(exc, KeyError)
                else _field_error(exc.errors()[0])
                if isinstance(exc, ValidationError)
                else _first_line(exc)
            )
            raise UserError(
                f"policy {path}: configuration '{name}' is not one this tradeoff can run ({why}); "
                "fit the policy again (`tradeoff policy fit`)"
            ) from None
        out.append(with_id(config))
    return out


def _check_params(content: dict[str, Any]) -> None:
    """A configuration read from a file (a policy's) holds what its strategy takes, as a spec's
    entry would: a known strategy, an answering model among its models, valid parameters (a
    vote of 1, a cascade's unknown signal were served as they came). ValueError if not."""
    from tradeoff.strategies import STRATEGIES

    strategy, models, model = content.get("strategy"), content["models"], content.get("model")
    params_of = content.get("params") or {}
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if not isinstance(models, dict) or model not in models:
        raise ValueError(f"its model {model!r} is not one of its models")
    if strategy == "route":  # its parameters are what `resolve` made of the policy it names
        return
    params = STRATEGIES[strategy].params
    answering = {"models": list(models)} if "models" in params.model_fields else {"model": model}
    validated = params.model_validate({"strategy": strategy, **params_of, **answering})
    if validated.samples_several() and not (content.get("sampling") or {}).get("temperature"):
        raise ValueError(f"strategy '{strategy}' samples several answers: it needs temperature > 0")


def _field_error(err: Any) -> str:
    """pydantic's first error as one phrase: the field and what is wrong with it."""
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{where}: no such parameter"
    if err["type"] == "value_error":  # says itself what is wrong
        message = err["msg"].removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return f"{where}: {_plainly(err['msg'])}"


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3])[:160] if lines else type(exc).__name__


def route_config(policy: str | Path, name: str) -> Config:
    """The `route` configuration that runs the policy file `policy`, under `name`."""
    from tradeoff.strategies.route import Params as Route

    config = Route(strategy="route", policy=str(policy)).resolve()
    config.name = name
    return config


def resolve_configs(spec: RunSpec) -> list[Config]:
    """Every configuration of the spec, list-valued parameters expanded, named and hashed."""
    out: list[Config] = []
    names: set[str] = set()
    for i, entry in enumerate(spec.configs):
        expanded = entry.expand()
        for c in expanded:
            try:
                config = c.resolve(spec)
            except UserError as exc:  # e.g. a vote at temperature 0: which entry, as parse does
                message = str(exc)
                if message.startswith(f"strategy '{c.strategy}'"):
                    raise UserError(f"configs[{i}]: {message}") from None
                raise
            name = c.name or c.derived_name(config, spec)
            if entry.name and len(expanded) > 1:
                name = f"{entry.name}-{c.derived_name(config, spec)}"
            if name in names:
                if c.name and len(expanded) == 1:
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
    seen: dict[str, str] = {}
    for config in out:
        if config.config_id in seen:
            raise UserError(
                f"configurations '{seen[config.config_id]}' and '{config.name}' are identical "
                "(the same strategy, models and settings); remove the duplicate"
            )
        seen[config.config_id] = config.name
    return out


def first_error(errors: list[Any]) -> Any:
    """The error to report. What an entry takes matters before what it lacks: a field it takes
    no part in comes first. A list given where one value or a list is taken: what is wrong with a
    member, not that the list is no single value."""
    if extra := next((e for e in errors if e["type"] == "extra_forbidden"), None):
        return extra
    first = errors[0]
    if isinstance(first.get("input"), list):
        field = first["loc"][:-1]
        for e in errors:
            if e["loc"][: len(field)] == field and str(e["loc"][len(field)]).startswith("list["):
                return e
    return first


def _format_error(source: str, exc: ValidationError, flags: Collection[str] = ()) -> str:
    err = first_error(exc.errors())
    loc = err["loc"]
    where = ".".join(str(p) for p in loc) or "spec"
    # A field a flag set is named as its flag, not blamed on the spec file.
    flag = FLAG_NAMES.get(where) if source == FLAGS_SOURCE or where in flags else None
    if err["type"] == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        tag = err.get("ctx", {}).get("tag")
        entry = f"configs[{loc[1]}]" if len(loc) == 2 else where
        return f"{source}: {entry}.strategy: {tag!r} is not a strategy; strategies: {expected}"
    if len(loc) >= 4 and loc[0] == "configs" and isinstance(loc[1], int):
        return f"{source}: {_entry_error(err)}"
    if err["type"] == "extra_forbidden":
        parent = loc[:-1]
        return f"{source}: unknown field '{where}'; valid fields here: {_valid_fields(parent)}"
    if err["type"] == "literal_error":
        expected = err["ctx"]["expected"]
        return f"{source}: {where}: {err['input']!r} is not valid; expected {expected}"
    if err["type"] == "missing":
        return f"{source}: missing required field '{where}'"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and len(loc) == 3 and loc[0] == "configs":
        return f"{source}: configs[{loc[1]}]: strategy '{loc[2]}': {msg}"  # the entry's check
    if err["type"] == "value_error":
        if flag:  # the field's own check, which names the field first ("processes: ...")
            return flag + msg.removeprefix(where)
        return msg if source == FLAGS_SOURCE else f"{source}: {msg}"
    if err["type"] == "string_type" and isinstance(err.get("input"), bool):
        return (
            f"{source}: {where} must be a string (got {err['input']}: YAML reads an unquoted "
            "on, off, yes or no as true or false; quote it)"
        )
    if flag:
        return f"{flag} {_plainly(msg)} (got {err.get('input')!r})"
    return f"{source}: {where} {_plainly(msg)} (got {err.get('input')!r})"


# What `profile_spec` calls the spec it builds from flags, and the flag that sets each field.
FLAGS_SOURCE = "flags"
FLAG_NAMES = {
    "limit": "--limit",
    "samples": "--samples",
    "concurrency": "--concurrency",
    "processes": "--processes",
    "timeout_s": "--timeout",
    "sampling.temperature": "--temperature",
    "sampling.max_tokens": "--max-tokens",
    "sampling.seed": "--seed",
}

_BOUNDS = {
    "Input should be greater than or equal to": "must be at least",
    "Input should be less than or equal to": "must be at most",
    "Input should be greater than": "must be greater than",
    "Input should be less than": "must be less than",
    "Input should be": "must be",
}


def _plainly(msg: str) -> str:
    """pydantic's 'Input should be greater than or equal to 1' as 'must be at least 1'."""
    if msg.startswith("Input should be a valid dictionary"):  # "... or instance of Sampling"
        return "must be a mapping of its fields (name: value)"
    for theirs, ours in _BOUNDS.items():
        if msg.startswith(theirs):
            return ours + msg.removeprefix(theirs)
    return f"is not valid: {msg}"


_TYPE_TAGS = ("float", "int", "str", "bool")  # a union's plain members, named in its locations


def _entry_error(err: Any) -> str:
    """An error in configuration entry `configs[i]`, located at (configs, i, STRATEGY, FIELD...),
    said in the strategy's terms."""
    from tradeoff.strategies import STRATEGIES

    _, i, strategy, field, *rest = err["loc"]
    params = STRATEGIES[str(strategy)].params
    takes = ", ".join(sorted(f for f in params.model_fields if f not in ("strategy", "name")))
    prefix = f"configs[{i}]: strategy '{strategy}'"
    if err["type"] == "extra_forbidden":
        return f"{prefix} takes no {field}; it takes: {takes}"
    info = params.model_fields.get(str(field))
    shape = f": {info.description}" if info is not None and info.description else ""
    if err["type"] == "missing":
        return f"{prefix} needs {field}{shape}"
    # Union members name themselves in the location ("constrained-int"): not the user's words.
    where = str(field) + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}"
        for p in rest
        if not any(c in str(p) for c in "-[(") and p not in _TYPE_TAGS
    )
    got = f" (got {err.get('input')!r})"
    if shape and err["type"] != "value_error":  # a value_error says itself what is wrong
        return f"{prefix} needs {field}{shape}{got}"
    if err["type"] == "value_error":
        return f"{prefix}: {where}: {err['msg'].removeprefix('Value error, ')}{got}"
    return f"{prefix}: {where} {_plainly(err['msg'])}{got}"


_NESTED: dict[str, type[BaseModel]] = {
    "sampling": Sampling,
    "tasks": TaskSpec,
    "prices": Price,
    "model_options": ModelOptions,
    "executor": Executor,
}


def _valid_fields(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = RunSpec
    for part in loc:
        if model is Executor and part == "ray":
            model = RayExecutor
        elif isinstance(part, str) and part in _NESTED:
            model = _NESTED[part]
    return ", ".join(model.model_fields)


def shown_spec(value: Any) -> Any:
    """A stored spec (or any part of it) as a page shows it: each URL in it with its password
    hidden (`openai:http://user:***@host/v1#m`), as an API key is never stored at all."""
    from tradeoff.engines import hide_password

    if isinstance(value, str):
        return hide_password(value)
    if isinstance(value, dict):
        return {key: shown_spec(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shown_spec(item) for item in value]
    return value


def parse_spec(data: Any, source: str = "spec", flags: Collection[str] = ()) -> RunSpec:
    """The spec `data` read from `source`; `flags`: the fields (as `FLAG_NAMES` keys) that
    command-line flags set, named as those flags in an error."""
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: expected a mapping with fields {', '.join(RunSpec.model_fields)}"
        )
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(source, exc, flags)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last,
    so `models: {a: x, a: y}` would drop model x without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if (
                key_node.tag == "tag:yaml.org,2002:merge"
            ):  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> RunSpec:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"spec file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"spec file {path} is a directory; give a YAML file") from None
    except OSError as exc:
        raise UserError(f"cannot read spec file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"spec file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no object tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", exc))
        if "'?'" in problem:  # in {...} or [...], YAML reads `?` as a key marker, not text
            problem += (
                "; inside {...} or [...], quote a reference with ?OPTIONS, e.g. "
                "'smollm2-135m?threads=1'"
            )
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_spec(data, str(path))


# The tasks that read a local file (`hf:`: a saved dataset's directory) named in their reference.
FILE_TASKS = ("jsonl:", "hf:")


def split_path(ref: str, prefix: str) -> tuple[str, str, str]:
    """A file reference's path, and what follows it: (path, separator, the rest); `hf:PATH:SPLIT`
    and `gguf:PATH?OPTIONS`, `jsonl:PATH?OPTIONS`."""
    return ref[len(prefix) :].partition(":" if prefix == "hf:" else "?")


def _absolute(ref: str, prefix: str) -> str:
    head, sep, rest = split_path(ref, prefix)
    if not head.strip():
        return ref  # no path: its loader says what is missing
    path = user_path(head)
    if prefix == "hf:" and not path.exists():
        return ref  # a dataset name in the local cache, not a path
    return f"{prefix}{path.resolve()}{sep}{rest}"


def with_absolute_paths(spec: RunSpec) -> RunSpec:
    """The spec with local file references made absolute, so `--resume` works from anywhere."""
    from tradeoff.strategies.route import Params as Route

    models = {alias: _absolute_model(ref) for alias, ref in spec.models.items()}
    tasks = [t.model_copy(update={"ref": _absolute_task(t.ref)}) for t in spec.tasks]
    configs = [
        c.model_copy(update={"policy": str(user_path(c.policy).resolve())})
        if isinstance(c, Route)
        else c
        for c in spec.configs
    ]
    return spec.model_copy(update={"models": models, "tasks": tasks, "configs": configs})


def with_absolute_models(content: dict[str, Any]) -> dict[str, Any]:
    """A configuration's stored content with its models' paths made absolute, here, as
    `with_absolute_paths` makes them (a server before it stored them as written)."""
    models = content.get("models")
    if not isinstance(models, dict):
        return content
    return {**content, "models": {a: _absolute_model(r) for a, r in models.items()}}


def _absolute_model(ref: str) -> str:
    """A model reference as stored: a gguf: file's path, or a torch: config's or directory's,
    made absolute; a shipped torch config's name (which wins over a path, as the engine reads
    it) and a path that does not exist (its loader says so, as given) stay as written."""
    from tradeoff.engines.hf_config import shipped_configs

    if ref.startswith("gguf:"):
        return _absolute(ref, "gguf:")
    if not ref.startswith("torch:"):
        return ref
    head = split_path(ref, "torch:")[0]
    if head in shipped_configs() or not user_path(head).exists():
        return ref
    return _absolute(ref, "torch:")


def _absolute_task(ref: str) -> str:
    """A task reference as stored: a local file's path made absolute (a bare path ending in
    .jsonl is a jsonl: task, made absolute as one)."""
    from tradeoff.tasks import task_name

    ref = ref if ref.startswith("synthetic:") else task_name(ref)
    for prefix in FILE_TASKS:
        if ref.startswith(prefix):
            ref = _absolute(ref, prefix)
    return ref


# The task flags that name a data file's fields: only the jsonl: and hf: tasks of --task take them.
FIELD_FLAGS = ("prompt_field", "answer_field", "id_field")


def _task_entries(tasks: list[str], given_fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's task entries of --task, each with the task flags given that apply to it: the
    field flags to the data files' tasks, refused where --task names none."""
    from tradeoff.tasks import task_name

    files = {t for t in tasks if task_name(t).startswith(FILE_TASKS)}
    fields = [k for k in FIELD_FLAGS if k in given_fields]
    if fields and not files:
        flags = ", ".join("--" + k.replace("_", "-") for k in fields)
        raise UserError(
            f"{flags} {'applies' if len(fields) == 1 else 'apply'} only to jsonl: and hf: "
            f"tasks, and no --task is one ({', '.join(tasks)})"
        )
    return [
        {"ref": t, **{k: v for k, v in given_fields.items() if t in files or k not in fields}}
        for t in tasks
    ]


def profile_spec(
    spec_file: Path | None,
    models: list[str] | None,
    tasks: list[str] | None,
    *,
    out: Path | None,
    resume: Path | None,
    overrides: dict[str, Any],
    sampling: dict[str, Any],
    task_fields: dict[str, Any] | None = None,
) -> RunSpec | None:
    """The spec `tradeoff profile` runs, from a spec file or --model/--task, with the flags given
    (`overrides`: limit, samples, concurrency, processes, timeout_s; `sampling`: temperature,
    max_tokens, seed; None for a flag not given) laid over it, a bad value named as its flag.
    None with --resume DIR: the stored run's own spec is used, so nothing else may be given."""
    if resume is not None:
        if spec_file or models or tasks or out:
            raise UserError(
                "--resume DIR takes no spec, --model, --task or --out: the run's own spec is used"
            )
        fields = (task_fields or {}).values()
        if any(v is not None for v in [*overrides.values(), *sampling.values(), *fields]):
            raise UserError(
                "--resume DIR continues the stored run as specified; drop the other options"
            )
        return None
    if out is None:
        raise UserError("--out DIR is required: the run directory to create (or --resume DIR)")
    given_fields = {k: v for k, v in (task_fields or {}).items() if v is not None}
    if spec_file is not None:
        if models or tasks:
            raise UserError("give either a spec file or --model/--task flags, not both")
        if given_fields:
            flags = ", ".join("--" + k.replace("_", "-") for k in given_fields)
            raise UserError(f"{flags} go with --task; in a spec file, set them on the task entry")
        data = load_spec(spec_file).model_dump(mode="json")
    else:
        if not models or not tasks:
            raise UserError("give a spec file, or at least one --model and one --task")
        data = {"models": models, "tasks": _task_entries(tasks, given_fields)}
    given = {k: v for k, v in overrides.items() if v is not None}
    given_sampling = {k: v for k, v in sampling.items() if v is not None}
    data.update(given)
    data["sampling"] = {**data.get("sampling", {}), **given_sampling}
    flagged = [*given, *(f"sampling.{k}" for k in given_sampling)]
    return parse_spec(data, str(spec_file) if spec_file else FLAGS_SOURCE, flagged)
