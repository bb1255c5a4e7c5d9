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
    """Registrations made by a test are forgotten after it."""
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
            "my_rae",
            "--code-penalty",
            "0.5",
            "--out",
            str(run),
            *common,
        ]
    )
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())["run"]
    assert cfg["imports"] == [os.path.abspath(example_file)]
    assert cfg["model"]["options"] == {"code_penalty": 0.5}
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert rows[-1]["train_terms"]["penalty"] > 0 and rows[-1]["selection"] == "test_recon_nll"

    # A later command (a new process: nothing imported) finds the model without --import,
    # because the run remembers the file.
    registry._REGISTRY.pop("my_rae")
    for name in [m for m in sys.modules if m.startswith("aevae_user_models_")]:
        del sys.modules[name]
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), "--no-fd", "--json", str(out_json)]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["model"] == "my_rae" and "latent_prior_fd" in metrics
    assert "test_nll_iwae" not in metrics  # no density: n/a, not an error
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "s.png")]) == 0

    capsys.readouterr()
    cmp = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--import",
            example_file,
            "--models",
            "ae,my_rae",
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
    assert list(m["models"]) == ["ae", "my_rae"]
    assert "test_mse" in m["comparisons"]["my_rae-ae"]
    assert "| my_rae |" in (cmp / "report.md").read_text()


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
        textwrap.dedent(guide_example()).replace('"my_rae"', '"paper_rae"')
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


def test_every_public_name_imports_from_the_package():
    import aevae_jax

    for name in aevae_jax.__all__:
        assert getattr(aevae_jax, name) is not None, name
    from aevae_jax import run_compare, run_zoo

    assert callable(run_compare) and callable(run_zoo)
