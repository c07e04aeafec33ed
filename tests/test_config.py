"""Settings: defaults < rag.toml < RAG_* environment variables < explicit overrides."""

import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.config import Config, load_config
from rag.errors import RagError

pytestmark = pytest.mark.usefixtures("isolated")


def _toml(tmp_path: Path, text: str, name: str = "rag.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_file_or_variable():
    config = load_config()
    assert config == Config()
    assert (config.top_k, config.chunk_size, config.chunk_overlap) == (4, 600, 80)
    assert config.embedder == "embeddinggemma-300m-openvino-w8"


def test_each_layer_overrides_the_one_below(tmp_path, monkeypatch):
    _toml(tmp_path, 'top_k = 5\nchunk_size = 500\ntemperature = 0.2\nseeds_dir = "~/articles"\n')
    assert load_config().top_k == 5  # rag.toml in the working folder
    monkeypatch.setenv("RAG_TOP_K", "6")
    monkeypatch.setenv("RAG_TEMPERATURE", "0.5")
    config = load_config(top_k=7)
    assert config.top_k == 7  # override > environment > file
    assert config.temperature == 0.5  # environment > file
    assert config.chunk_size == 500  # file > default
    assert config.chunk_overlap == 80  # default
    assert config.seeds_dir == Path("~/articles").expanduser()  # paths are Paths, ~ expanded
    assert load_config(top_k=None).top_k == 6  # an unset CLI flag (None) does not override


def test_config_file_from_argument_or_rag_config_variable(tmp_path, monkeypatch):
    path = _toml(tmp_path, "top_k = 9\n", "custom.toml")
    assert load_config(path).top_k == 9
    monkeypatch.setenv("RAG_CONFIG", str(path))
    assert load_config().top_k == 9


def test_a_named_config_file_that_does_not_exist(tmp_path):
    with pytest.raises(RagError, match=r"config file .*missing.toml not found"):
        load_config(tmp_path / "missing.toml")


def test_unknown_setting_in_the_file_is_an_error(tmp_path):
    _toml(tmp_path, "topk = 3\n")
    with pytest.raises(RagError, match=r"unknown setting 'topk'; known: .*top_k"):
        load_config()


def test_unknown_override_is_an_error():
    with pytest.raises(RagError, match="unknown setting 'colour'"):
        load_config(colour="blue")


@pytest.mark.parametrize(
    "line",
    ['top_k = "many"', "top_k = true", "top_k = [1, 2]", "temperature = \"hot\"", "chunk_size = {a = 1}",
     'auth = true'],
)
def test_bad_value_type_in_the_file_is_an_error(tmp_path, line):
    _toml(tmp_path, line + "\n")
    with pytest.raises(RagError, match=r"setting \w+: cannot read .* as (int|float|str)"):
        load_config()


def test_bad_value_in_the_environment_is_an_error(monkeypatch):
    monkeypatch.setenv("RAG_TOP_K", "four")
    with pytest.raises(RagError, match="setting top_k: cannot read 'four' as int"):
        load_config()


def test_invalid_toml_is_an_error(tmp_path):
    _toml(tmp_path, "top_k = = 3\n")
    with pytest.raises(RagError, match="rag.toml is not valid TOML"):
        load_config()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap must be between 0 and chunk_size - 1"),
        ({"chunk_overlap": -1}, "chunk_overlap must be between"),
        ({"max_tokens": -5}, "max_tokens must be at least 1"),
        ({"temperature": -0.1}, "temperature must be between 0 and 2"),
        ({"port": 70000}, "port must be between 1 and 65535"),
        ({"n_gpu_layers": -2}, "n_gpu_layers must be -1"),
        ({"min_similarity": 3}, "min_similarity must be between -1 and 1"),
        ({"evidence_share": 1.5}, "evidence_share must be between 0 and 1"),
        ({"judged": -2}, "judged must be -1 \\(the selector's own\\), 0 \\(no judge\\) or more"),
        ({"auth": "nocolon"}, "auth must be written user:password"),
        ({"auth": ":secret"}, "auth must be written user:password"),
        ({"index_batch": -1}, "index_batch must be 0 \\(build alone\\) or more"),
        ({"index_batch": 4}, "index_batch shares a build .* only store = pgvector can do: set it to 0 for store = "),
    ],
)
def test_values_that_would_fail_later_are_refused_now(settings, message):
    with pytest.raises(RagError, match=message):
        load_config(**settings)


def test_the_limits_are_checked_on_the_final_values(tmp_path, monkeypatch):
    _toml(tmp_path, "chunk_size = 50\n")  # smaller than the default overlap of 80 ...
    monkeypatch.setenv("RAG_CHUNK_OVERLAP", "10")  # ... until the environment lowers it
    config = load_config()
    assert (config.chunk_size, config.chunk_overlap) == (50, 10)


def test_replace_coerces_strings_to_the_field_type():
    config = Config().replace(top_k="3", temperature="0.7", index_dir="/tmp/idx")
    assert (config.top_k, config.temperature, config.index_dir) == (3, 0.7, Path("/tmp/idx"))
    assert Config().top_k == 4  # replace() returns a copy


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("temperature = nan", "temperature must be a finite number"),
        ("temperature = inf", "temperature must be a finite number"),
        ("min_similarity = -inf", "min_similarity must be a finite number"),
        ("top_k = 4.9", "top_k must be a whole number, not 4.9"),
        ('top_k = "4.5"', "top_k must be a whole number"),
        ('top_k = "1e3"', "top_k must be a whole number"),
        ('seeds_dir = ""', "setting seeds_dir: cannot read"),
        ("seeds_dir = 3", "setting seeds_dir: cannot read 3 as Path"),
        ("generator = 7", "setting generator: cannot read 7 as str"),
    ],
)
def test_numbers_must_be_finite_and_whole_where_whole(tmp_path, line, message):
    _toml(tmp_path, line + "\n")
    with pytest.raises(RagError, match=message):
        load_config()


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity"])
def test_non_finite_numbers_from_the_environment_are_refused(monkeypatch, value):
    monkeypatch.setenv("RAG_TEMPERATURE", value)
    with pytest.raises(RagError, match="temperature must be a finite number"):
        load_config()


def test_a_config_file_that_is_a_folder_or_not_utf8_is_one_clear_error(tmp_path):
    (tmp_path / "rag.toml").mkdir()
    with pytest.raises(RagError, match="rag.toml is a folder, not a file"):
        load_config()
    (tmp_path / "rag.toml").rmdir()
    (tmp_path / "rag.toml").write_bytes(b"top_k = 3\n# \xff\xfe\n")
    with pytest.raises(RagError, match=r"rag.toml is not UTF-8 text \(byte 12\)"):
        load_config()


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=12),
                 st.booleans(), st.lists(st.integers(), max_size=2)))
@settings(max_examples=200, deadline=None)
def test_any_value_for_any_number_setting_is_taken_exactly_or_refused(value):
    for name in ("top_k", "temperature", "port", "min_similarity"):
        try:
            config = load_config(**{name: value})
        except RagError:
            continue
        got = getattr(config, name)
        assert math.isfinite(got)
        assert type(got) is type(getattr(Config(), name))
        assert got == float(str(value).strip())  # never rounded or cut


# --- Config files that are not small regular files, or that the parser cannot take -----------------------------


def test_a_config_that_is_a_device_or_a_pipe_is_refused_on_the_open_file_without_reading(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.toml")  # opening it for reading would block; reading /dev/zero would never end
    for path in ("/dev/zero", str(tmp_path / "pipe.toml")):
        monkeypatch.setenv("RAG_CONFIG", path)
        with pytest.raises(RagError) as error:
            load_config()
        assert str(error.value) == f"config file {path} is not a regular file (a device, pipe or socket)"


def test_a_config_file_over_1_mb_is_refused(tmp_path):
    _toml(tmp_path, "# " + "x" * 1_000_000 + "\ntop_k = 3\n")
    with pytest.raises(RagError, match=r"^config file rag.toml is larger than 1 MB$"):
        load_config()


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000])
def test_a_config_nested_deeper_than_the_parser_goes_is_one_line(tmp_path, text):
    _toml(tmp_path, text)
    with pytest.raises(RagError) as error:
        load_config()
    assert str(error.value).startswith("rag.toml is not valid TOML") and "\n" not in str(error.value)


@given(st.text(alphabet="[]{}=ab1 ,.\"'\n", max_size=3000))
@settings(max_examples=100, deadline=None)
def test_any_rag_toml_is_settings_or_one_rag_error(text):
    with tempfile.TemporaryDirectory() as folder:
        try:
            load_config(_toml(Path(folder), text))
        except RagError as e:
            assert "\n" not in str(e)
