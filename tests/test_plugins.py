"""Models from outside the package: docs/adding_a_model.md's example model, imported
from a file, trains, evaluates, samples and takes part in a comparison; an installed
package's entry point registers its models; a run remembers where its model came from."""

import json
import os
import re
import sys
import textwrap

import pytest

import aevae_jax.models as registry
from aevae_jax.cli.main import main

GUIDE = os.path.join(os.path.dirname(__file__), "..", "docs", "adding_a_model.md")


def guide_example() -> str:
    """The model file that docs/adding_a_model.md walks through."""
    text = open(GUIDE).read()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test are forgotten after it. The built-in models are loaded
    first, so that a test which happens to be the process's first to touch the registry
    does not load them into the copy it throws away."""
    registry.model_names()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    yield


@pytest.fixture
def example_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper") / "my_models.py"
    path.write_text(guide_example())
    return str(path)


def test_guide_model_from_a_file_trains_evaluates_samples_and_compares(
    example_file, small_npz, tmp_path, capsys, clean_registry
):
    common = [
        "--dataset",
        small_npz,
        "--hidden",
        "32",
        "--latent-dim",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--train-size",
        "1024",
        "--quiet",
    ]
    run = tmp_path / "run"
    code = main(
        [
            "--import",
            example_file,
            "train",
            "--model",
            "my_hvae",
            "--top-dim",
            "3",
            "--out",
            str(run),
            *common,
        ]
    )
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())["run"]
    assert cfg["imports"] == [os.path.abspath(example_file)]
    assert cfg["model"]["options"] == {"top_dim": 3}
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert rows[-1]["train_terms"]["elbo"] < 0 and rows[-1]["selection"] == "test_neg_elbo"

    # A later command (a new process: nothing imported) finds the model without --import,
    # because the run remembers the file.
    registry._REGISTRY.pop("my_hvae")
    for name in [m for m in sys.modules if m.startswith("aevae_user_models_")]:
        del sys.modules[name]
    out_json = tmp_path / "eval.json"
    args = ["evaluate", "--run", str(run), "--no-fd", "--iwae-k", "10", "--json", str(out_json)]
    assert main(args) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["model"] == "my_hvae" and "latent_prior_fd" in metrics
    # Its own prior and both layers: a rate from its hierarchy, active units per layer,
    # and a -ELBO that is distortion + rate within noise.
    assert metrics["test_kl"] > 0 and "active_units_z2" in metrics and "kl_per_dim" not in metrics
    gap = metrics["elbo_gap"]
    assert abs(gap["diff"]) < 4 * (gap["hi"] - gap["lo"]) / 3.92
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "s.png")]) == 0

    capsys.readouterr()
    cmp = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--import",
            example_file,
            "--models",
            "ae,my_hvae",
            "--pair",
            "ae,vae",
            "--iwae-k",
            "2",
            "--timing-rounds",
            "2",
            "--out",
            str(cmp),
            *common,
        ]
    )
    assert code == 0, capsys.readouterr().err
    m = json.loads((cmp / "metrics.json").read_text())
    assert list(m["models"]) == ["ae", "my_hvae"]
    assert "test_mse" in m["comparisons"]["my_hvae-ae"]
    assert "| my_hvae |" in (cmp / "report.md").read_text()


def test_models_of_an_installed_package_come_through_its_entry_point(
    tmp_path, monkeypatch, clean_registry, capsys
):
    site = tmp_path / "site"
    (site / "paper_models-1.0.dist-info").mkdir(parents=True)
    (site / "paper_models-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: paper-models\nVersion: 1.0\n"
    )
    (site / "paper_models-1.0.dist-info" / "entry_points.txt").write_text(
        "[aevae_jax.models]\npaper = paper_models\n"
    )
    (site / "paper_models.py").write_text(
        textwrap.dedent(guide_example()).replace('"my_hvae"', '"paper_rae"')
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_loaded", False)
    assert "paper_rae" in registry.model_names()
    assert main(["models"]) == 0
    assert "paper_rae:" in capsys.readouterr().out
    sys.modules.pop("paper_models", None)


def test_a_model_registered_twice_under_one_name_is_an_error(clean_registry):
    registry.register("twice")(lambda cfg, spec, opts: None)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("twice")(lambda cfg, spec, opts: None)


def test_a_model_file_imported_by_a_script_is_not_registered_again(
    example_file, clean_registry, monkeypatch
):
    """An analysis script imports the model file as a module, then load_run (or --import)
    names the same file: one registration, no 'registered twice'."""
    import importlib

    monkeypatch.syspath_prepend(os.path.dirname(example_file))
    module = importlib.import_module("my_models")
    try:
        assert registry.import_models(example_file) == os.path.abspath(example_file)
        assert registry.model_info("my_hvae").factory is module.make_hvae
    finally:
        sys.modules.pop("my_models", None)


def test_the_same_file_under_two_module_names_gets_a_hint(example_file, clean_registry):
    import importlib.util

    def load(name):
        spec = importlib.util.spec_from_file_location(name, example_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)

    try:
        load("first_name")
        with pytest.raises(ValueError, match="same file was imported under two module names"):
            load("second_name")
    finally:
        sys.modules.pop("first_name", None)
        sys.modules.pop("second_name", None)


def test_every_public_name_imports_from_the_package():
    import aevae_jax

    for name in aevae_jax.__all__:
        assert getattr(aevae_jax, name) is not None, name
    from aevae_jax import Claim, Prior  # the protocol's documented parts

    assert Claim._fields[0] == "metric" and Prior._fields[:2] == ("log_prob", "sample")
    from aevae_jax import run_compare, run_zoo

    assert callable(run_compare) and callable(run_zoo)
