"""`genlab report` end to end on a store built by hand (tests/reports/fake_study.py): the numbers and verdicts it
prints, the same data flipped flips every verdict, the quick profile is a pipeline check, runs that did not converge
make a verdict inconclusive, the HTML is self-contained and escaped, missing runs are named."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from ..conftest import run_cli
from . import fake_study

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UI = "http://127.0.0.1:5000"
UNCONVERGED_GAN, UNMEASURED_VAE = "gan z4 init=vae_decoder s1", "vae z32 b1.0 s2"
QUESTIONS = ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One store holding study `lab1` (full-profile data where the lab's claims hold), study `flip` (data where
    they do not) and study `quick1` (quick-profile data: one GAN that did not converge, one P1Q3 VAE made before
    convergence was measured, a single probe run), and the report of each."""
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        from genlab import tracking
        tracking.init_store()
        shutil.copy(tmp / "mlflow.db", tmp / "empty.db")  # an empty store, without paying the schema set-up twice
        stores = {"lab1": fake_study.build(uri, confirmed=True, study="lab1", conv_check=True),
                  "flip": fake_study.build(uri, confirmed=False, study="flip", conv_check=True),
                  "quick1": fake_study.build(uri, confirmed=True, study="quick1", profile="quick", probe_seeds=1,
                                             convergence={UNCONVERGED_GAN: 0.0, UNMEASURED_VAE: None})}
        out = {}
        for study in stores:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = run_cli(["report", "--study", study, "--out", str(tmp / study)])
            assert code == 0
            folder = tmp / study
            out[study] = {"stdout": buf.getvalue(), "dir": folder,
                          "verdicts": json.loads((folder / "verdicts.json").read_text()),
                          **{lang: (folder / lang / "report.md").read_text() for lang in ("en", "fr")},
                          **{f"{lang}_html": (folder / lang / "report.html").read_text() for lang in ("en", "fr")}}
        yield {"uri": uri, "stores": stores, "out": out, "empty": tmp / "empty.db"}


def section(md: str, question: str) -> str:
    """The text of one question's section (from its heading to the next one)."""
    start = md.index(f"## {question.upper()}")
    end = md.find("\n## ", start + 1)
    return md[start:end if end > 0 else None]


def verdict_line(md: str, question: str) -> str:
    m = re.search(r"\*\*Verdict ?: ([^.*]+)\.\*\*", section(md, question))
    return m.group(1) if m else "none"


def test_confirmed_data_gives_confirmed_verdicts_and_the_numbers(built):
    r = built["out"]["lab1"]
    for q in ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2"):
        assert r["verdicts"][q]["status"] == "confirmed"
        assert re.search(rf"^{q}: confirmed", r["stdout"], re.M)
        assert verdict_line(r["en"], q) == "confirmed" and verdict_line(r["fr"], q) == "confirmé"
    en, fr = r["en"], r["fr"]
    # P1Q1: detach collapses (KL 0.02 against 25 with the trick) and reconstructs 80 nats/image worse
    s = section(en, "p1q1")
    assert "test KL is 0.02 ± 0.00 (n=3) nats/image against 25.0 ± 0.0 (n=3)" in s and "80.00 [80.00 ; 80.00]" in s
    assert "So the lab's reason is half right" in s and "3.0 ± 0.0 (n=3) (runs' bootstrap intervals within [2.4 ; 3.6])" in s
    assert "La raison donnée par le TP n'est donc vraie qu'à moitié" in section(fr, "p1q1")
    # P1Q2: every sentence holds (fake_study.p1q2_numbers); kl_active_units 3 -> 1 from beta 1 to 4; KL 40 -> 6 and
    # recon 200 -> 240 are perfectly monotone (shown, not tested)
    s = section(en, "p1q2")
    assert "ρ(β, KL) = -1.00" in s and "ρ(β, reconstruction) = 1.00" in s and "Δ = 2.0 [2.0 ; 2.0]" in s
    for sentence in ("Continuity", "Holes", "Detail", "Balance", "Active units"):
        assert re.search(rf"> - \*\*{sentence}\*\* \([^)]*\): holds\.", s), sentence
    assert "Among the β inside the sweep, test neg-ELBO is lowest at β = 0.5" in s and "at β = 1 against" in s
    assert "`interp_smoothness` (ours) 2.00 ± 0.50 (n=3) at β = 0 against 1.30 ± 0.50 (n=3) at β = 1, Δ = 0.70" in s
    assert re.search(r"`interp_path_length` \(established\) 60\.0 [^:]* at β = 0 against 40\.0 [^:]* at β = 1, Δ = 20\.0", s)
    assert "**Architecture check.**" in s and "It agrees with the sweep above" in s
    assert "continuity: holds; holes: holds; detail: holds; balance: holds; active units: holds" in s
    assert "Il concorde avec le balayage" in section(fr, "p1q2")
    assert "- **Continuité** (des codes voisins donnent des images semblables) : vérifiée." in section(fr, "p1q2")
    # P1Q3: gap (test - train) 1 -> 9; seeds -0.2/0/+0.2 on train, twice that on test; test recon best at 8 (223), 229.5 at 32
    s = section(en, "p1q3")
    assert "the gap goes from 1.00 ± 0.50 (n=3) to 9.00 ± 0.50 (n=3)" in s
    assert "best at latent_dim 8 (223.00 ± 0.99 (n=3)); at 32 it is 229.50 ± 0.99 (n=3)" in s and "significantly worse" in s
    # the positive control's autoencoder gap grows 5 -> 40: the measurement could have seen memorisation
    assert "changes by Δ = 35.00 [35.00 ; 35.00] nats/image from latent_dim 2 to 32" in s and "could have seen it" in s
    assert "so the test degradation is overfitting" in s and "control: AE β = 0" in s
    # each sentence of a verdict box is its own quoted line, never glued to the one before (".> For contrast")
    assert re.search(r"\n> For contrast", s) and ".> " not in en and ".> " not in fr
    # the FAILED run and the older duplicate (test_recon 900) are not used
    without_ids = re.sub(r"[0-9a-f]{8,32}", "", s)  # a random run id can contain "900"
    assert "900" not in without_ids and "1 unfinished run(s)" in en
    # P2Q1: final fid 20 (vae) vs 40 (random) vs 30 (ae), t-interval half-width 0.50 with 3 seeds
    # (seed s of every arm shares a noise of -0.2/0/+0.2, plus a jitter of 0.1 of its own: paired intervals)
    s = section(en, "p2q1")
    assert "| vae_decoder | 60.00 ± 0.43 (n=3) | 20.00 ± 0.43 (n=3) |" in s
    assert "Claim 1, the VAE decoder helps: confirmed." in s and "Δ = 20.00 [19.57 ; 20.43]" in s
    assert "Δ = 10.00 [9.57 ; 10.43]" in s and "paired on seeds, 3 pairs" in s
    # every comparison prints its minimum detectable effect beside the rule's minimum effect (5 % of 30), and Holm
    assert "minimum detectable effect 0.57 for the rule's minimum effect 1.50" in s
    assert "Holm's correction" in s
    assert "effet minimal détectable 0,57 pour un effet minimal de la règle de 1,50" in section(fr, "p2q1")
    # P2Q2: reconstruction gap D - encoder 30 nats trained against 1 untrained, AUROC gap 0.15 against 0.01, paired
    # run by run (the discriminator's readouts move by 0, +0.3, -0.3 on their own: half-width 4.30 * 0.3 / sqrt(3))
    s = section(en, "p2q2")
    assert "**Claim 1, the encoder keeps more of the image: holds.**" in s
    assert "discriminator − encoder 30.0 ± 0.7 (n=3) nats per image between the trained networks, 1.0 ± 0.0 (n=3)" in s
    assert "Δ = 29.0 [28.3 ; 29.7]" in s and "Δ = 0.140 [0.133 ; 0.147]" in s
    assert "**Claim 2, the discriminator separates real from generated better: holds.**" in s
    assert "**The lab's sentences that hold:** both: the encoder keeps more of the image" in s
    assert ("| VAE encoder (penultimate layer) | 250.0 ± 2.5 (n=3) | 0.800 ± 0.025 (n=3) | 1.000 ± 0.000 (n=3) | "
            "0.680 ± 0.025 (n=3) |") in s
    assert "(1,000 of each)" in s and "minimum detectable effect" in s and "Holm's correction" in s
    assert "**Phrases du TP vérifiées :** les deux" in section(fr, "p2q2") and "(1\u202f000 de chaque)" in section(fr, "p2q2")
    # the class probes stay as supporting evidence: 0.80 vs 0.70 over three probe runs
    assert "Probe accuracy 0.800 ± 0.025 (n=3) on the encoder's code against 0.700 ± 0.025 (n=3)" in s
    assert "| VAE encoder (penultimate layer, before `z_mean`) | 0.680 ± 0.025 (n=3) |" in s
    assert "0.680 ± 0.025 (n=3) for the encoder against\n0.700 ± 0.025 (n=3) for the discriminator" in s
    assert "the penultimate layers rank the other way round from the code `z_mean`" in s
    assert "0,680 ± 0,025 (n=3) pour\nl'encodeur contre 0,700 ± 0,025 (n=3)" in section(fr, "p2q2")
    # French: decimal comma, same numbers
    assert "20,00 ± 0,43 (n=3)" in section(fr, "p2q1") and "ρ(β, KL) = -1,00" in section(fr, "p1q2")
    # the splits are named right: P1Q2's active units are the test split's; P1Q3 shows both generalisation gaps
    assert "| `kl_active_units` |" in section(en, "p1q2")
    assert "| 1.00 | 210.00 ± 0.50 (n=3) | 15.00 ± 0.50 (n=3) | 225.00 ± 0.50 (n=3) | 3.0 ± 0.5 (n=3) |" in en
    assert "KL per test image exceeds 0.01 nats" in section(en, "p1q2")
    s = section(en, "p1q3")  # -log p(x) gap = reconstruction gap + 0.5 in the planted data
    assert "| 1.00 ± 0.50 (n=3) | 1.50 ± 0.50 (n=3) |" in s and "`test_nll_iw − train_nll_iw`" in s
    assert "The −log p(x) gap (test − train) goes from 1.50 ± 0.50 (n=3) to 9.50 ± 0.50 (n=3)" in s
    assert "pipeline check" not in en.lower() and "Pipeline check" not in r["en_html"]
    # every section has a table and at least one figure
    for q in ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2"):
        for md in (en, fr):
            assert "|---|" in section(md, q) and "](figures/" in section(md, q)


def test_flipped_data_flips_every_verdict(built):
    r = built["out"]["flip"]
    assert {q: v["status"] for q, v in r["verdicts"].items()} == {
        "p1q1": "not_confirmed", "p1q2": "not_confirmed", "p1q3": "not_confirmed", "p2q1": "not_confirmed",
        "p2q2": "not_confirmed"}
    assert r["verdicts"]["p2q1"]["claims"] == {"decoder_init": "not_confirmed", "normal_latent": "not_confirmed"}
    en = r["en"]
    assert "Without the trick, backpropagation does not train the encoder — does not hold" in section(en, "p1q1")
    assert "half right" not in section(en, "p1q1")
    # each of P1Q2's sentences the other way round, and printed as such
    s = section(en, "p1q2")
    assert r["verdicts"]["p1q2"]["claims"] == dict.fromkeys(("continuous", "holes", "detail", "balance", "units"),
                                                            "not_confirmed")
    for sentence in ("Continuity", "Holes", "Detail", "Balance", "Active units"):
        assert re.search(rf"> - \*\*{sentence}\*\* \([^)]*\): does not hold \(significantly the other way\)\.", s)
    assert "It agrees with the sweep above" in s  # the conv VAE's sentences fail the same way
    s = section(en, "p1q3")
    assert "no growth larger than 2.0" in s and "which is the largest size tried: reconstruction keeps improving" in s
    assert "Claim 1, the VAE decoder helps: not confirmed" in section(en, "p2q1")
    assert "the discriminator's features carry more class information" in section(en, "p2q2")
    assert r["verdicts"]["p2q2"]["claims"] == {"keeps_image": "not_confirmed", "separates_real": "not_confirmed"}
    assert "**The lab's sentences that hold:** neither (the encoder's: does not hold" in section(en, "p2q2")
    assert "**Phrases du TP vérifiées :** aucune (celle sur l'encodeur : non vérifiée" in section(r["fr"], "p2q2")
    for q in ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2"):
        assert verdict_line(en, q) == "not confirmed" and verdict_line(r["fr"], q) == "non confirmé"


def test_p2q1_step0_test_and_control_name_the_cause(built):
    """P2Q1's direct test at step 0 (60 vs 120 in both studies) and its control: in lab1 the autoencoder decoder fed
    noise fitted to its codes catches up (60 and 20, like the VAE decoder): the latent distribution; in flip it stays
    behind at step 0 (100) and the VAE decoder has no advantage at the end: the decoder."""
    lab1, flip = built["out"]["lab1"], built["out"]["flip"]
    s = section(lab1["en"], "p2q1")
    assert "| ae_decoder_matched | 60.00 ± 0.43 (n=3) | 20.00 ± 0.43 (n=3) |" in s
    assert "**Claim 3, the direct test of the lab's reason at step 0: confirmed.**" in s and "Δ = 60.00 [" in s
    assert "**Control, what the VAE decoder's advantage came from: the latent distribution:" in s
    assert "(the control): the latent distribution" in s
    s = section(lab1["fr"], "p2q1")
    assert "**Affirmation 3, le test direct de la raison du TP à l'étape 0 : confirmée.**" in s
    assert "**Témoin, d'où vient l'avantage du décodeur du VAE : la loi du latent :" in s
    s = section(flip["en"], "p2q1")
    assert "**Control, what the VAE decoder's advantage came from: the decoder:" in s
    assert "At the end, the autoencoder decoder fed noise fitted to its codes" in s
    assert "no advantage of the VAE decoder to explain here" in s
    assert "at the end of GAN training\n  (claim 2) not confirmed" in s
    assert "**Témoin, d'où vient l'avantage du décodeur du VAE : le décodeur :" in section(flip["fr"], "p2q1")
    # the step-0 claim stays out of `claims` (which the convergence gate rewrites) and out of the verdict
    assert lab1["verdicts"]["p2q1"]["claims"] == {"decoder_init": "confirmed", "normal_latent": "confirmed"}
    s = section(built["out"]["quick1"]["en"], "p2q1")
    assert 'Claim 3, the direct test of the lab\'s reason at step 0: pipeline check, the rule would say "' in s


def test_quick_profile_is_a_pipeline_check_not_a_verdict(built):
    r, store = built["out"]["quick1"], built["stores"]["quick1"]
    assert {q: v["status"] for q, v in r["verdicts"].items()} == {
        "p1q1": "confirmed", "p1q2": "confirmed", "p1q3": "inconclusive_not_converged",
        "p2q1": "inconclusive_not_converged", "p2q2": "inconclusive_underpowered"}
    en, fr = r["en"], r["fr"]
    assert en.index("**Pipeline check, not evidence.** Every question uses the runs of the `quick` profile") < \
        en.index("## Summary")
    assert fr.index("**Vérification de la chaîne, pas une preuve.** Toutes les questions reposent sur les runs") < \
        fr.index("## Synthèse")
    for q in QUESTIONS:
        assert verdict_line(en, q) == "none" and verdict_line(fr, q) == "none"  # no "Verdict: …" box at all
        assert "> **Pipeline check (profile `quick`), not evidence: the rule would say" in section(en, q)
        assert "> **Vérification de la chaîne (profil `quick`), pas une preuve : la règle dirait" in section(fr, q)
    # no bare verdict wording anywhere: summary cells and claim boxes say what the rule would say
    for md, words in ((en, ("confirmed", "not confirmed")), (fr, ("confirmé", "non confirmé", "confirmée"))):
        for word in words:
            assert f"| {word} |" not in md and f": {word}.**" not in md and f"Verdict: {word}" not in md
    assert '| pipeline check (the rule would say "confirmed") | quick |' in en
    assert "| vérification de la chaîne (la règle dirait « confirmé ») | quick |" in fr
    # the not-converged GAN and the VAE made before convergence was logged are named, with what the rule said
    gan, vae = store.named[UNCONVERGED_GAN], store.named[UNMEASURED_VAE]
    s = section(en, "p2q1")
    assert f"It rests on runs that did not converge: [{gan[:8]}](" in s and "`converged` = 0" in s
    assert 'The rule alone would say "confirmed".' in s
    s = section(en, "p1q3")
    assert f"did not converge: [{vae[:8]}](" in s and "(not measured: made before `converged` was logged)" in s
    s = section(fr, "p2q1")
    assert f"n'ont pas convergé : [{gan[:8]}](" in s and "la règle dirait « non concluant : pas de convergence »" in s
    # one probe run: no interval, so underpowered, and the text says why
    assert 'would say "inconclusive: underpowered"' in section(en, "p2q2") and "fewer than 3 seeds" in section(en, "p2q2")
    assert "puissance insuffisante, moins de 3 graines" in section(fr, "p2q2")


def test_html_is_self_contained_with_valid_pngs(built):
    for study in ("lab1", "flip"):
        for lang in ("en", "fr"):
            page = built["out"][study][f"{lang}_html"]
            srcs = re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)
            pngs = list((built["out"][study]["dir"] / lang / "figures").glob("*.png"))
            assert len(srcs) == len(pngs) >= 10
            for src in srcs:
                assert src.startswith("data:image/png;base64,")
                content = base64.b64decode(src.split(",", 1)[1], validate=True)
                assert content.startswith(PNG_SIGNATURE)
                with Image.open(io.BytesIO(content)) as im:
                    im.verify()
            # self-contained: images inline, links to the UI or to a heading of the page itself
            assert "<script" not in page.lower() and not re.search(r"(src|href)=\"(?!data:|https?://|#[a-z0-9-]+\")", page)


def test_text_from_runs_is_escaped(built):
    r = built["out"]["lab1"]
    for page in (r["en_html"], r["fr_html"]):
        assert fake_study.XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert fake_study.XSS not in r["en"] and "&lt;script&gt;alert(1)&lt;/script&gt;" in r["en"]


def test_the_balance_sentences_read_the_optuna_search_both_ways(built):
    """fake_study.plant_search: lab1's best trials lie around the sweeps' best beta (0.5) and latent_dim (8), flip's
    away from them; each report says so in P1Q2's and P1Q3's sections, with the trials' links and figures."""
    for study, word, fr_word in (("lab1", "lies in that region", "est dans cette région"),
                                 ("flip", "lies outside that region", "est hors de cette région")):
        en, fr = built["out"][study]["en"], built["out"][study]["fr"]
        for q in ("p1q2", "p1q3"):
            s = section(en, q)
            assert "**The Optuna search** over latent_dim × β" in s and "14 trials, 12 complete, 2 pruned" in s
            assert word in s and fr_word in section(fr, q), (study, q)
            assert f"{q}_search" in built["out"][study]["en"] and "Pareto front" in s
    s = section(built["out"]["lab1"]["en"], "p1q2")
    assert "have β from 0.40 to 0.70 (median 0.50)" in s and "the best has latent_dim 8 and β = 0.400" in s
    assert "have latent_dim from 8 to 16" in section(built["out"]["lab1"]["en"], "p1q3")
    quick = section(built["out"]["quick1"]["en"], "p1q2")
    assert "**The Optuna search**" in quick and "14 trials" in quick


def test_every_number_cites_its_runs_with_the_ui_address(built):
    """In the UI's Model training mode: its query inside the fragment (the UI is hash-routed)."""
    client = MlflowClient(built["uri"])
    for study, s in built["stores"].items():
        md = built["out"][study]["en"]
        assert f"`{UI}/#/experiments/<experiment_id>/runs/<run_id>?workflowType=machine_learning`" in md
        for q, ids in s.ids.items():
            for rid in ids:
                exp = client.get_run(rid).info.experiment_id
                assert f"({UI}/#/experiments/{exp}/runs/{rid}?workflowType=machine_learning)" in section(md, q)
        for rid in s.ignored:
            assert rid not in md


def test_each_question_links_to_its_view_stored_on_its_experiment(built):
    """The view of a question: exactly the runs its verdict read, grouped by arm with seeds averaged, its deciding
    metrics first (P2Q1: fid_proxy over steps), stored as the UI's "Save view" stores one."""
    client = MlflowClient(built["uri"])
    for study, s in (("lab1", built["stores"]["lab1"]), ("quick1", built["stores"]["quick1"])):
        out = built["out"][study]
        profile = "quick" if study == "quick1" else "full"
        for q in QUESTIONS:
            key = f"genlab-{study}-{q}-{profile}"
            link = f"{UI}/#/experiments/{s.exp}/runs?workflowType=machine_learning&viewStateShareKey={key}" \
                   "&compareRunsMode=CHART"
            assert out["verdicts"][q]["mlflow_view"] == link
            assert f"]({link})." in section(out["en"], q) and f"]({link})." in section(out["fr"], q)
            assert f'href="{link.replace("&", "&amp;")}"' in out["en_html"]
            envelope = json.loads(client.get_experiment(s.exp).tags[f"mlflow.sharedViewState.{key}"])
            assert envelope["name"] == f"{q.upper()} by arm ({study}, {profile})"
            state = json.loads(envelope["state"])
            shown = re.findall(r"'([0-9a-f]{32})'", state["searchFilter"])
            assert sorted(shown) == sorted(set(out["verdicts"][q]["run_ids"]))
            assert state["searchFilter"].startswith(f"tags.`genlab.question` = '{q}' AND attributes.run_id IN (")
            assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "genlab.arm"}]
            assert state["useGroupedValuesInCharts"] is True
            assert [c["metricSectionId"] for c in state["compareRunCharts"]] == \
                   [state["compareRunSections"][0]["uuid"]] * len(state["compareRunCharts"])
    p2q1 = json.loads(json.loads(client.get_experiment(built["stores"]["lab1"].exp).tags[
        "mlflow.sharedViewState.genlab-lab1-p2q1-full"])["state"])
    assert [(c["metricKey"], c["type"]) for c in p2q1["compareRunCharts"]] == [("fid_proxy", "LINE")]
    assert p2q1["selectedColumns"] == ["metrics.`fid_proxy`"]
    assert len(re.findall(r"'[0-9a-f]{32}'", p2q1["searchFilter"])) == 12  # its 12 GANs
    p1q1 = json.loads(json.loads(client.get_experiment(built["stores"]["lab1"].exp).tags[
        "mlflow.sharedViewState.genlab-lab1-p1q1-full"])["state"])
    assert [(c["metricKey"], c["type"]) for c in p1q1["compareRunCharts"]][:4] == [
        ("test_recon", "BAR"), ("test_kl", "BAR"), ("test_neg_elbo", "BAR"), ("val_neg_elbo", "LINE")]


def test_report_is_logged_as_a_run(built):
    client = MlflowClient(built["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`genlab.kind` = 'report'")
    assert {r.data.tags["genlab.study"] for r in runs} == {"lab1", "flip", "quick1"}
    for r in runs:
        assert r.info.status == "FINISHED"
        files = {f.path for f in client.list_artifacts(r.info.run_id, "report/en")}
        assert {"report/en/report.md", "report/en/report.html", "report/en/figures"} <= files
        assert {f.path for f in client.list_artifacts(r.info.run_id, "report")} >= {"report/fr", "report/verdicts.json"}


def use_store(monkeypatch, tmp_path, uri: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def test_questions_without_runs_get_a_missing_section_with_the_command(built, tmp_path, monkeypatch, capsys):
    shutil.copy(Path(built["uri"].removeprefix("sqlite:///")), tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    use_store(monkeypatch, tmp_path, uri)
    client = MlflowClient(uri)
    for r in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                "tags.`genlab.study` = 'lab1'", max_results=10000):
        if r.data.tags.get("genlab.question") != "p1q2":
            client.delete_run(r.info.run_id)
    assert run_cli(["report", "--out", str(tmp_path / "out")]) == 0
    verdicts = json.loads((tmp_path / "out" / "verdicts.json").read_text())
    assert verdicts["p1q2"]["status"] == "confirmed"
    assert {verdicts[q]["status"] for q in ("p1q1", "p1q3", "p2q1", "p2q2")} == {"missing"}
    for lang, word in (("en", "Missing runs"), ("fr", "Runs manquants")):
        md = (tmp_path / "out" / lang / "report.md").read_text()
        for q in ("p1q1", "p1q3", "p2q1", "p2q2"):
            s = section(md, q)
            assert word in s and f"`genlab study --profile quick --only {q}`" in s
            assert verdict_line(md, q) == "none" and "±" not in s and "](figures/" not in s
    assert "p1q1: missing" in capsys.readouterr().out


def test_empty_store_is_one_line_exit_2_and_writes_nothing(built, tmp_path, monkeypatch, capsys):
    shutil.copy(built["empty"], tmp_path / "mlflow.db")
    use_store(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run_cli(["report", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no runs of study 'lab1'" in err and "genlab study" in err
    assert not (tmp_path / "out").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_store_that_does_not_exist_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    use_store(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'nope.db'}")
    assert run_cli(["report", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,name", [(["--profile", "best"], "profile"), (["--study", "x' OR 1=1"], "study"),
                                       (["--ui-url", "javascript:alert(1)"], "ui_url"),
                                       (["--out", "not-a-dir.txt/sub"], "out")])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(built, tmp_path, monkeypatch, capsys, args, name):
    use_store(monkeypatch, tmp_path, built["uri"])
    (tmp_path / "not-a-dir.txt").write_text("a file")
    client = MlflowClient(built["uri"])
    count = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    assert run_cli(["report", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "Traceback" not in err
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == count
    assert not (tmp_path / "reports").exists()


def test_a_view_too_long_for_a_tag_shows_the_questions_finished_runs_of_the_profile():
    from reports import build
    from reports.questions import p2q1

    few = json.loads(json.loads(build.view_of(p2q1.QUESTION, "full", "lab1", ["a" * 32] * 3, 0))["state"])
    assert few["searchFilter"].endswith(f"IN ({', '.join([repr('a' * 32)] * 3)})")
    many = build.view_of(p2q1.QUESTION, "full", "lab1", [f"{i:032x}" for i in range(600)], 0)
    assert len(many) <= 20_000
    assert json.loads(json.loads(many)["state"])["searchFilter"] == (
        "tags.`genlab.question` = 'p2q1' AND tags.`genlab.study` = 'lab1' AND tags.`genlab.profile` = 'full' "
        "AND attributes.status = 'FINISHED'")


def test_the_reproduce_box_names_the_seed_offset_its_runs_were_planned_with():
    """A replication on shifted seeds (`genlab study --seed-offset 5`) is reproduced by the same flag; runs without
    the tag (older studies) count as unshifted."""
    import pandas as pd

    from reports import build

    column = "tags.genlab.seed_offset"
    assert build.seed_flag({"p1q1": pd.DataFrame({column: ["0", "0"]}), "p2q1": pd.DataFrame()}) == ""
    assert build.seed_flag({"p1q1": pd.DataFrame({"run_id": ["a"]})}) == ""
    assert build.seed_flag({"p1q1": pd.DataFrame({column: ["5", "5"]}), "p1q2": pd.DataFrame({column: ["5"]})}) \
        == " --seed-offset 5"
