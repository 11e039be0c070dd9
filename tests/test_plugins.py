"""The plugin manager: discovery, one clean manager per call, clashes and malformed adapters, and
the README naming every hook."""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable
from pathlib import Path

import misbehaving
import pytest

from decathlon import hookspecs
from decathlon.contract import Adapter
from decathlon.errors import PluginError
from decathlon.hookspecs import hookimpl
from decathlon.plugins import find_adapter, make_registry

README = Path(__file__).resolve().parents[1] / "README.md"


def plugin(name: str, *adapters: object) -> types.ModuleType:
    """A plugin module named ``name`` registering ``adapters``."""
    module = types.ModuleType(name)

    @hookimpl
    def decathlon_register_adapters(register) -> None:
        for item in adapters:
            register(item)

    module.decathlon_register_adapters = decathlon_register_adapters  # type: ignore[attr-defined]
    return module


def adapter(name: str = "knn", run: str = "decathlon_knn:run") -> Adapter:
    return Adapter(name=name, run=run)


def hook_names() -> list[str]:
    return sorted(
        name
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and name.startswith("decathlon_")
    )


def test_hook_specs_are_prefixed_and_documented() -> None:
    names = hook_names()
    # At least: one hook that registers adapters, one called with each finished result.
    assert {"decathlon_register_adapters", "decathlon_task_finished"} <= set(names)
    markers = [n for n, v in vars(hookspecs).items() if hasattr(v, "decathlon_spec")]
    assert sorted(markers) == names  # every spec is prefixed
    for name in names:
        assert inspect.getdoc(getattr(hookspecs, name)), f"{name} has no docstring"


def test_builtins_come_through_the_entry_point_group() -> None:
    registry = make_registry()
    assert "baseline" in registry.adapters
    assert registry.origin["baseline"] == "baseline"  # the entry point's name
    assert find_adapter("baseline", registry).run == "decathlon_adapters.baseline:run"


def test_every_call_makes_a_fresh_manager() -> None:
    first = make_registry([plugin("p1", adapter())], entry_points=False)
    assert set(first.adapters) == {"knn"} and first.origin["knn"] == "p1"
    second = make_registry(entry_points=False)
    assert second.adapters == {} and second.pm is not first.pm
    with pytest.raises(PluginError, match="unknown adapter 'knn'"):
        second.get("knn")


def test_misbehaving_module_registers_like_a_third_party_plugin() -> None:
    registry = make_registry([misbehaving], entry_points=False)
    assert set(registry.adapters) == {a.name for a in misbehaving.ADAPTERS}
    assert {registry.origin[a.name] for a in misbehaving.ADAPTERS} == {"misbehaving"}


def test_duplicate_name_names_both_plugins() -> None:
    with pytest.raises(PluginError) as caught:
        make_registry(
            [plugin("first_plugin", adapter()), plugin("second_plugin", adapter())],
            entry_points=False,
        )
    message = str(caught.value)
    assert "'knn'" in message and "first_plugin" in message and "second_plugin" in message


def test_clash_with_a_builtin_names_both() -> None:
    with pytest.raises(PluginError) as caught:
        make_registry([plugin("my_plugin", adapter("baseline"))])
    assert "'baseline'" in str(caught.value) and "my_plugin" in str(caught.value)
    assert "plugin 'baseline'" in str(caught.value)


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        (adapter("Bad-Name"), "adapter name 'Bad-Name' must be lowercase letters"),
        (adapter("1st"), "must be lowercase letters, digits and underscores, starting with a"),
        (adapter(""), "adapter name '' must be"),
        (adapter("knn", run="decathlon_knn.run"), "expected 'package.module:function'"),
        ({"name": "knn"}, "not a decathlon.contract.Adapter"),
    ],
)
def test_malformed_adapters_name_the_plugin(item: object, fragment: str) -> None:
    with pytest.raises(PluginError) as caught:
        make_registry([plugin("sloppy_plugin", item)], entry_points=False)
    assert fragment in str(caught.value) and "sloppy_plugin" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("error", [RuntimeError, SystemExit], ids=["raises", "exits"])
def test_a_plugin_that_raises_is_named(error: type[BaseException]) -> None:
    """A plugin that calls ``sys.exit("...")`` when asked for its adapters ended the harness
    with its message and no name."""
    module = types.ModuleType("exploding_plugin")

    @hookimpl
    def decathlon_register_adapters(register) -> None:
        raise error("no config found")

    module.decathlon_register_adapters = decathlon_register_adapters  # type: ignore[attr-defined]
    with pytest.raises(PluginError) as caught:
        make_registry([module], entry_points=False)
    assert str(caught.value) == (
        "plugin 'exploding_plugin' failed in decathlon_register_adapters: no config found"
    )


def _takes_registry(registry: object) -> None:
    pass


def _takes_register(register: object) -> None:
    pass


@pytest.mark.parametrize(
    ("hook", "function", "fragment"),
    [
        ("decathlon_register_adapters", _takes_registry, "Argument(s) {'registry'} are declared"),
        (
            "decathlon_register_adapter",
            _takes_register,
            "unknown hook 'decathlon_register_adapter'",
        ),
    ],
    ids=["wrong-argument", "misspelt-hook"],
)
def test_a_hook_the_specs_do_not_take_is_named(
    hook: str, function: Callable[[object], None], fragment: str
) -> None:
    """A hook implementation whose argument the spec does not have was a traceback from inside
    pluggy; one whose name no spec has (a typo) was never called, the plugin's adapters missing
    without a word."""
    module = types.ModuleType("misfit_plugin")
    setattr(module, hook, hookimpl(function))
    with pytest.raises(PluginError) as caught:
        make_registry([module], entry_points=False)
    message = str(caught.value)
    assert message.startswith("plugin 'misfit_plugin' does not match decathlon's hook spec")
    assert fragment in message and "\n" not in message


def test_unknown_adapter_suggests_the_closest() -> None:
    registry = make_registry([plugin("p", adapter("knn"), adapter("svm"))], entry_points=False)
    with pytest.raises(PluginError) as caught:
        registry.get("knm")
    assert str(caught.value) == "unknown adapter 'knm'. Did you mean 'knn'? Known: knn, svm"


def _writing_an_adapter_section(text: str) -> str:
    """The README's "Writing an adapter" section: from its heading to the next heading of the
    same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading and "writing an adapter" in heading.group(2).lower():
            level = len(heading.group(1))
            body = []
            for rest in lines[i + 1 :]:
                other = re.match(r"^(#+)\s", rest)
                if other and len(other.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body)
    raise AssertionError('README.md has no "Writing an adapter" heading')


def test_readme_writing_an_adapter_names_every_hook() -> None:
    assert README.is_file(), "README.md is missing"
    section = _writing_an_adapter_section(README.read_text(encoding="utf-8"))
    missing = [name for name in hook_names() if not re.search(rf"\b{name}\b", section)]
    assert not missing, f'README "Writing an adapter" does not name: {missing}'
    # A complete example: the section registers a plugin through the entry-point group.
    assert "[project.entry-points.decathlon]" in section
    assert "@hookimpl" in section


def _signature(name: str) -> str:
    """A hook's signature as written in its spec: ``name(param: Type, ...) -> Return``."""
    spec = getattr(hookspecs, name)
    annotations = spec.__annotations__  # strings: the module uses `from __future__ import ...`
    params = inspect.signature(spec).parameters
    args = ", ".join(f"{p}: {annotations[p]}" for p in params)
    return f"{name}({args}) -> {annotations['return']}"


def test_plugin_hooks_are_documented_with_their_signatures() -> None:
    """As datasette's test_plugin_hooks_are_documented: each hook's full typed signature is in
    the README, and its spec has a ``:param`` line for every parameter (as pytest's hookspec)."""
    section = _writing_an_adapter_section(README.read_text(encoding="utf-8"))
    missing = [_signature(n) for n in hook_names() if f"`{_signature(n)}`" not in section]
    assert not missing, f'README "Writing an adapter" lacks these signatures: {missing}'
    for name in hook_names():
        spec = getattr(hookspecs, name)
        assert "return" in spec.__annotations__, f"{name} has no return annotation"
        doc = inspect.getdoc(spec) or ""
        for param in inspect.signature(spec).parameters:
            assert param in spec.__annotations__, f"{name}: {param} has no type"
            assert f":param {param}:" in doc, f"{name}: no ':param {param}:' line"
