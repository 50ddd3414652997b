"""Run specs: validation errors name the field and the valid choices; names and ids are stable."""

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


def test_unknown_top_level_field_lists_valid_fields():
    with pytest.raises(UserError) as exc:
        parse_spec(spec(modles={}))
    msg = str(exc.value)
    assert "unknown field 'modles'" in msg and "models" in msg and "\n" not in msg


def test_unknown_nested_field_lists_that_level():
    with pytest.raises(UserError) as exc:
        parse_spec(spec(sampling={"temp": 1}))
    assert "sampling.temp" in str(exc.value) and "temperature" in str(exc.value)


def test_bad_strategy_names_valid_ones():
    with pytest.raises(UserError) as exc:
        parse_spec(spec(configs=[{"strategy": "singel", "model": "small"}]))
    assert "'singel'" in str(exc.value) and "single" in str(exc.value)


def test_config_model_must_be_an_alias():
    with pytest.raises(UserError, match="aliases: small, large"):
        parse_spec(spec(configs=[{"model": "medium"}]))


def test_prices_must_name_aliases():
    with pytest.raises(UserError, match="prices"):
        parse_spec(spec(prices={"huge": {"input": 1}}))


def test_models_as_list_get_aliases():
    s = parse_spec({"models": ["smollm2-135m", "openai:http://h:1/v1#m"], "tasks": ["arith"]})
    assert s.models == {"smollm2-135m": "smollm2-135m", "m": "openai:http://h:1/v1#m"}


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


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"strategy": "switch", "model": "small", "threshold": 1}, "takes no model"),
        ({"strategy": "switch", "models": ["small", "large"]}, "needs threshold"),
        ({"strategy": "cascade", "models": ["small"], "threshold": 1}, "models: [SMALL, LARGE]"),
        ({"strategy": "budget", "model": "small"}, "needs budget"),
        ({"strategy": "single", "model": "small", "n": 3}, "takes no n"),
        ({"strategy": "switch", "models": ["small", "huge"], "threshold": 1}, "'huge'"),
    ],
)
def test_strategy_parameter_errors(entry, needle):
    with pytest.raises(UserError) as exc:
        resolve_configs(parse_spec(spec(configs=[entry])))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_vote_at_temperature_zero_is_refused():
    with pytest.raises(UserError, match="temperature > 0"):
        resolve_configs(
            parse_spec(spec(configs=[{"strategy": "vote", "model": "small", "temperature": 0}]))
        )
