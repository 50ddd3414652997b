"""Run specs: validation errors name the field and the valid choices; names and ids are stable."""

import re
from pathlib import Path

import pytest

from tradeoff.config import load_spec, parse_spec, resolve_configs
from tradeoff.errors import UserError


def spec(**extra):
    data = {"models": {"small": "smollm2-135m", "large": "gemma3-270m"}, "tasks": ["arith"]}
    data.update(extra)
    return data


def test_default_configs_one_single_per_model():
    configs = resolve_configs(parse_spec(spec()))
    assert [c.name for c in configs] == ["small", "large"]
    assert all(c.strategy == "single" for c in configs)


def test_config_ids_are_stable_and_content_based():
    a = resolve_configs(parse_spec(spec()))
    b = resolve_configs(parse_spec(spec()))
    assert [c.config_id for c in a] == [c.config_id for c in b]
    hot = resolve_configs(parse_spec(spec(sampling={"temperature": 0.7})))
    assert hot[0].config_id != a[0].config_id


def test_derived_names_are_unique():
    configs = resolve_configs(
        parse_spec(spec(configs=[{"model": "small"}, {"model": "small", "max_tokens": 8}]))
    )
    assert [c.name for c in configs] == ["small", "small-max8"]


def test_explicit_names_must_be_unique():
    with pytest.raises(UserError, match="used twice"):
        resolve_configs(
            parse_spec(
                spec(configs=[{"model": "small", "name": "x"}, {"model": "large", "name": "x"}])
            )
        )


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("   ", "configs[1].name: '   ' is blank"),
        ("", "configs[1].name: '' is blank"),
        ("weak,cheap", "configs[1].name: 'weak,cheap' holds a comma, which separates names"),
        ("multi\nline", "configs[1].name: 'multi\\nline' holds a control character"),
        (" weak", "configs[1].name: ' weak' begins or ends with a space"),
    ],
)
def test_a_configuration_name_that_no_table_or_configs_list_can_show_is_refused(name, said):
    """A blank name ran as a row of no name ('' as the derived one, silently), a newline split
    its row in two, and `--configs` could never pick a name holding its separator, a comma."""
    configs = [{"model": "small"}, {"model": "large", "name": name}]
    with pytest.raises(UserError) as exc:
        parse_spec(spec(configs=configs))
    assert str(exc.value).startswith(f"spec: {said}") and "\n" not in str(exc.value)
    # A model's alias names the configurations derived from it: the same holds for it.
    with pytest.raises(UserError, match=r"models: the alias 'a,b' holds a comma"):
        parse_spec({"models": {"a,b": "smollm2-135m"}})
    # A task's reference names it: a page's task menu read a carriage return as a newline.
    with pytest.raises(UserError, match=r"tasks: 'jsonl:a\\rb.jsonl' holds a control character"):
        parse_spec(spec(tasks=["jsonl:a\rb.jsonl"]))


def test_unknown_top_level_field_lists_valid_fields():
    with pytest.raises(UserError) as exc:
        parse_spec(spec(modles={}))
    msg = str(exc.value)
    assert "unknown field 'modles'" in msg and "models" in msg and "\n" not in msg


def test_unknown_nested_field_lists_that_level():
    with pytest.raises(UserError) as exc:
        parse_spec(spec(sampling={"temp": 1}))
    assert "sampling.temp" in str(exc.value) and "temperature" in str(exc.value)


@pytest.mark.parametrize(
    ("executor", "says"),
    [
        ({"ray": {"address": "local", "bogus": 1}}, "valid fields here: address, workers"),
        ({"dask": {}}, "unknown field 'executor.dask'; valid fields here: ray"),
        # YAML's unquoted off: a boolean, not the string a person typed
        ({"ray": {"address": False}}, "YAML reads an unquoted on, off, yes or no as true or"),
    ],
)
def test_an_executor_s_errors_name_its_own_fields(executor, says):
    with pytest.raises(UserError, match=re.escape(says)):
        parse_spec(spec(executor=executor))


def test_bad_strategy_names_valid_ones():
    with pytest.raises(UserError) as exc:
        parse_spec(spec(configs=[{"strategy": "singel", "model": "small"}]))
    assert "'singel'" in str(exc.value) and "single" in str(exc.value)


def test_config_model_must_be_an_alias():
    with pytest.raises(UserError, match="aliases: small, large"):
        parse_spec(spec(configs=[{"model": "medium"}]))


def test_a_configuration_beside_a_route_naming_its_policy_s_model_says_where_to_name_it():
    """A `single` of one of the policy's models, in a spec whose models come only from a route:
    the line ended "aliases: " with nothing after it, and no word of where models come from."""
    configs = [{"strategy": "route", "policy": "p.json"}, {"model": "small"}]
    beside = {"tasks": ["arith"], "configs": configs}
    with pytest.raises(UserError) as exc:
        parse_spec(beside)
    assert "configs[1]: 'small' is not a model alias of this spec; aliases: none (a route" in str(
        exc.value
    )
    assert "to use them in other configurations" in str(exc.value)


def test_prices_must_name_aliases():
    with pytest.raises(UserError, match="prices"):
        parse_spec(spec(prices={"huge": {"input": 1, "output": 2}}))


def test_prices_of_a_route_configuration_s_models_say_where_to_name_them():
    """A route configuration brings its policy's models; prices named them against an empty
    list of aliases ("aliases: ")."""
    route_only = {"tasks": ["arith"], "configs": [{"strategy": "route", "policy": "p.json"}],
                  "prices": {"small": {"input": 1, "output": 2}}}  # fmt: skip
    with pytest.raises(UserError) as exc:
        parse_spec(route_only)
    assert "prices: 'small' is not a model alias; aliases: none (a route configuration" in str(
        exc.value
    )
    assert "name them under models: too" in str(exc.value)
    parse_spec({**route_only, "models": {"small": "smollm2-135m"}})


def test_models_as_list_get_aliases():
    s = parse_spec({"models": ["smollm2-135m", "openai:http://h:1/v1#m"], "tasks": ["arith"]})
    assert s.models == {"smollm2-135m": "smollm2-135m", "m": "openai:http://h:1/v1#m"}


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (None, "spec: models[1]: give a model reference as text, not None"),
        (True, "spec: models[1]: give a model reference as text, not True"),
        (
            {"ref": "gemma3-270m"},
            "spec: models[1]: give a model reference as text, not {'ref': 'gemma3-270m'}; to "
            "give a model resources, name it: models: {NAME: {ref: REF, resources: {...}}}",
        ),
    ],
)
def test_a_model_list_entry_that_is_no_text_is_refused_by_its_place(entry, said):
    """`models: [smollm2-135m, {ref: gemma3-270m}]` said model "{'ref': 'gemma3-270m'}" is not
    known, and `[null]` model 'None': Python's text of the entry, taken for a model's name."""
    with pytest.raises(UserError) as exc:
        parse_spec({"models": ["smollm2-135m", entry], "tasks": ["arith"]})
    assert str(exc.value) == said


def test_load_spec_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_spec(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a\ntasks: b\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_spec(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_spec(notmap)


def test_an_unquoted_option_in_a_flow_mapping_says_to_quote_it(tmp_path):
    spec = tmp_path / "flow.yaml"
    spec.write_text("models: {small: smollm2-135m?threads=1}\ntasks: [arith]\n")
    with pytest.raises(UserError, match=r"at line 1: .*quote a reference with \?OPTIONS"):
        load_spec(spec)
    spec.write_text("models: {small: 'smollm2-135m?threads=1'}\ntasks: [arith]\n")
    assert load_spec(spec).models == {"small": "smollm2-135m?threads=1"}


def test_list_parameters_expand_into_one_configuration_each():
    configs = resolve_configs(
        parse_spec(
            spec(
                configs=[
                    {"strategy": "switch", "models": ["small", "large"], "threshold": [0, 1.5]},
                    {"strategy": "cascade", "models": ["small", "large"], "threshold": 0.5},
                    {"strategy": "vote", "model": "small", "n": [3, 5], "adaptive": True},
                ]
            )
        )
    )
    assert [c.name for c in configs] == [
        "switch-small-large-t0",
        "switch-small-large-t1.5",
        "cascade-small-large-logprob0.5",
        "vote-n3a-small",
        "vote-n5a-small",
    ]
    assert configs[0].params["threshold_low"] == 0 and configs[0].aliases == ["small", "large"]
    assert configs[3].sampling.temperature == 0.7  # sampling strategies default to T > 0
    assert len({c.config_id for c in configs}) == 5


def test_an_empty_list_parameter_is_refused_not_expanded_into_nothing():
    entry = {"strategy": "cascade", "models": ["small", "large"], "threshold": []}
    with pytest.raises(UserError, match=r"threshold: \[\] gives no configuration"):
        resolve_configs(parse_spec(spec(configs=[entry])))


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"strategy": "switch", "model": "small", "threshold": 1}, "takes no model"),
        ({"strategy": "switch", "models": ["small", "large"]}, "needs threshold"),
        ({"strategy": "cascade", "models": ["small"], "threshold": 1}, "models: [SMALL, LARGE]"),
        ({"strategy": "budget", "model": "small"}, "needs budget"),
        ({"strategy": "single", "model": "small", "n": 3}, "takes no n"),
        ({"strategy": "switch", "models": ["small", "huge"], "threshold": 1}, "'huge'"),
        ({"strategy": "cascade", "models": ["small"] * 2, "threshold": 1}, "two different models"),
        ({"strategy": "switch", "models": ["large"] * 2, "threshold": 1}, "two different models"),
    ],
)
def test_strategy_parameter_errors(entry, needle):
    with pytest.raises(UserError) as exc:
        resolve_configs(parse_spec(spec(configs=[entry])))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_vote_at_temperature_zero_is_refused():
    single = {"strategy": "single", "model": "small"}
    greedy = {"strategy": "vote", "model": "small", "temperature": 0}
    with pytest.raises(UserError, match=r"^configs\[1\]: strategy 'vote' .*temperature > 0"):
        resolve_configs(parse_spec(spec(configs=[single, greedy])))


def test_identical_configurations_are_named():
    twice = [{"strategy": "single", "model": "small"}, {"strategy": "single", "model": "small"}]
    with pytest.raises(UserError, match="configurations 'small' and 'small-2' are identical"):
        resolve_configs(parse_spec(spec(configs=twice)))


# Names and ids as tradeoff computed them before strategies declared their own params (commit
# d7a97a1): a run directory resumes only if its configurations keep their ids. (Names since
# show a vote's temperature, a cascade's k and a switch's window where they are not the
# defaults: lists of them were told apart by "-2", and compare paired them across runs.)
EARLIER_IDS = [
    ("small", "446c40187ce4"),
    ("remote-max16-t0.5", "78b9be1f831e"),
    ("vote-n3a-small", "1a564fff7eec"),
    ("vote-n5a-small", "bedd4c1a71fd"),
    ("vote-n5-large-t0.9", "bd5fe8f87a4f"),
    ("budget20-small-think8", "7bd866fccbc1"),
    ("budget20-small-think12", "7f3f49fe01bb"),
    ("cascade-small-large-logprob0.5", "7ea87e0558d3"),
    ("cascade-small-large-logprob1", "a63783c233f9"),
    # (dd7c05be2669 until its large model answered at the spec's temperature, not the draws'
    # 0.7: it runs otherwise, so it is another configuration)
    ("cascade-small-large-agreement0.3-k4-t0.7", "a8d3d6aa11f1"),
    ("switch-small-large-t1.5-1-w2", "7325b51e4b19"),
    ("switch-small-large-t1.5-1", "16b484793df9"),
    ("sw", "973f2ceeb8ce"),
]


def test_config_ids_and_names_are_those_of_earlier_versions():
    models = {
        "small": "smollm2-135m",
        "large": "gemma3-270m",
        "remote": "openai:http://127.0.0.1:9/v1#m",
    }
    body = {
        "models": models,
        "tasks": ["arith"],
        "sampling": {"temperature": 0.0, "max_tokens": 32, "seed": 3},
        "model_options": {"remote": {"extra_body": {"top_k": 5}}},
        "configs": [
            {"model": "small"},
            {"model": "remote", "temperature": 0.5, "max_tokens": 16},
            {"strategy": "vote", "model": "small", "n": [3, 5], "adaptive": True},
            {"strategy": "vote", "model": "large", "temperature": 0.9},
            {"strategy": "budget", "model": "small", "budget": 20, "think_budget": [8, 12]},
            {"strategy": "cascade", "models": ["small", "large"], "threshold": [0.5, 1]},
            {"strategy": "cascade", "models": ["small", "large"], "signal": "agreement", "k": 4,
             "threshold": 0.3},
            {"strategy": "switch", "models": ["small", "large"], "threshold": 1.5,
             "threshold_low": 1, "window": [2, 4]},
            {"strategy": "switch", "models": ["small", "large"], "threshold": 2, "name": "sw"},
        ],
    }  # fmt: skip
    got = [(c.name, c.config_id) for c in resolve_configs(parse_spec(body))]
    assert got == EARLIER_IDS
    # a spec as earlier versions stored it: every field of every entry, unset ones null
    stored = parse_spec(body).model_dump(mode="json")
    nulls = "name model models temperature max_tokens n adaptive budget think_budget signal k"
    nulls += " threshold threshold_low window policy"
    stored["configs"] = [{**dict.fromkeys(nulls.split()), **c} for c in stored["configs"]]
    assert [(c.name, c.config_id) for c in resolve_configs(parse_spec(stored))] == EARLIER_IDS


def test_a_spec_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("models: [smollm2-135m]\ntasks: [arith]\n# café\n".encode("latin-1"))
    with pytest.raises(
        UserError, match=r"latin1.yaml is not UTF-8 text \(byte 0xe9 at offset 43\)"
    ):
        load_spec(path)


def test_a_task_given_twice_is_refused():
    with pytest.raises(UserError, match="'arith' is given twice"):
        parse_spec(spec(tasks=["arith", "arith"]))
    with pytest.raises(UserError, match="given twice"):
        parse_spec(spec(tasks=["q.jsonl", {"ref": "jsonl:q.jsonl", "scorer": "exact"}]))


def test_flag_errors_name_the_flag_in_plain_words():
    from tradeoff.config import profile_spec

    def error(**overrides):
        with pytest.raises(UserError) as info:
            profile_spec(
                None, ["smollm2-135m"], ["arith"], out=Path("x"), resume=None,
                overrides=overrides, sampling={},
            )  # fmt: skip
        return str(info.value)

    assert error(limit=-1) == "--limit must be at least 1 (got -1)"
    assert error(concurrency=5000) == "--concurrency must be at most 4096 (got 5000)"


@pytest.mark.parametrize("with_file", [True, False])
def test_a_bad_flag_is_named_as_its_flag_whether_a_spec_file_is_given_or_not(tmp_path, with_file):
    """With a spec file, `--limit 0` said "spec.yaml: limit must be at least 1", sending the user
    to mend a file that held no limit; `--processes 0` said "processes: ..." even with flags
    alone."""
    from tradeoff.config import profile_spec

    path = tmp_path / "spec.yaml"
    path.write_text("models: {small: smollm2-135m}\ntasks: [arith]\n")

    def error(overrides=None, sampling=None):
        with pytest.raises(UserError) as info:
            profile_spec(
                path if with_file else None, None if with_file else ["smollm2-135m"],
                None if with_file else ["arith"], out=tmp_path / "run", resume=None,
                overrides=overrides or {}, sampling=sampling or {},
            )  # fmt: skip
        return str(info.value)

    assert error({"limit": 0}) == "--limit must be at least 1 (got 0)"
    assert error(sampling={"max_tokens": 0}) == "--max-tokens must be at least 1 (got 0)"
    assert error(sampling={"temperature": 9}) == "--temperature must be at most 5 (got 9)"
    assert error({"processes": 0}) == "--processes: give auto or a number from 1 to 256, not 0"
    assert error({"processes": "x"}).startswith("--processes: give auto or a number")


@pytest.mark.parametrize(
    "extra",
    [
        {"limit": True},
        {"sampling": {"max_tokens": True}},
        {"configs": [{"strategy": "vote", "model": "small", "n": True, "temperature": 0.7}]},
    ],
)
def test_a_yaml_boolean_is_not_a_count(extra):
    """`limit: yes` is YAML's true, which pydantic's lax mode took as 1."""
    with pytest.raises(UserError, match="must be a valid integer") as exc:
        resolve_configs(parse_spec(spec(**extra)))
    assert "(got True)" in str(exc.value)


@pytest.mark.parametrize("processes", [True, False, 0, "many"])
def test_processes_of_no_number_or_auto_are_told_what_to_give(processes):
    """`processes: true` said "processes.literal['auto']: True is not valid", pydantic's own
    place in its type, where every other bad value is told to give auto or a number."""
    with pytest.raises(UserError) as exc:
        parse_spec(spec(processes=processes))
    assert str(exc.value) == (
        f"spec: processes: give auto or a number from 1 to 256, not {processes!r}"
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"sampling": {"temperature": True}},
        {"timeout_s": True},
        {"prices": {"small": {"input": True, "output": 1}}},
        {"configs": [{"strategy": "vote", "model": "small", "n": 3, "temperature": True}]},
        {"configs": [{"strategy": "cascade", "models": ["small", "large"], "threshold": False}]},
    ],
)
def test_a_yaml_boolean_is_not_a_number(extra):
    """A threshold or temperature of `true` ran as 1.0 (`switch-small-large-t1`)."""
    with pytest.raises(UserError, match=r"must be a valid number.*\(got (True|False)\)"):
        resolve_configs(parse_spec(spec(**extra)))


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    """PyYAML reads `1e-7` as text (YAML 1.1): a price per token in that form is a number."""
    path = tmp_path / "spec.yaml"
    path.write_text(
        "models: {small: smollm2-135m}\ntasks: [arith]\ntimeout_s: 1e3\n"
        "prices: {small: {input: 1e-7, output: 2e-7}}\nsampling: {temperature: 7e-1}\n"
    )
    loaded = load_spec(path)
    assert (loaded.prices["small"].input, loaded.timeout_s) == (1e-7, 1000.0)
    assert loaded.sampling.temperature == 0.7


def test_a_section_given_as_a_number_asks_for_a_mapping():
    with pytest.raises(
        UserError, match=r"sampling must be a mapping of its fields \(name: value\)"
    ):
        parse_spec(spec(sampling=5))


@pytest.mark.parametrize("resources", [5, [1, 2], "abc"])
@pytest.mark.parametrize("model", ["smollm2-135m", {"ref": "smollm2-135m"}])
def test_resources_given_as_no_mapping_ask_for_one_whichever_form_models_take(model, resources):
    """With a model given as {ref: ...}, `resources: 5` crashed with a TypeError and `abc` said
    Python's own words about dictionary update sequences; a plain reference asked for a mapping."""
    with pytest.raises(UserError) as exc:
        parse_spec(spec(models={"small": model}, resources=resources))
    assert str(exc.value) == (
        f"spec: resources must be a mapping of its fields (name: value) (got {resources!r})"
    )


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"models": {"": "smollm2-135m"}}, "models: the alias '' is empty; name each model"),
        ({"models": {"s": " "}}, "models: s: the reference is empty"),
        ({"prices": {"small": {"input": 1}}}, "prices: small: output is missing; give both"),
        ({"prices": {"large": {"output": 1, "per_hour": 2}}}, "prices: large: input is missing"),
        (
            {"configs": [{"strategy": "vote", "model": "small", "n": 10**9}]},
            "strategy 'vote': n must be at most 1000",
        ),
        (
            {"configs": [{"strategy": "cascade", "models": ["small", "large"], "threshold": 1,
                          "signal": "agreement", "k": [3, 5000]}]},
            "strategy 'cascade': k[1] must be at most 1000 (got 5000)",
        ),
        (
            {"configs": [{"strategy": "switch", "models": ["small", "large"], "threshold": 1,
                          "threshold_low": [0.5, 2]}]},
            "configs[0]: strategy 'switch': threshold_low 2 is above threshold 1; the large",
        ),
        # NaN compares false with every uncertainty (never escalates); inf never times out
        (
            {"configs": [{"strategy": "cascade", "models": ["small", "large"],
                          "threshold": float("nan")}]},
            "strategy 'cascade': threshold must be a finite number (got nan)",
        ),
        (
            {"configs": [{"strategy": "cascade", "models": ["small", "large"],
                          "threshold": [1, float("-inf")]}]},
            "strategy 'cascade': threshold[1] must be a finite number",
        ),
        ({"timeout_s": float("inf")}, "timeout_s must be a finite number"),
        # settings that run but mean nothing: a vote of one, thinking that leaves no answer, a
        # k that signal logprob never reads (two ids for one configuration)
        (
            {"configs": [{"strategy": "vote", "model": "small", "n": [3, 1]}]},
            "strategy 'vote': n 1 draws one answer, no vote",
        ),
        (  # it said "n must be at least 1 (got 0)", then refused 1 too
            {"configs": [{"strategy": "vote", "model": "small", "n": 0}]},
            "strategy 'vote': n 0 draws no answers, no vote: give n of 2 or more",
        ),
        (
            {"configs": [{"strategy": "budget", "model": "small", "budget": [64, 16],
                          "think_budget": 32}]},
            "strategy 'budget': think_budget 32 leaves none of budget 16",
        ),
        (
            {"configs": [{"strategy": "cascade", "models": ["small", "large"], "threshold": 1,
                          "k": 7}]},
            "strategy 'cascade': k counts the sampled answers of signal agreement; signal logprob",
        ),
        ({"prices": {"small": {"per_hour": float("nan")}}}, "must be a finite number"),
    ],
)  # fmt: skip
def test_values_that_would_run_but_mean_nothing_are_refused(extra, said):
    """An unnamed model, a free side of a price nobody said was free, a billion votes, a switch
    that hands back above the mean that made it take over: each named, not run."""
    with pytest.raises(UserError) as exc:
        resolve_configs(parse_spec(spec(**extra)))
    assert said in str(exc.value) and "\n" not in str(exc.value)


def test_agreement_of_one_answer_is_refused():
    """k 1 samples one answer, which agrees with itself (uncertainty 0 or 1): refused, as vote
    refuses n 1; it ran."""
    one = {"strategy": "cascade", "models": ["small", "large"], "signal": "agreement",
           "threshold": 0.5, "k": [1, 3]}  # fmt: skip
    with pytest.raises(UserError, match="k 1 samples fewer than two answers"):
        parse_spec(spec(configs=[one]))
    with pytest.raises(UserError, match="k 0 samples fewer than two answers"):
        parse_spec(spec(configs=[one | {"k": 0}]))


@pytest.mark.parametrize(
    ("large_temperature", "said"),
    [
        (99, "large_temperature must be at most 5 (got 99)"),
        ([0.1, 6], "large_temperature[1] must be at most 5 (got 6)"),
    ],
)
def test_a_cascade_s_large_temperature_is_a_temperature(large_temperature, said):
    """99 ran, sent upstream as the large model's temperature, where `temperature: 99` is
    refused."""
    entry = {"strategy": "cascade", "models": ["small", "large"], "threshold": 0.5,
             "signal": "agreement", "large_temperature": large_temperature}  # fmt: skip
    with pytest.raises(UserError) as exc:
        parse_spec(spec(configs=[entry]))
    assert str(exc.value) == f"spec: configs[0]: strategy 'cascade': {said}"


def test_a_list_of_large_temperatures_expands_into_configurations_named_by_them():
    """A cascade's large_temperature is numeric, and README says a list of a numeric parameter
    expands: a list was refused ("must be a valid number"); given as two entries, they were
    named `X-t0.7` and `X-t0.7-2`. The one given (the spec's 0 here) is the default, unnamed."""
    entry = {"strategy": "cascade", "models": ["small", "large"], "threshold": 0.5,
             "signal": "agreement", "large_temperature": [0.0, 0.5]}  # fmt: skip
    configs = resolve_configs(parse_spec(spec(configs=[entry])))
    assert [(c.name, c.params["large_temperature"]) for c in configs] == [
        ("cascade-small-large-agreement0.5-t0.7", 0.0),
        ("cascade-small-large-agreement0.5-t0.7-large-t0.5", 0.5),
    ]
    default = {k: v for k, v in entry.items() if k != "large_temperature"}
    (alone,) = resolve_configs(parse_spec(spec(configs=[default])))
    assert alone.config_id == configs[0].config_id


def test_yaml_merge_keys_build_configurations_and_may_be_overridden(tmp_path):
    """`<<: *anchor` was refused as malformed YAML (the check for keys given twice built the
    merge key itself); a key given twice beside it is still refused."""
    from tradeoff.config import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models: {small: smollm2-135m, large: gemma3-270m}\ntasks: [arith]\nconfigs:\n"
        "  - &b {strategy: single, model: small, max_tokens: 8}\n"
        "  - {<<: *b, model: large}\n"
    )
    configs = load_spec(spec).configs
    assert [(c.model, c.max_tokens) for c in configs] == [("small", 8), ("large", 8)]
    spec.write_text(
        spec.read_text().replace("{<<: *b, model: large}", "{<<: *b, model: large, model: small}")
    )
    with pytest.raises(UserError, match="the key 'model' is given twice"):
        load_spec(spec)


def test_a_list_of_a_strategy_s_parameter_names_each_configuration_by_its_value():
    """Votes at temperatures [0.3, 0.9], cascades at k [2, 4] and switches at window [2, 8] were
    named "X" and "X-2": compare pairs configurations by name, so a run with the list in another
    order was compared configuration for other configuration."""
    configs = [
        {"strategy": "vote", "model": "small", "temperature": [0.3, 0.9, 0.7]},
        {"strategy": "cascade", "models": ["small", "large"], "signal": "agreement",
         "threshold": 0.4, "k": [2, 3]},
        {"strategy": "switch", "models": ["small", "large"], "threshold": 1.5, "window": [8, 4]},
    ]  # fmt: skip
    names = [c.name for c in resolve_configs(parse_spec(spec(configs=configs)))]
    assert names == [
        "vote-n5-small-t0.3", "vote-n5-small-t0.9", "vote-n5-small",
        "cascade-small-large-agreement0.4-k2-t0.7", "cascade-small-large-agreement0.4-t0.7",
        "switch-small-large-t1.5-w8", "switch-small-large-t1.5",
    ]  # fmt: skip
