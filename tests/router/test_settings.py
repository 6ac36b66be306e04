from pathlib import Path

import pytest

from router.settings import ConfigError, load_settings

CONFIG = """
artifact: ./artifacts/demo
default_knob: 0.5
backends:
  - {name: general, base_url: "http://127.0.0.1:8101/v1", model: smollm2, role: generalist,
     price_per_mtok: {input: 0.2, output: 0.2}}
  - {name: math, base_url: "http://127.0.0.1:8102/v1/", model: math-7b,
     price_per_mtok: {input: 0.1, output: 0.3}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "triage.yaml"
    path.write_text(text)
    return path


def test_yaml_is_read_and_paths_resolved_relative_to_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG), environ={})
    assert settings.artifact == str(tmp_path / "artifacts/demo")
    assert settings.generalist_name == "general"
    assert settings.backend("math").base_url == "http://127.0.0.1:8102/v1"
    assert settings.backend("math").price_per_mtok.cost(1_000_000, 1_000_000) == pytest.approx(0.4)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"TRIAGE_DEFAULT_KNOB": "0.9", "TRIAGE_SERVER__PORT": "9123", "HOME": "/ignored"}
    settings = load_settings(write(tmp_path, CONFIG), environ=env)
    assert settings.default_knob == 0.9
    assert settings.server.port == 9123


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CONFIG.replace("default_knob: 0.5", "default_knob: 1.5"), "default_knob"),
        (CONFIG.replace("role: generalist,", ""), "generalist"),
        (CONFIG.replace("name: math", "name: general"), "duplicate backend names: general"),
        (CONFIG.replace('"http://127.0.0.1:8102/v1/"', "ftp://x"), "backends.1.base_url"),
        ("artifact: x\nbackends: []\n", "no backends"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("artifact: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_gives_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(write(tmp_path, text), environ={})
    assert str(tmp_path) not in str(info.value)  # no absolute paths in messages


def test_fleet_file_supplies_the_backends(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(CONFIG.replace("artifact: ./artifacts/demo\ndefault_knob: 0.5\n", ""))
    settings = load_settings(write(tmp_path, "artifact: a\nfleet: fleet.yaml\n"), environ={})
    assert [b.name for b in settings.backends] == ["general", "math"]


def test_api_keys_are_matched_by_hash(tmp_path: Path) -> None:
    import hashlib

    digest = hashlib.sha256(b"sk-test").hexdigest()
    text = CONFIG + f"auth:\n  enabled: true\n  keys: [{{name: ci, sha256: {digest}}}]\n"
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.auth.find("sk-test") is not None
    assert settings.auth.find("sk-other") is None
