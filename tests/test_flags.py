"""The training flags are made from the config fields' options: every field has one (or
a stated reason not to), a config goes to flags and back unchanged, a saved run's config
comes back as the parser's defaults for `--resume`, and `--help` shows each default."""

import dataclasses

import pytest

from aevae_jax.cli import main as cli_main
from aevae_jax.cli.flags import config_from_args, model_options_from_args
from aevae_jax.cli.parser import build_parser
from aevae_jax.config import (
    OPTION,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    option_fields,
)
from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError
from aevae_jax.train.rundir import write_config

# Fields set otherwise than by a flag of their own, and why.
NOT_FLAGS = {
    "model.name": "--model (train) and --models (compare, zoo) name it",
    "model.options": "each model's own flags, made from its options dataclass",
    "imports": "--import, read before the parser is built (it decides which models exist)",
}

# Every field differs from its default, and the whole is still a valid config.
NON_DEFAULT = RunConfig(
    data=DataConfig(dataset="mnist", binarize="none", train_size=512, data_dir="/data/tfds"),
    model=ModelConfig(
        name="beta_vae",
        backbone="conv",
        hidden=(512, 256),
        latent_dim=8,
        activation="tanh",
        likelihood="logistic",
        conv_channels=(16, 32, 64),
        init="torch",
        options={"beta": 2.0, "kl_schedule": "linear"},
        dtype="bfloat16",
    ),
    optim=OptimConfig(
        optimizer="adamw",
        lr=3e-4,
        schedule="warmup_cosine",
        warmup_steps=100,
        grad_clip=1.5,
        weight_decay=0.01,
    ),
    epochs=3,
    batch_size=64,
    seed=7,
    out="runs/elsewhere",
    checkpoint_every=2,
    nonfinite_patience=5,
    tensorboard=not RunConfig().tensorboard,
    image_every=2,
    keep_best=False,
    imports=("my_models.py",),
)


def leaves(cfg, prefix=""):
    """(dotted name, field, value) of every field of `cfg` that is not a config itself."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def argv_of(cfg: RunConfig) -> list[str]:
    """`cfg` as `aevae train` flags, written out by hand from each field's flag name."""
    argv = ["train", "--model", cfg.model.name]
    for path, _, opt in option_fields():
        value = dict((p, v) for p, _, v in leaves(cfg))[path]
        if isinstance(value, bool):
            argv.append(opt.flag if value else "--no-" + opt.flag[2:])
        elif path == "model.hidden":  # one value with commas
            argv += [opt.flag, ",".join(map(str, value))]
        elif isinstance(value, tuple):  # several values
            argv += [opt.flag, *map(str, value)]
        elif value is not None:
            argv += [opt.flag, str(value)]
    for name, value in cfg.model.options.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    for module in cfg.imports:
        argv += ["--import", module]
    return argv


def parsed_config(argv, selected=("beta_vae",), defaults=None) -> RunConfig:
    args = build_parser(list(selected), train_defaults=defaults).parse_args(argv)
    model = getattr(args, "model", "vae")  # compare and zoo take --models instead
    return config_from_args(args, model, model_options_from_args(args))


def test_every_config_field_has_a_flag_except_those_named_here():
    without = {path for path, f, _ in leaves(RunConfig()) if OPTION not in f.metadata}
    assert without == set(NOT_FLAGS)
    options = [opt for _, _, opt in option_fields()]
    assert len(options) == len(list(leaves(RunConfig()))) - len(NOT_FLAGS)
    flags = [opt.flag for opt in options] + [opt.shortcut[0] for opt in options if opt.shortcut]
    assert len(set(flags)) == len(flags) and len({o.dest for o in options}) == len(options)
    text = build_parser().format_help()  # every subparser is built without a clash
    assert "train" in text


def test_the_non_default_config_changes_every_field():
    default = dict((p, v) for p, _, v in leaves(RunConfig()))
    same = [p for p, _, v in leaves(NON_DEFAULT) if v == default[p]]
    assert same == []


def test_a_config_goes_to_flags_and_back_unchanged():
    assert parsed_config(argv_of(NON_DEFAULT)) == NON_DEFAULT


def test_no_flags_give_the_dataclass_defaults_and_each_command_its_own():
    assert parsed_config(["train"]) == RunConfig()
    compare = parsed_config(["compare"], selected=())
    assert (compare.out, compare.epochs) == ("runs/compare", 30)
    assert dataclasses.replace(compare, out="runs/train", epochs=10) == RunConfig()
    zoo = parsed_config(["zoo"], selected=())
    assert (zoo.out, zoo.epochs) == ("runs/zoo", 10)


def test_shortcuts_and_unset_flags():
    args = build_parser().parse_args(["train"])
    assert args.seed is None  # so that a given --seed with --seeds is refused
    assert parsed_config(["train", "--stop-on-nonfinite"]).nonfinite_patience == 1
    on = RunConfig().tensorboard
    assert parsed_config(["train", "--no-tensorboard"]).tensorboard is False
    assert parsed_config(["train", "--tensorboard"]).tensorboard is True
    assert parsed_config(["train"]).tensorboard is on
    assert parsed_config(["train", "--no-keep-best"]).keep_best is False
    assert parsed_config(["train", "--hidden", "64,", "32", "16,8"]).model.hidden == (64, 32, 16, 8)
    with pytest.raises(UserError, match="--conv-channels takes integers"):
        parsed_config(["train", "--conv-channels", "3x"])


def save_run(directory, cfg: RunConfig) -> None:
    directory.mkdir(parents=True)
    spec = DataSpec(name=cfg.data.dataset, image_shape=(28, 28, 1), num_classes=10)
    write_config(str(directory), dataclasses.replace(cfg, out=str(directory)), spec, 4)


def resumed_parse(raw: list[str]):
    parser, imports = cli_main._parser_for(raw)
    args = parser.parse_args(raw)
    args.imports = imports
    return args, config_from_args(args, args.model, model_options_from_args(args))


def test_resume_defaults_reproduce_the_saved_config(tmp_path):
    (tmp_path / "my_models.py").write_text("")  # registers nothing; importable
    module = str(tmp_path / "my_models.py")
    saved = dataclasses.replace(NON_DEFAULT, imports=(module,))
    save_run(tmp_path / "run", saved)
    args, cfg = resumed_parse(["train", "--resume", "--out", str(tmp_path / "run")])
    assert cfg == dataclasses.replace(saved, out=str(tmp_path / "run"))
    assert args.resume and args.seeds is None
    # A flag given beside --resume still wins over the saved value.
    _, cfg = resumed_parse(["train", "--resume", "--out", str(tmp_path / "run"), "--epochs", "9"])
    assert cfg.epochs == 9 and cfg.optim == saved.optim


def test_resume_defaults_of_the_runs_of_several_seeds(tmp_path):
    cfg = dataclasses.replace(NON_DEFAULT, imports=())
    for seed in (2, 0):
        save_run(tmp_path / "s" / f"seed_{seed}", dataclasses.replace(cfg, seed=seed))
    args, resumed = resumed_parse(["train", "--resume", "--out", str(tmp_path / "s")])
    assert args.seeds == "0,2" and args.seed is None
    assert resumed == dataclasses.replace(cfg, seed=0, out=str(tmp_path / "s"))


def help_entries(text: str) -> dict[str, str]:
    """--help's entries by their first flag, each as one line of text."""
    entries, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += line
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def expected_default(opt, value) -> str:
    if value is None:
        return opt.default_text
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


@pytest.mark.parametrize(
    "argv,overrides",
    [
        (["train", "--help"], {}),
        (["compare", "--help"], {"out": "runs/compare", "epochs": 30}),
        (["zoo", "--help"], {"out": "runs/zoo", "epochs": 10}),
    ],
)
def test_help_lists_each_flag_with_its_default(argv, overrides, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # no wrapping inside a default
    with pytest.raises(SystemExit):
        cli_main.main(argv)
    entries = help_entries(capsys.readouterr().out)
    default = dataclasses.replace(RunConfig(), **overrides)
    for path, _, opt in option_fields():
        value = dict((p, v) for p, _, v in leaves(default))[path]
        assert f"default: {expected_default(opt, value)})" in entries[opt.flag] + ")", opt.flag
        if opt.help:
            assert opt.help in entries[opt.flag]
        if opt.choices:
            assert "{" + ",".join(opt.choices) + "}" in entries[opt.flag]
        if opt.shortcut:
            assert entries[opt.shortcut[0]].endswith(opt.shortcut[2])


def test_help_of_a_resumed_run_shows_its_saved_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    save_run(tmp_path / "run", dataclasses.replace(NON_DEFAULT, imports=()))
    with pytest.raises(SystemExit):
        cli_main.main(["train", "--resume", "--out", str(tmp_path / "run"), "--help"])
    entries = help_entries(capsys.readouterr().out)
    assert "(default: 512 256)" in entries["--hidden"]
    assert "(default: beta_vae)" in entries["--model"]
    assert "(default: 0.0003)" in entries["--lr"]


def test_the_dataset_help_names_every_data_source():
    from aevae_jax.data.sources import PHOTOS_NAME, TFDS_NAMES

    text = DataConfig.__dataclass_fields__["dataset"].metadata[OPTION].help
    for name in (*TFDS_NAMES, PHOTOS_NAME, ".npz"):
        assert name in text
