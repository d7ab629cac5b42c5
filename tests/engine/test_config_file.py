"""The engine config file: thresholds and agreed reaction times, misconfiguration named at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.core.config import load_engine_config
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import T0, DeviceScript, orders_doc
from engine.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "emguard.example.toml"


def test_the_shipped_example_loads_and_sets_per_kind_deadlines():
    """deploy/emguard.example.toml is valid; a panic must be acted on within 60 s."""
    cfg = load_engine_config(EXAMPLE)
    assert cfg.rules.confirm_fixes == 2 and cfg.deadlines["alarm"] == 300
    engine = Engine(load_orders(orders_doc(proximity=[{"protected_person": "P-1", "alert_m": 1000}])), cfg)
    effects = engine.handle(*DeviceScript("VD-2001").event(T0, "panic"), T0)
    assert effects.changes[0].alert.deadline == T0 + 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rules]\nconfirm_fixez = 3\n", "unknown rule setting [rules].confirm_fixez"),
        ("[rules]\ncurfew_grace_s = 'long'\n", "[rules].curfew_grace_s must be float"),
        ("[deadlines]\nalarm = -5\n", "[deadlines].alarm must be a positive number"),
        ("[deadlines]\nurgent = 5\n", "unknown level(s)"),
        ("[deadlines.kind.burglary]\nalarm = 5\n", "unknown alert kind"),
        ("[ruls]\n", "unknown section"),
        ("rules = [\n", "not valid TOML"),
    ],
)
def test_mistakes_fail_at_start_up_naming_the_setting(tmp_path, text, message):
    """A typo or a wrong type is a ConfigError that says which setting to fix."""
    path = tmp_path / "emguard.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_engine_config(path)


def test_alerts_section_sets_auto_close_outcomes_and_targets(tmp_path):
    """[alerts] configures which kinds close themselves, the outcome codes and escalation targets."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[alerts]\nauto_close = ["battery"]\noutcomes = ["false_alarm", "handled"]\n'
        '[alerts.targets]\npanic = ["police"]\n"*" = ["supervisor"]\n'
    )
    policy = load_engine_config(path).alert_policy
    assert policy.auto_close == frozenset({"battery"})
    assert policy.outcomes == ("false_alarm", "handled")
    assert policy.targets_for("panic") == ("police",) and policy.targets_for("tamper") == ("supervisor",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[alerts]\nauto_close = ["nope"]\n', "unknown kind"),
        ("[alerts]\noutcomes = []\n", "at least one"),
        ("[alerts]\nsound = true\n", "unknown setting"),
        ('[alerts.targets]\nnope = ["police"]\n', "unknown alert kind"),
        ('[alerts.scripts]\nnope = ["call her"]\n', "unknown alert kind"),
        ('[alerts.scripts]\npanic = []\n', "must have a line"),
        ('[alerts.scripts]\npanic = "call her"\n', "list of names"),
    ],
)
def test_a_bad_alerts_section_fails_at_start_up_naming_it(tmp_path, text, needle):
    """A misconfigured [alerts] section stops start-up with a message that says what to fix."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_engine_config(path)


def test_alerts_scripts_set_the_call_script_of_a_kind_over_the_defaults(tmp_path):
    """[alerts.scripts] replaces one kind's call script; every other kind keeps its default."""
    from engine.core.alert_records import DEFAULT_SCRIPTS

    path = tmp_path / "c.toml"
    path.write_text('[alerts.scripts]\npanic = ["Call 112.", "Call her."]\n')
    policy = load_engine_config(path).alert_policy
    assert policy.script_for("panic") == ("Call 112.", "Call her.")
    assert policy.script_for("proximity") == DEFAULT_SCRIPTS["proximity"]
    assert policy.script_for("battery") == DEFAULT_SCRIPTS["*"]


def test_the_shipped_example_config_loads():
    """deploy/emguard.example.toml, call scripts included, is a config the engine accepts."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "emguard.example.toml"
    policy = load_engine_config(example).alert_policy
    assert policy.script_for("panic")[0].startswith("Escalate to the police")
