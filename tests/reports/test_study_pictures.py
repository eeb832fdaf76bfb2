"""The lab's own plans run as a quick study on the synthetic data set, then its report: the pictures the report
embeds, its table of contents, the report in a real browser (Chromium through Selenium), and what the MLflow UI
shows of the runs (experiment kinds and descriptions, run names, image series, system metrics, the GAN registry,
`genlab sample` on the study's models)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from ..conftest import ROOT, run_cli, store_in
from .browser import artifacts_dir, chromium_driver

SYNTHETIC = {"dataset": "synthetic", "limit": 400}


def synthetic_plans(folder: Path) -> Path:
    """The lab's plans (experiments/p*.yaml) on 400 synthetic images, one epoch, 200 images per quality score."""
    folder.mkdir()
    for path in sorted((ROOT / "experiments").glob("p*.yaml")):
        plan = yaml.safe_load(path.read_text())
        plan["defaults"].update(SYNTHETIC)
        def quick(value):
            return value.get("quick", 0) if isinstance(value, dict) else value or 0

        default_limit = quick(plan["defaults"].get("limit"))
        for params in (plan["defaults"], *(run.get("params", {}) for run in plan["runs"])):
            # a run's own smaller limit (P1Q3's positive control) stays smaller, as in the lab's plans
            limit = 200 if 0 < quick(params.get("limit")) < default_limit else 400
            for key, value in (("limit", limit), ("epochs", 1), ("eval_samples", 200), ("nll_images", 20)):
                if params.get(key):  # gradvar's epochs: 0 stays 0
                    params[key] = value
        for run in plan["runs"]:
            if "n_samples" in run.get("params", {}):
                run["params"].update(n_samples=6, batch_size=8)
        (folder / path.name).write_text(yaml.safe_dump(plan, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory, empty_store_file):
    tmp = tmp_path_factory.mktemp("lab")
    plans = synthetic_plans(tmp / "plans")
    with store_in(tmp, empty_store_file) as uri, pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE_DIR", str(tmp / "cache"))
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # runs of a few seconds still get samples
        assert run_cli(["study", "--plans", str(plans), "--study", "lab1"]) == 0
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert run_cli(["report", "--study", "lab1", "--out", str(tmp / "report")]) == 0
        client = MlflowClient()
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
        yield {"dir": tmp, "uri": uri, "client": client, "runs": runs,
               "html": (tmp / "report" / "en" / "report.html").read_text(),
               "md": {lang: (tmp / "report" / lang / "report.md").read_text() for lang in ("en", "fr")}}


def by_ref(lab, ref: str):
    return next(r for r in lab["runs"] if r.data.tags.get("genlab.ref") == ref)


def decoded_images(html: str) -> list[Image.Image]:
    import base64

    return [Image.open(io.BytesIO(base64.b64decode(b64))) for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


# ---------------------------------------------------------------- the report's pictures

def test_report_embeds_the_pictures_of_every_question(lab):
    html = lab["html"]
    assert len(decoded_images(html)) >= 20
    for lang, md in lab["md"].items():
        for gallery in ("p1q1_pictures", "p1q2_pictures", "p1q2_manifold", "p1q3_pictures", "p2q1_pictures"):
            assert f"figures/{gallery}_" in md, (lang, gallery)
    md = lab["md"]["en"]
    # P1Q2: samples and interpolations per beta; P1Q3: VAE and AE per latent_dim; P2Q1: step 0 and end per arm
    for beta in ("0", "1", "8"):
        assert f"| β = {beta} | ![prior samples, β = {beta}](figures/p1q2_pictures_{beta}_pic_samples.png)" in md
    for z in ("2", "128"):
        assert f"figures/p1q3_pictures_{z}_vae.png" in md and f"figures/p1q3_pictures_{z}_ae.png" in md
    for arm in ("vae-decoder", "random", "ae-decoder"):
        assert f"p2q1_pictures_{arm}_pic_step0.png" in md and f"p2q1_pictures_{arm}_pic_final.png" in md


def test_a_picture_is_the_runs_own_artifact(lab, tmp_path):
    """The report shows what the run logged: its P2Q1 step-0 grid is the GAN run's pictures/samples_step0.png."""
    run = by_ref(lab, "p2q1_gan_random_s0")
    logged = Image.open(lab["client"].download_artifacts(run.info.run_id, "pictures/samples_step0.png", str(tmp_path)))
    shown = Image.open(lab["dir"] / "report" / "en" / "figures" / "p2q1_pictures_random_pic_step0.png")
    assert np.array_equal(np.asarray(logged.convert("L")), np.asarray(shown.convert("L")))


def test_decoder_initialised_generator_draws_the_vae_samples_at_step_0(lab, tmp_path):
    """The same fixed noise through the same weights: the GAN's step-0 grid is the VAE's prior-samples grid."""
    gan, vae = by_ref(lab, "p2q1_gan_vae_decoder_s0"), by_ref(lab, "p1q2_conv_beta1_s0")
    client = lab["client"]
    step0 = Image.open(client.download_artifacts(gan.info.run_id, "pictures/samples_step0.png", str(tmp_path / "g")))
    samples = Image.open(client.download_artifacts(vae.info.run_id, "pictures/samples.png", str(tmp_path / "v")))
    # equal up to rounding: the VAE computed its grid in channels-last layout, the GAN in the default one
    assert np.abs(np.asarray(step0, dtype=int) - np.asarray(samples, dtype=int)).max() <= 1
    random = by_ref(lab, "p2q1_gan_random_s0")
    other = Image.open(client.download_artifacts(random.info.run_id, "pictures/samples_step0.png", str(tmp_path / "r")))
    assert np.abs(np.asarray(step0, dtype=int) - np.asarray(other, dtype=int)).max() > 50


def test_contents_link_to_every_section_and_a_reproduce_box(lab):
    html = lab["html"]
    ids = set(re.findall(r'<h[1-4] id="([^"]+)"', html))
    links = re.findall(r'<a href="#([^"]+)"', html)
    assert len(links) >= 7 and set(links) <= ids
    assert {"summary"} | {i for i in ids if i.startswith(("p1q", "p2q"))} <= set(links)
    assert "Reproduce this report" in html and "genlab report --study lab1" in html
    assert "Reproduire ce rapport" in lab["md"]["fr"] and "**Sommaire**" in lab["md"]["fr"]


# ---------------------------------------------------------------- the report in a real browser

def test_report_in_a_real_browser(lab, tmp_path):
    driver = chromium_driver(tmp_path)
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.wait import WebDriverWait

    try:
        page = lab["dir"] / "report" / "en" / "report.html"
        driver.get(page.as_uri())
        # WebDriver may hand back a busy page before its parser reached the end (CI once saw 15 of 36 images):
        # wait for the load event and every <img> of the file, then look at them
        in_file = len(re.findall(r"<img ", lab["html"]))
        assert in_file >= 20
        state = "return [document.readyState, document.images.length];"
        try:
            WebDriverWait(driver, 120).until(lambda d: d.execute_script(state) == ["complete", in_file])
        except TimeoutException:
            pytest.fail(f"after 120 s the browser has [readyState, images] {driver.execute_script(state)}, "
                        f"the file {in_file} images")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
        broken = [alt for complete, width, alt in images if not complete or width == 0]
        assert not broken, f"images that did not load: {broken}"
        anchors = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href^=\"#\"]')).map(a => a.getAttribute('href'));")
        assert len(anchors) >= 7
        unresolved = driver.execute_script(
            "return arguments[0].filter(h => !document.getElementById(decodeURIComponent(h.slice(1))));", anchors)
        assert not unresolved, f"contents links without a target: {unresolved}"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        artifacts = artifacts_dir()
        assert driver.save_screenshot(str(artifacts / "report-en.png"))
        with Image.open(artifacts / "report-en.png") as shot:
            assert shot.width >= 1000 and len(np.unique(np.asarray(shot.convert("L")))) > 10  # something was drawn
    finally:
        driver.quit()


# ---------------------------------------------------------------- what the MLflow UI shows

def test_experiments_are_model_training_experiments_with_a_description(lab):
    client = lab["client"]
    for question in ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2"):
        tags = client.get_experiment_by_name(f"lab1-{question}").tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert tags["mlflow.note.content"].startswith(f"**{question.upper()}: ")
    classifier = client.get_experiment_by_name("genlab-classifier").tags  # made by the study, not described by it
    assert classifier["mlflow.experimentKind"] == "custom_model_development" and classifier["mlflow.note.content"]


def test_runs_describe_themselves(lab):
    runs = [r for r in lab["runs"] if r.data.tags.get("genlab.question")]  # the study's runs, not its report
    assert len(runs) == 24  # quick: P1Q1 5, P1Q2 6 (with the conv check), P1Q3 8 (with the control), P2Q1 4, P2Q2 1
    names = [(r.info.experiment_id, r.info.run_name) for r in runs]
    assert len(set(names)) == len(names), names  # in an experiment, every arm has its own name (GAN inits too)
    names = [name for _, name in names]
    assert {"gan z16 init=vae-decoder s0", "gan z16 init=ae-decoder s0", "gan z16 init=random s0"} <= set(names)
    for r in runs:
        tags = r.data.tags
        assert re.fullmatch(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"]), r.info.run_name
        assert tags["genlab.device"] == ("cuda" if torch.cuda.is_available() else "cpu")
        assert "pipeline check" in tags["mlflow.note.content"]
        assert not set(r.data.params) & set(r.data.metrics), r.info.run_name  # a name means one thing


def test_training_runs_log_image_series_pictures_and_system_metrics(lab):
    client = lab["client"]
    for ref in ("p1q2_beta1_s0", "p2q1_gan_random_s0"):
        run = by_ref(lab, ref)
        files = {f.path for f in client.list_artifacts(run.info.run_id, "images")}
        keys = {Path(f).name.split("+")[0] for f in files}  # MLflow names them <key>+step+<step>+...
        assert {"samples"} <= keys and any("samples+step+1+" in f for f in files), files
        assert any(k.startswith("system/cpu_utilization_percentage") for k in run.data.metrics), ref
        assert any(k.startswith("system/system_memory_usage") for k in run.data.metrics), ref
    vae = {f.path for f in client.list_artifacts(by_ref(lab, "p1q2_z2_beta1_s0").info.run_id, "pictures")}
    assert vae == {f"pictures/{n}.png" for n in ("samples", "reconstructions", "interpolation", "manifold")}


def test_the_study_registers_its_best_gan_and_sample_draws_from_it(lab, tmp_path, capsys):
    client = lab["client"]
    best = client.get_model_version_by_alias("genlab-gan", "best")
    gans = [r for r in lab["runs"] if r.data.tags.get("genlab.kind") == "gan"]
    assert best.run_id == min(gans, key=lambda r: r.data.metrics["fid_proxy"]).info.run_id
    with store_in(lab["dir"]):  # a second study invocation reuses every run and does not move the alias
        assert run_cli(["study", "--plans", str(lab["dir"] / "plans"), "--study", "lab1", "--only", "p2q1"]) == 0
        assert len(client.search_model_versions("name = 'genlab-gan'")) == 1
        out = tmp_path / "g.png"
        assert run_cli(["sample", "--model", "models:/genlab-gan@best", "--n", "12", "--nrow", "4", "--out",
                        str(out), "--interpolate", "5"]) == 0
        assert Image.open(out).size == (4 * 30 + 2, 3 * 30 + 2)
        assert Image.open(tmp_path / "g_interpolation.png").size == (5 * 30 + 2, 8 * 30 + 2)
        again = tmp_path / "again.png"
        assert run_cli(["sample", "--run", best.run_id, "--n", "12", "--nrow", "4", "--out", str(again)]) == 0
        assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))  # seeded, same model
        vae = by_ref(lab, "p1q2_conv_beta1_s0").info.run_id
        assert run_cli(["sample", "--run", vae, "--out", str(tmp_path / "v.png"), "--seed", "3"]) == 0
        assert Image.open(tmp_path / "v.png").size == (8 * 30 + 2, 8 * 30 + 2)


@pytest.mark.parametrize("args,message", [
    (["--out", "x.png"], "exactly one of --run and --model"),
    (["--run", "abc", "--out", "x.png"], "32-character run id"),
    (["--model", "genlab-gan", "--out", "x.png"], "models:/NAME@ALIAS"),
    (["--run", "0" * 32, "--out", "x.png"], "not found"),
    (["--model", "models:/genlab-gan@nope", "--out", "x.png"], "not found"),
    (["--run", "RUN:probe", "--out", "x.png"], "is a probe run, not a vae or gan run"),
    (["--run", "RUN:gan", "--out", "x.jpg"], "ending in .png"),
    (["--run", "RUN:gan", "--out", "no/such/dir/x.png"], "writable directory"),
    (["--run", "RUN:gan", "--n", "0"], "n must be"),
    (["--run", "RUN:gan", "--interpolate", "1"], "interpolate must be"),
])
def test_sample_bad_input_is_one_line_exit_2_and_writes_nothing(lab, tmp_path, capsys, args, message):
    runs = {"RUN:probe": by_ref(lab, "p2q2_probe_s0").info.run_id, "RUN:gan": by_ref(lab, "p2q1_gan_random_s0").info.run_id}
    args = [runs.get(a, a) for a in args]
    with store_in(lab["dir"]), pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert run_cli(["sample", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []
