"""Write experiments/README.md from the experiments' own result files.

Each experiment writes experiments/results/<name>/<name>.md (its command, runtime,
tables, verdicts and figures) and <name>.json; this script puts them under one
introduction, in the order of experiments/run_all.sh, with the figure links made
relative to experiments/. Nothing here is typed by hand but the introduction: every
number in the README comes from a result file.

    python experiments/collect.py
"""

from __future__ import annotations

import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
# (name, the article's claim it tests, what it trains in run_all.sh's order), in that order.
EXPERIMENTS = (
    ("latent_2d", "a VAE's latent space is regular, an AE's need not be",
     "AE, VAE at L = 2 (measured while other work loaded the machine)"),
    ("denoising", "autoencoders are for denoising", "the standard AE and VAE, DAE, DVAE"),
    ("uncertainty", "VAEs model uncertainty", "nothing: the standard AE and VAE"),
    ("rate_distortion", "the KL term trades reconstruction for a regular latent space",
     "5 beta-VAEs (the VAE is beta 1, the AE reused)"),
    ("generation", "VAEs generate; AEs have limited generative ability",
     "IWAE, VQ-VAE, CVAE, AAE (AE, VAE, beta-VAE reused)"),
    ("augmentation", "VAEs are for data augmentation", "2 CVAEs on the labelled subsets"),
    ("representation", "autoencoders learn features and reduce dimension",
     "all 20 models (3 epochs)"),
    ("anomaly", "both serve anomaly detection",
     "40 one-class models (AE, VAE, DAE, VQ-VAE x 10 classes)"),
    ("disentanglement", "what the KL term and its variants buy in the code (known factors)",
     "AE, VAE, beta-VAE, beta-TC-VAE, FactorVAE, DIP-VAE-I on sprites (L = 10, 20 epochs)"),
)  # fmt: skip

INTRO = """# Experiments: the article's advice, measured

The article ends with advice: autoencoders to compress or clean data and learn features,
VAEs to generate, augment data and model uncertainty, both for anomaly detection. Each
claim is one script here, one command, that writes a markdown table, a JSON file and
figures to `experiments/results/<name>/`. This file is assembled from those files by
`python experiments/collect.py`; README.md and docs/results.md sum the verdicts up claim by claim.

**Protocol.** Fashion-MNIST (60,000 training and 10,000 test images), binarized as in
the main job (dynamic binarization in training, one fixed draw for the test images),
the project's MLP backbone (400 hidden units, ReLU), a 16-dimensional code unless an
experiment varies it, Adam 1e-3, batch 128, 10 epochs unless the experiment says
otherwise (the main job trains 30). Every model is trained with seeds 0, 1 and 2 at once,
as one compiled program (`aevae train --seeds`), and every number is the mean ± sample
standard deviation over the three seeds. **A verdict states a difference only when the
gap between two means exceeds the sum of their standard deviations over seeds**
(`experiment.differs`); otherwise it says there is no measurable difference. Only
the last epoch of each model is used (no selection on the test split).

**Shared models.** Trained models are cached by configuration under
`runs/experiments/cache/` (not committed): the latent-16 AE and VAE serve five of the
experiments, and a second run of any script reads its models back. `bash
experiments/run_all.sh` runs them in the order below; the runtimes given are for
that order on this project's 2-core CPU, so an experiment that found its models cached
is faster than it would be alone (the table says what each trained). Every training
run also writes TensorBoard summaries (`tensorboard --logdir runs/experiments/cache`).

**Known factors.** `disentanglement` alone uses other data: the project's sprites
(`--dataset sprites`: shape, scale, orientation, x and y of 24,576 drawn 32 x 32 images),
a 10-dimensional code and 20 epochs, and scores the test codes with MIG, SAP, DCI and
the FactorVAE score. What its numbers show: beta-TC-VAE has the highest mean on five of
the six metrics, but against beta-VAE only its informativeness and FactorVAE score gap
exceed the seed spread, and no paper's claim of better disentanglement than its baseline
holds at three seeds; what is measurable is the price, a larger reconstruction error with
every extra penalty. The model means span only about 2 to 7 seed deviations per metric,
so, as Locatello et al. (2019) found, one seed could reorder most neighbouring models.

**Quick mode.** `--quick` trains one epoch on 1,024 training and 512 test images (fewer
models, classes or sizes where the script says so), in under a minute each; the test
suite runs every script that way. Its numbers mean nothing.

| experiment | the article's claim it tests | command | trains | runtime |
|---|---|---|---|---|
"""


def section(name: str) -> tuple[str, dict]:
    directory = os.path.join(HERE, "results", name)
    with open(os.path.join(directory, f"{name}.md")) as f:
        text = f.read()
    with open(os.path.join(directory, f"{name}.json")) as f:
        record = json.load(f)
    # Figures are linked from the results directory: make them relative to experiments/.
    text = re.sub(r"\]\((?!https?:)([^)/]+\.png)\)", rf"](results/{name}/\1)", text)
    return text, record


def main() -> None:
    rows, sections = [], []
    for name, claim, trains in EXPERIMENTS:
        command = f"`python experiments/{name}.py`"
        if not os.path.exists(os.path.join(HERE, "results", name, f"{name}.json")):
            rows.append(f"| {name} | {claim} | {command} | {trains} | not run yet |")
            continue
        text, record = section(name)
        minutes = record["seconds"] / 60
        rows.append(f"| [{name}](#{name}) | {claim} | {command} | {trains} | {minutes:.1f} min |")
        sections.append(f'<a id="{name}"></a>\n\n{text}')
    readme = INTRO + "\n".join(rows) + "\n\n" + "\n\n".join(sections)
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write(readme)
    print(f"wrote {os.path.join(HERE, 'README.md')}")


if __name__ == "__main__":
    main()
