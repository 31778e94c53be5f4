"""Your own model beside the built-in ones: plugin files named by a suite (`plugins:`) or on the
command line (`--plugin`), their hash in their cells' ids, the contract checks that stop a bad
plugin in one line, every executor importing them, and the worked example (the adversarial
autoencoder of suites/plugins/aae.py) trained, reported and served from the store alone."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import models
from bench import keys
from bench.cli import main
from bench.report import provenance
from bench.suite import plugins
from bench.suite.expand import expand
from bench.suite.load import load_suite
from tests.test_bad_input import assert_store_untouched, assert_user_error
from tests.tiny_suites import VAE, tiny_suite

REPO = Path(__file__).resolve().parents[1]

MINE_ENTRY = "  - label: mine\n    model: mine\n"

# the smallest plugin: the VAE under a name of its own
MINE = '''\
"""A VAE under a name of its own."""
from models import register
from models.vae import Vae


@register("mine")
class Mine(Vae):
    pass
'''

# a GenerativeModel with everything the contract asks for; the bad plugins below each break it
# in one place (the {placeholders})
CONTRACT = '''\
"""A decoder trained to match its batch's mean image."""
import torch
from models import GenerativeModel, ModelOptions, descend, register
from models.networks import Decoder, init_weights


@register("mine")
class Mine(GenerativeModel):
    class Options(ModelOptions):
        pass

    def __init__(self, options, image_shape, hparams, device):
        super().__init__(options, image_shape, hparams, device)
        {decoder}
        init_weights(self)
        self.optimizers = {{"decoder": self.adam(self.decoder, hparams.lr_g)}}

    def train_step(self, x):
        loss = (self.decoder(self.prior(len(x))) - x.mean(0)).pow(2).mean()
        descend((loss, self.decoder, self.optimizers["decoder"]))
        {count}
        return {returned}
'''
GOOD = {
    "decoder": "self.decoder = Decoder(image_shape, hparams.latent_dim, hparams.width)",
    "count": "self.num_steps += 1",
    "returned": '{"loss": loss.detach()}',
}


def contract(**broken: str) -> str:
    return CONTRACT.format(**(GOOD | broken))


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test starts from the built-in models, with no plugin imported, and leaves the
    registry and the plugins as it found them."""
    built_in = dict(models.REGISTRY)
    for plugin in plugins._loaded.values():
        for name in plugin.models:
            models.REGISTRY.pop(name, None)
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setattr(plugins, "_checked", set())
    monkeypatch.setattr(plugins, "_served", {})
    yield
    models.REGISTRY.clear()
    models.REGISTRY.update(built_in)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Work in tmp_path: a relative --plugin is read from there, and a default store would land
    there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, files: dict[str, str], plugin_list: str = "[mine.py]", entries=MINE_ENTRY):
    """The plugin files and a suite naming them; the suite's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    path = folder / "suite.yaml"
    path.write_text(tiny_suite("plugged", VAE + entries, top=f"plugins: {plugin_list}\n"))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bench(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_a_suite_plugin_registers_models_like_the_built_in_ones(tmp_path):
    path = write(tmp_path, {"mine.py": MINE})
    suite = load_suite(path)
    mine = [cell for cell in expand(suite) if cell.variant.model == "mine"][0]
    identity = {"file": "mine.py", "sha256": sha256(tmp_path / "mine.py")}
    assert mine.variant.plugin == identity and mine.config()["plugin"] == identity
    assert mine.variant.options == {"kl_weight": 1.0, "pixel_sigma": 0.2}  # resolved as any
    validated = bench("validate", path)
    assert validated.exit_code == 0, validated.output
    assert f"model 'mine': plugin {tmp_path / 'mine.py'}" in validated.output


def test_plugin_option_lists_and_resolves_models_from_the_command_line(in_tmp):
    path = write(in_tmp, {"mine.py": MINE}, plugin_list="[]")
    assert_user_error(bench("validate", path), "unknown model 'mine'")  # before any import
    listed = bench("models", "--plugin", "mine.py")
    assert listed.exit_code == 0, listed.output
    assert re.search(r"^mine: A VAE under a name of its own\.$", listed.output, re.M)
    assert re.search(r"^    kl_weight +float >= 0 +default 1\.0$", listed.output, re.M)
    assert bench("validate", path, "--plugin", "mine.py").exit_code == 0
    missing = bench("models", "--plugin", "nope.py")
    assert_user_error(missing, "--plugin: plugin nope.py cannot be read", "working folder")


def test_an_importable_module_is_a_plugin_too(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_models.py").write_text(MINE)
    monkeypatch.syspath_prepend(tmp_path)
    try:
        suite = load_suite(write(tmp_path / "suite", {}, "[my_plugin_models]"))
        (mine,) = [cell for cell in expand(suite) if cell.variant.model == "mine"]
        digest = sha256(tmp_path / "my_plugin_models.py")
        assert mine.variant.plugin == {"module": "my_plugin_models", "sha256": digest}
    finally:
        sys.modules.pop("my_plugin_models", None)
    missing = write(tmp_path / "missing", {}, "[no_such_plugin_module]")
    with pytest.raises(plugins.PluginError, match="'no_such_plugin_module': no module of that"):
        load_suite(missing)


def test_the_plugin_hash_is_in_its_cells_ids_and_nowhere_else(tmp_path):
    """An edited plugin makes new cells; the same file elsewhere keeps them (the folder is not
    identity); the built-in models' cells keep their ids whether the suite has plugins or not."""
    plain = expand(load_suite(write(tmp_path / "plain", {}, plugin_list="[]", entries="")))
    first = {c.name: c.id for c in expand(load_suite(write(tmp_path / "a", {"mine.py": MINE})))}
    assert first["vae/seed0"] == plain[0].id
    moved = expand(load_suite(write(tmp_path / "b", {"sub/mine.py": MINE}, "[sub/mine.py]")))
    assert {c.name: c.id for c in moved} == first
    (tmp_path / "a" / "mine.py").write_text(MINE + "# edited\n")
    edited = {c.name: c.id for c in expand(load_suite(tmp_path / "a" / "suite.yaml"))}
    assert edited["vae/seed0"] == first["vae/seed0"]
    assert edited["mine/seed0"] != first["mine/seed0"]


def test_the_shipped_example_leaves_the_baselines_cell_ids_alone():
    """aae_vs_baselines' vae and vaegan-pixel-bce have the ids of the same suite without the
    plugin and the aae."""
    path = REPO / "suites" / "aae_vs_baselines.yaml"
    baselines = yaml.safe_load(path.read_text())["models"][:2]
    without = ["plugins=[]", "claims=[]", f"models={json.dumps(baselines)}"]  # JSON is YAML
    example = {c.name: c.id for c in expand(load_suite(path))}
    plain = {c.name: c.id for c in expand(load_suite(path, without))}
    assert set(plain) == {
        f"{label}/seed{s}" for label in ("vae", "vaegan-pixel-bce") for s in (0, 1)
    }
    assert {name: example[name] for name in plain} == plain


CLASH = MINE.replace('"mine"', '"vae"')  # the registered name of a built-in
NOT_A_MODEL = "import torch\n" + MINE.replace("(Vae)", "(torch.nn.Module)")
BAD_PLUGINS = [
    # (case, plugin files, plugins:, what the one line must name)
    ("missing file", {}, "[nope.py]", ["nope.py cannot be read", "suite file's folder"]),
    (
        "exception on import",
        {"mine.py": "import models\n\nraise RuntimeError('no GPU here')\n"},
        "[mine.py]",
        ["mine.py, line 3", "RuntimeError: no GPU here"],
    ),
    (
        "syntax error",
        {"mine.py": MINE.replace("class Mine(Vae):", "class Mine(Vae)")},
        "[mine.py]",
        ["mine.py, line 7", "SyntaxError"],
    ),
    (
        "name of a built-in",
        {"mine.py": CLASH},
        "[mine.py]",
        ["mine.py, line 6", "'vae' is taken by the built-in model models.vae.Vae", "of its own"],
    ),
    (
        "name of another plugin",
        {"a.py": MINE, "mine.py": MINE.replace("name of its own", "twin")},
        "[a.py, mine.py]",
        ["mine.py, line 6", "'mine' is taken by plugin", "a.py"],
    ),
    ("registers nothing", {"mine.py": "import models\n"}, "[mine.py]", ["registers no model"]),
    (
        "not a GenerativeModel",
        {"mine.py": NOT_A_MODEL},
        "[mine.py]",
        ["mine.py, line 7", "class Mine (model 'mine') is not a models.GenerativeModel subclass"],
    ),
    (
        "no train_step",
        {"mine.py": contract().replace("def train_step", "def step")},
        "[mine.py]",
        ["mine.py, line 7", "has no train_step", "train_step(self, x)"],
    ),
    (
        "Options not a ModelOptions",
        {"mine.py": contract().replace("(ModelOptions)", "")},
        "[mine.py]",
        ["has no Options that is a models.ModelOptions", "class Options(ModelOptions)"],
    ),
    (
        "no decoder",
        {
            "mine.py": contract(decoder="self.generator = Decoder(image_shape, 8, 8)").replace(
                "self.adam(self.decoder", "self.adam(self.generator"
            )
        },
        "[mine.py]",
        ["mine.py, line 7: model 'mine' sets no decoder", "self.decoder"],
    ),
    (
        "no losses",
        {"mine.py": contract(returned="None")},
        "[mine.py]",
        ["model 'mine' train_step returned None, not its losses", "loss.detach()"],
    ),
    (
        "losses not detached",
        {"mine.py": contract(returned='{"loss": loss}')},
        "[mine.py]",
        ["train_step's loss 'loss' is not detached"],
    ),
    (
        "steps not counted",
        {"mine.py": contract(count="pass")},
        "[mine.py]",
        ["does not count its calls", "self.num_steps += 1"],
    ),
    (
        "train_step raises",
        {"mine.py": contract(count="self.num_steps += 1 / 0")},
        "[mine.py]",
        ["mine.py, line 21: model 'mine' raised ZeroDivisionError", "one-step trial"],
    ),
]


@pytest.mark.parametrize(
    "files, plugin_list, named", [c[1:] for c in BAD_PLUGINS], ids=[c[0] for c in BAD_PLUGINS]
)
def test_a_bad_plugin_is_one_line_naming_the_file_and_the_fix(in_tmp, files, plugin_list, named):
    path = write(in_tmp, files, plugin_list)
    assert_user_error(bench("validate", path), *named)
    # nothing of a failed plugin stays registered (in the clash, `mine` is a.py's)
    assert "mine" not in models.REGISTRY or plugin_list == "[a.py, mine.py]"


def test_a_bad_plugin_stops_bench_run_before_the_store_is_touched(in_tmp):
    path = write(in_tmp, {"mine.py": contract(returned="{}")})
    args = ("run", path, "--tracking-uri", f"sqlite:///{in_tmp / 'store.db'}", "--no-progress")
    assert_user_error(bench(*args), "mine.py, line 7: model 'mine' train_step returned {}")
    assert_store_untouched(in_tmp)
    assert not (in_tmp / ".bench").exists()  # no checkpoint either


def test_the_probe_step_leaves_the_random_state_alone(tmp_path):
    path = write(tmp_path, {"mine.py": MINE})
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_suite(path)  # imports the plugin and trains one step of a throwaway `mine`
    assert torch.equal(torch.rand(3), expected)


def test_the_aae_trains_each_network_with_its_own_optimizer():
    """Makhzani et al.'s phases: reconstruction (encoder and decoder, lr_g), then the latent
    discriminator (lr_d), then the encoder as its generator (lr_g)."""
    plugins.load("aae.py", REPO / "suites" / "plugins", "test")
    x = torch.rand(8, 1, 28, 28) * 2 - 1

    def moved(lr_g: float, lr_d: float) -> dict[str, bool]:
        """Which networks one train_step moves, with these learning rates."""
        torch.manual_seed(0)
        hparams = models.Hparams(latent_dim=4, width=8, lr_g=lr_g, lr_d=lr_d)
        model = models.build("aae", {"hidden": 16}, (1, 28, 28), hparams)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        losses = model.train_step(x)
        assert set(losses) == {"recon", "loss_d", "loss_g"} and model.num_steps == 1
        return {
            net: any(
                not torch.equal(p, before[f"{net}.{name}"]) for name, p in part.named_parameters()
            )
            for net, part in model.named_children()
        }

    assert moved(lr_g=1e-3, lr_d=0.0) == {"encoder": True, "decoder": True, "discriminator": False}
    assert moved(lr_g=0.0, lr_d=1e-3) == {"encoder": False, "decoder": False, "discriminator": True}
    aae = models.model_class("aae")
    assert aae.has_encoder and aae.has_discriminator and not aae.discriminator_on_images


# the shipped example suite at a test's size, on synthetic data
TINY = (
    "--set",
    "dataset={name: synthetic, train_limit: 64, eval_limit: 32}",
    "--set",
    "budget={steps: 4, batch_size: 16, latent_dim: 8, width: 8, log_every: 2}",
    "--set",
    "seeds=[0]",
    "--set",
    "evaluation={num_samples: 32, batch_size: 16, calibration_samples: 64, grid_size: 16, "
    "feature_extractors: [domain], ood: [noise], ood_images: 32}",
)


def copy_of_the_example(folder: Path) -> Path:
    """suites/aae_vs_baselines.yaml and its plugin, copied to `folder` (the same layout)."""
    (folder / "plugins").mkdir(parents=True)
    shutil.copy(REPO / "suites" / "plugins" / "aae.py", folder / "plugins" / "aae.py")
    return Path(shutil.copy(REPO / "suites" / "aae_vs_baselines.yaml", folder))


def test_a_plugin_cell_logs_its_plugin_and_serves_without_it(in_tmp):
    """One cell of a plugin model: its hash and source in the run, the report's provenance row,
    found finished while unchanged, a new cell once edited, and its served model loaded after
    the file is gone and the plugin forgotten."""
    path = write(in_tmp, {"mine.py": MINE})
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    args = ("run", path, "--set", "models=[{label: mine, model: mine}]", "--tracking-uri", uri)
    assert "1 finished" in bench(*args, "--no-progress").output
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("plugged").experiment_id
    (run,) = client.search_runs([experiment])
    digest = sha256(in_tmp / "mine.py")
    assert run.data.params["plugin.file"] == "mine.py"
    assert run.data.params["plugin.sha256"] == digest
    logged = client.download_artifacts(run.info.run_id, f"{keys.ARTIFACT_PLUGINS}/mine.py", in_tmp)
    assert Path(logged).read_text() == MINE
    (row,) = provenance.plugin_rows([run])
    assert row[0] == "Plugins" and f"model mine: mine.py, sha256 {digest}" in row[1]
    assert "0 finished, 1 skipped" in bench(*args, "--no-progress").output
    (in_tmp / "mine.py").write_text(MINE + "# edited\n")
    assert "1 finished, 0 skipped" in bench(*args, "--no-progress").output

    (in_tmp / "mine.py").unlink()
    for plugin in list(plugins._loaded.values()):
        plugins._unload(plugin)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert served.predict({"n": 3, "seed": 0}).shape == (3, 1, 28, 28)
    assert "mine" not in models.REGISTRY  # loaded beside the registry, not into it


@pytest.mark.slow
def test_the_aae_example_trains_reports_and_serves_from_the_store_alone(tmp_path):
    suite = copy_of_the_example(tmp_path / "suites")
    plugin = tmp_path / "suites" / "plugins" / "aae.py"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = ("run", suite, *TINY, "--tracking-uri", uri, "--checkpoint-dir", tmp_path / "ck")
    result = bench(*run, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "3 finished, 0 skipped" in result.output

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("aae_vs_baselines").experiment_id
    runs = {r.data.tags[keys.TAG_LABEL]: r for r in client.search_runs([experiment])}
    aae = runs["aae"]
    assert aae.data.params["plugin.file"] == "aae.py"
    assert aae.data.params["plugin.sha256"] == sha256(plugin)
    assert not [k for k in runs["vae"].data.params if k.startswith("plugin")]
    logged = client.download_artifacts(aae.info.run_id, f"{keys.ARTIFACT_PLUGINS}/aae.py", tmp_path)
    assert Path(logged).read_text() == plugin.read_text()
    # an encoder's metrics; a discriminator on codes: counted, but no image-discriminator metric
    metrics = aae.data.metrics
    assert {keys.RECON_MSE, "probe_accuracy_encoder", "ood_auroc_elbo_noise"} <= set(metrics)
    assert metrics["discriminator_updates"] == metrics["generator_updates"] == 4
    assert not [k for k in metrics if "probe_accuracy_discriminator" in k or "_disc_" in k]
    assert "probe_accuracy_discriminator" in runs["vaegan-pixel-bce"].data.metrics

    report = ("report", suite, *TINY, "--tracking-uri", uri, "--out", tmp_path / "report")
    reported = bench(*report, "--format", "md")
    assert reported.exit_code == 0, reported.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"| Plugins | model aae: aae.py, sha256 {sha256(plugin)} " in text

    assert "0 finished, 3 skipped" in bench(*run, "--no-progress").output
    plugin.write_text(plugin.read_text() + "# edited: new cells for the aae, none for the others\n")
    edited = bench(*run, "--no-progress")
    assert "1 finished, 2 skipped" in edited.output, edited.output

    # the store alone: no plugin file, a process that never imported it
    shutil.rmtree(plugin.parent)
    served = subprocess.run(
        [sys.executable, "-c", SERVE, uri, aae.info.run_id],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.splitlines() == ["(4, 1, 28, 28)", "(2, 1, 28, 28)", "dcgan,vae,vaegan"]


SERVE = """
import sys, mlflow, numpy as np, models
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(f"runs:/{sys.argv[2]}/model")
print(model.predict({"n": 4, "seed": 0}).shape)
print(model.predict({"images": np.random.rand(2, 1, 28, 28).astype(np.float32)}).shape)
print(",".join(sorted(models.REGISTRY)))  # the plugin's model never joined this registry
"""


def readme_plugin() -> str:
    """The complete plugin of README.md's "Your own model", as a reader would copy it."""
    section = (REPO / "README.md").read_text().split("## Your own model", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_plugin_works_outside_the_checkout(in_tmp):
    (in_tmp / "my_models.py").write_text(readme_plugin())
    path = write(in_tmp, {}, "[my_models.py]")
    only = "models=[{label: laplace-vae, model: laplace-vae}]"
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    result = bench("run", path, "--set", only, "--tracking-uri", uri, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "1 finished" in result.output
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("plugged").experiment_id])
    assert {keys.RECON_MSE, "train/recon", "train/kl"} <= set(run.data.metrics)


def run_in_workers(folder: Path, *executor: str):
    """`bench run` of vae + mine, mine from --plugin only (not in the suite): (result, runs by
    label, the cell ids this process expands)."""
    path = write(folder, {"mine.py": MINE}, plugin_list="[]")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    args = ("run", path, "--plugin", "mine.py", "--tracking-uri", uri, "--no-progress")
    result = bench(*args, "--checkpoint-dir", folder / "ck", *executor)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("plugged")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    ids = {cell.name: cell.id for cell in expand(load_suite(path))}
    return result, {run.data.tags[keys.TAG_LABEL]: run for run in runs}, ids


def assert_ran_elsewhere(result, runs: dict, ids: dict) -> None:
    """Both cells finished under the ids of this process, in other processes than this one."""
    assert result.exit_code == 0, result.output
    assert "2 finished" in result.output
    assert {run.data.tags[keys.TAG_CELL_ID] for run in runs.values()} == set(ids.values())
    assert runs["mine"].data.params["plugin.sha256"] == plugins.plugin_of("mine").sha256
    for run in runs.values():
        assert run.data.tags[keys.TAG_WORKER].split("/")[1] != str(os.getpid())


# spawned processes import torch and MLflow afresh (~10 s of 2 cores each): slow, as in
# tests/test_executors.py
@pytest.mark.slow
def test_spawned_parallel_workers_import_the_plugins(in_tmp):
    """The main process hands its plugins' source to the `--parallel` workers it spawns, which
    have imported nothing of them (the plugin came from --plugin, not from the suite file)."""
    result, runs, ids = run_in_workers(in_tmp, "--parallel", "2")
    assert "2 cells on 2 processes" in result.output
    assert_ran_elsewhere(result, runs, ids)


@pytest.mark.slow
def test_ray_tasks_import_the_plugins(in_tmp):
    ray = pytest.importorskip("ray", reason="the Ray executor needs the 'ray' extra")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        result, runs, ids = run_in_workers(in_tmp, "--executor", "ray")
    finally:
        ray.shutdown()
    assert_ran_elsewhere(result, runs, ids)
