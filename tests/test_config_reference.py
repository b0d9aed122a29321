"""docs/config.md documents every config field: it is what docs/config_reference.py writes,
every field of every config under configs/ is read by its builder, and every field has a meaning
(and every meaning a field). The recording of sgm_jax.config_fields that the script uses is
tested here too."""

import importlib.util
import os
import sys

import ml_collections
import pytest

from sgm_jax import config_fields as cf
from sgm_jax import config_sections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location(
        "config_reference", os.path.join(ROOT, "docs", "config_reference.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


reference = _script()


@pytest.fixture(scope="module")
def survey():
    return reference.survey()


def test_committed_reference_is_what_the_script_writes(survey):
    with open(os.path.join(ROOT, "docs", "config.md"), encoding="utf-8") as f:
        committed = f.read()
    assert committed == reference.render(survey), (
        "docs/config.md is out of date: run python docs/config_reference.py")


def test_every_field_of_every_config_is_read_by_its_builder(survey):
    assert len(reference.config_files()) > 50
    assert survey.unread == {}, f"fields no builder reads: {survey.unread}"


def test_every_field_has_a_meaning_and_says_what_it_allows(survey):
    assert [f for f in survey.allowed if reference.meaning(f) is None] == []
    assert [f for f, texts in survey.allowed.items() if texts == {None}] == []
    assert [f for f in survey.allowed if reference.section(f) not in reference.SECTIONS] == []


def test_every_meaning_is_of_a_field_that_exists(survey):
    assert sorted(set(reference.MEANINGS) - set(survey.allowed)) == []


def test_every_default_is_a_documented_field(survey):
    for group in survey.defaults:
        for label, values in group:
            assert sorted(set(values) - set(survey.allowed)) == [], label


def test_recording_collects_what_each_reader_allows():
    config = ml_collections.ConfigDict(dict(
        a=dict(x=0.5, n=3, flag=True, name="pc", path="", pair=(1, 2)),
        model=dict(name="toy_mlp", parameterisation="u", condition="t", hidden=(8,))))
    with cf.recording() as outer:
        cf.number(config, "a.x", low=0, high=1, low_open=True)
        with cf.recording() as inner:
            cf.integer(config, "a.n", 1)
        cf.boolean(config, "a.flag")
        cf.choice(config, "a.name", ("ode", "pc"))
        cf.string(config, "a.path")
        cf.get(config, "a.pair")
        cf.get(config, "a")  # a section is not a field
        assert cf.has(config, "a.missing") is False and cf.has(config, "a.x")
        config_sections.network(config)
    assert inner == {"a.n": "integer >= 1"}
    assert outer == {"a.x": "number > 0 and <= 1", "a.n": "integer >= 1",
                     "a.flag": "True or False", "a.name": 'one of "ode", "pc"',
                     "a.path": "string", "a.pair": None, "model.name": outer["model.name"],
                     "model.hidden": "a field of toy_mlp"}
    assert '"toy_mlp"' in outer["model.name"]
    # nothing is recorded outside a recording, and a failed read records nothing
    cf.integer(config, "a.n", 1)
    with cf.recording() as failed, pytest.raises(ValueError, match="a.x"):
        cf.number(config, "a.x", low=1)
    assert failed == {}


def test_record_keeps_a_text_and_joins_different_ones():
    with cf.recording() as allowed:
        cf.record("f", "integer >= 1")
        cf.record("f", None)
        cf.record("f", "integer >= 1")
        cf.record("g", None)
        cf.record("g", "string")
        cf.record("g", "a field of x")
    assert allowed == {"f": "integer >= 1", "g": "string; a field of x"}


def test_allowed_and_default_cells():
    texts = {"a field of ncsnpp", "a field of ddpm"}
    assert reference.allowed_text(texts) == "a field of `ddpm`, `ncsnpp`"
    groups = [[("toy", {"x": 1e-5, "y": "a"}), ("image", {"x": 1e-5, "y": "b"})],
              [("VP", {"z": (16,)})]]
    assert reference.default_text("x", groups) == "`1e-5`"
    assert reference.default_text("y", groups) == 'toy `"a"`<br>image `"b"`'
    assert reference.default_text("z", groups) == "VP `(16,)`"
