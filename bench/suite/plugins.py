"""Your own models beside the built-in ones: plugins.

A plugin is a Python file (named in a suite's `plugins:` relative to the suite file, or with
`--plugin` relative to the working folder) or an importable module name. Importing it runs its
`@models.register("name")` decorators, so its classes are models like the built-in ones. A plugin
is imported once per process; its content hash is part of the id of every cell of its models
(`identity`), so an edited plugin makes new cells and the cells of other models keep their ids.

Every way a plugin can be wrong ends in one PluginError line naming the file (and the line) and
the fix, before anything trains: it cannot be read, raises or has a syntax error on import,
registers a name already taken, registers a class that breaks the model contract (checked on
import), or a model fails one tiny training step on a throwaway instance (`check_model`, when a
suite uses it: a missing decoder or a train_step without losses shows only there).

Worker processes (`--parallel`, Ray) get the `Plugin` records, source included, from the main
process and `install` them before they resolve a model, so a remote machine needs no copy of the
file; a served model carries its plugin's source and loads it with `served_class`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import linecache
import re
import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import models
from bench.suite import model_contract
from bench.suite.schema import SuiteError
from models.registry import NameTaken

MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
CONTRACT = "README.md, 'Your own model'"
PROBE_WIDTH = 8  # network width of the trial: the contract does not depend on it, its time does


class PluginError(SuiteError):
    """A plugin that cannot be used; str() is the one line to print."""


@dataclass(frozen=True)
class Plugin:
    name: str  # the file's name (aae.py) or the module's (my_models.aae)
    is_module: bool
    origin: str  # the file as the user named it: messages and tracebacks point there
    source: str  # the file's text: what workers and a served model run
    sha256: str
    module: str  # its name in sys.modules
    models: tuple[str, ...] = ()  # the model names it registered

    def identity(self) -> dict[str, str]:
        """What a cell of one of its models holds of it (never its folder): its name and hash."""
        return {"module" if self.is_module else "file": self.name, "sha256": self.sha256}

    @property
    def file_name(self) -> str:
        """The name its source is logged under."""
        return f"{self.name}.py" if self.is_module else self.name


_loaded: dict[str, Plugin] = {}  # resolved path or module name -> the plugin imported from it
_served: dict[str, dict[str, type]] = {}  # sha256 -> the classes of a plugin loaded privately
_checked: set[tuple] = set()  # the (plugin, model, options, shape, hparams) trials passed


def load_all(entries: list[str] | tuple[str, ...], base: Path, where: str) -> list[Plugin]:
    return [load(entry, base, where) for entry in entries]


def load(entry: str, base: Path, where: str) -> Plugin:
    """Import the plugin `entry` (a .py file relative to `base`, or a module name) unless this
    process already has it; `where` names who asked for it (a suite's plugins:, or --plugin)."""
    if entry.endswith(".py"):
        path = base / entry
        try:
            data = path.read_bytes()
        except OSError as err:
            folder = "the working folder" if where == "--plugin" else "the suite file's folder"
            raise PluginError(
                f"{where}: plugin {path} cannot be read ({err.strerror}); give the path of a "
                f"Python file relative to {folder}"
            ) from None
        key, name, origin, module = str(path.resolve()), path.name, str(path), None
    elif MODULE_NAME.fullmatch(entry):
        spec = _find_module(entry, where)
        key, name, origin, module = entry, entry, spec.origin, entry
        data = Path(origin).read_bytes()
    else:
        raise PluginError(
            f"{where}: plugin {entry!r} is neither a .py file nor an importable module name"
        )
    sha256 = hashlib.sha256(data).hexdigest()
    previous = _loaded.get(key)
    if previous is not None and previous.sha256 == sha256:
        return previous
    twin = next((p for p in _loaded.values() if (p.sha256, p.name) == (sha256, name)), None)
    if twin is not None:  # the same file at another path: already imported
        _loaded[key] = twin
        return twin
    if previous is not None:  # edited since it was imported: its models make way
        _unload(previous)
    try:
        source = data.decode()
    except UnicodeDecodeError:
        raise PluginError(f"plugin {origin}: not a UTF-8 text file") from None
    is_module = module is not None
    if not is_module:  # unique per content: two versions may be imported in one process
        module = f"bench_plugin_{_identifier(path.stem)}_{sha256[:12]}"
    plugin = _import(Plugin(name, is_module, origin, source, sha256, module))
    _loaded[key] = plugin
    return plugin


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _find_module(entry: str, where: str):
    try:
        spec = importlib.util.find_spec(entry)
    except ModuleNotFoundError:
        spec = None
    except Exception as err:  # a package above it raised on import
        problem = f"{type(err).__name__}: {err}".splitlines()[0]
        raise PluginError(
            f"{where}: plugin {entry!r}: importing its package raised {problem}"
        ) from None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise PluginError(
            f"{where}: plugin {entry!r}: no module of that name can be imported here; give an "
            "importable module name, or the path of a .py file"
        )
    return spec


def install(plugins: list[Plugin] | tuple[Plugin, ...]) -> None:
    """Import the plugins a main process loaded (a worker process's first step): from their
    source, so that no copy of the file is needed here."""
    for plugin in plugins:
        if any(p.sha256 == plugin.sha256 for p in _loaded.values()):
            continue
        if plugin.is_module:
            _loaded[plugin.name] = load(plugin.name, Path(), "a worker")
            if _loaded[plugin.name].sha256 != plugin.sha256:
                raise PluginError(
                    f"plugin {plugin.name}: this machine's module differs from the main "
                    "process's; install the same version everywhere"
                )
            continue
        previous = _loaded.get(plugin.origin)
        if previous is not None:  # another version, from an earlier run in this process
            _unload(previous)
        _loaded[plugin.origin] = _import(replace(plugin, models=()))


def plugin_of(model: str) -> Plugin | None:
    """The plugin that registered `model`; None for a built-in model."""
    return next((p for p in _loaded.values() if model in p.models), None)


def identity_of(model: str) -> dict[str, str] | None:
    plugin = plugin_of(model)
    return plugin.identity() if plugin is not None else None


def _import(plugin: Plugin) -> Plugin:
    """Run the plugin, then check every class it registered against the model contract; on any
    problem nothing of it stays registered."""
    before = dict(models.REGISTRY)
    try:
        if plugin.is_module:
            importlib.import_module(plugin.module)
        else:
            _execute(plugin)
    except Exception as err:  # anything raised while importing it, a SyntaxError too
        _forget(plugin, before)
        raise PluginError(_import_failure(plugin, err)) from None
    added = tuple(name for name in models.REGISTRY if name not in before)
    if not added and plugin.is_module:  # imported before: its classes are registered already
        added = tuple(n for n, c in models.REGISTRY.items() if c.__module__ == plugin.module)
    if not added:
        _forget(plugin, before)
        raise PluginError(
            f"plugin {plugin.origin}: registers no model; decorate a models.GenerativeModel "
            f'subclass with @models.register("name") ({CONTRACT})'
        )
    for name in added:
        cls = models.REGISTRY[name]
        problem = model_contract.class_problem(cls)
        if problem is not None:
            where = _at(plugin, _class_line(cls))  # while its module can still be inspected
            _forget(plugin, before)
            raise PluginError(
                f"plugin {where}: class {cls.__name__} (model {name!r}) {problem} ({CONTRACT})"
            )
    return replace(plugin, models=added)


def _execute(plugin: Plugin) -> None:
    module = ModuleType(plugin.module)
    module.__file__ = plugin.origin
    # pydantic and dataclasses resolve a class's annotations through sys.modules[its module]
    sys.modules[plugin.module] = module
    # tracebacks and inspect read the lines from here, also where the file itself is absent
    lines = plugin.source.splitlines(keepends=True)
    linecache.cache[plugin.origin] = (len(plugin.source), None, lines, plugin.origin)
    exec(compile(plugin.source, plugin.origin, "exec"), module.__dict__)


def _forget(plugin: Plugin, registry_before: dict[str, type]) -> None:
    models.REGISTRY.clear()
    models.REGISTRY.update(registry_before)
    sys.modules.pop(plugin.module, None)


def _unload(plugin: Plugin) -> None:
    for name in plugin.models:
        models.REGISTRY.pop(name, None)
    sys.modules.pop(plugin.module, None)
    for key in [k for k, p in _loaded.items() if p is plugin]:
        del _loaded[key]


def _import_failure(plugin: Plugin, err: Exception) -> str:
    if isinstance(err, SyntaxError) and err.filename == plugin.origin:
        return f"plugin {_at(plugin, err.lineno)}: SyntaxError: {err.msg}; fix the file"
    line = _line_in(plugin, err)
    if isinstance(err, NameTaken):
        owner = next(
            (f"plugin {p.origin}" for p in _loaded.values() if p.module == err.taken_by.__module__),
            f"the built-in model {err.taken_by.__module__}.{err.taken_by.__qualname__}",
        )
        return (
            f"plugin {_at(plugin, line)}: model name {err.name!r} is taken by {owner}; give "
            "@models.register(...) a name of its own"
        )
    problem = f"{type(err).__name__}: {err}".splitlines()[0]
    return f"plugin {_at(plugin, line)}: importing it raised {problem}; fix the file"


def _line_in(plugin: Plugin, err: BaseException) -> int | None:
    """The line of the plugin's file closest to where `err` was raised."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == plugin.origin]
    return frames[-1].lineno if frames else None


def _at(plugin: Plugin, line: int | None) -> str:
    return f"{plugin.origin}, line {line}" if line else plugin.origin


def _class_line(cls: type) -> int | None:
    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return None


def check_model(
    name: str, options: dict[str, Any], image_shape: tuple[int, ...], hparams: models.Hparams
) -> None:
    """A plugin model's one training step on a throwaway CPU instance (a few random images
    of `image_shape`, networks PROBE_WIDTH wide): what only a built model shows (no decoder, no
    optimizers, train_step without losses, samples of the wrong shape) fails here, before any
    run. Built-in models are not checked (their tests do it); seeds are left as they were."""
    plugin = plugin_of(name)
    if plugin is None:
        return
    hparams = replace(hparams, width=min(hparams.width, PROBE_WIDTH))
    key = (plugin.sha256, name, repr(sorted(options.items())), tuple(image_shape), hparams)
    if key in _checked:
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            problem = model_contract.step_problem(name, options, tuple(image_shape), hparams)
            line = None
        except Exception as err:  # the model's own code raised: a bug in the plugin
            problem = f"raised {type(err).__name__}: {err}".splitlines()[0]
            problem += " in a one-step trial on a throwaway instance"
            line = _line_in(plugin, err)
    if problem is not None:
        line = line or _class_line(models.REGISTRY[name])  # else where the class is
        _unload(plugin)  # as for a problem found on import: nothing of it stays registered
        raise PluginError(f"plugin {_at(plugin, line)}: model {name!r} {problem} ({CONTRACT})")
    _checked.add(key)


def served_class(identity: dict[str, str], source: str, name: str) -> type:
    """The class of model `name` from a plugin's source saved with a served model: the one this
    process registered from the same source, else the source run on its own, beside whatever
    this process registered (a notebook may load models of two versions of one plugin)."""
    sha256 = hashlib.sha256(source.encode()).hexdigest()
    if sha256 != identity["sha256"]:
        raise PluginError(f"plugin {identity}: the saved source does not match its hash")
    plugin = next((p for p in _loaded.values() if p.sha256 == sha256), None)
    if plugin is not None and name in plugin.models:
        return models.REGISTRY[name]
    if sha256 not in _served:
        file_name = identity.get("file") or f"{identity['module']}.py"
        module = f"bench_served_plugin_{_identifier(Path(file_name).stem)}_{sha256[:12]}"
        own = Plugin(file_name, False, file_name, source, sha256, module)
        registered = dict(models.REGISTRY)
        models.REGISTRY.clear()  # its names never meet this process's
        try:
            _execute(own)
            _served[sha256] = dict(models.REGISTRY)
        finally:
            models.REGISTRY.clear()
            models.REGISTRY.update(registered)
    return _served[sha256][name]
