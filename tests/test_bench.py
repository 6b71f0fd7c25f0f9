"""genzoo bench: tracks, resumable cells, stale marking, the report (a tiny off-protocol run of two models per track)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genzoo.bench import harness as H
from genzoo.bench.tracks import SMOKE_PROTOCOL, TRACKS, Entry, Track, membership
from genzoo.cli import main

TWO_PER_TRACK = {"binary": ["nade", "vae"], "grey": ["gan", "realnvp"], "text": ["charlm", "nanogpt_cpu"],
                 "vector": ["realnvp@8gaussians", "zuko_nsf@8gaussians"]}


def test_mixture8d_log_prob_is_the_mixture_density():
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    from genzoo.data.toys import log_prob_mixture8d, mixture8d_parameters, sample_mixture8d

    logw, mu, std = mixture8d_parameters()
    ref = MixtureSameFamily(Categorical(logits=logw), Independent(Normal(mu, std), 1))
    x = sample_mixture8d(3000, torch.Generator().manual_seed(1)).double()
    assert x.shape == (3000, 8)
    torch.testing.assert_close(log_prob_mixture8d(x), ref.log_prob(x))
    # the samples follow the density: their mean matches the mixture's mean
    torch.testing.assert_close(x.mean(0), (logw.exp()[:, None] * mu).sum(0), atol=0.25, rtol=0)


@pytest.mark.parametrize("track", list(TRACKS))
def test_every_registered_model_is_placed_on_every_track(track):
    from genzoo.registry import list_models

    mem = membership(TRACKS[track])
    assert set(mem) == set(list_models())
    for m, why in mem.items():
        assert why.startswith(("joins: ", "not on this track: ", "missing: ")), (m, why)
        assert why.startswith("joins") or len(why) > 30, (m, why)  # a reason in words, not a bare label
    joined = [m for m, w in mem.items() if w.startswith("joins")]
    assert len(joined) >= 1
    if track == "binary":  # the list
        for m in ("fvsbn", "nade", "made", "pixelcnn", "gated_pixelcnn", "image_transformer", "vae", "nvae", "discrete_diffusion"):
            assert mem[m].startswith("joins"), (m, mem[m])


def test_every_entry_trains_on_its_tracks_data():
    for t in TRACKS.values():
        names = [e.name for e in t.entries]
        assert len(names) == len(set(names)), t.name
        for e in t.entries:
            if e.peer is None:
                cfg = H.cell_config(t, e, 0, t.budget_s)  # refuses a recipe on other data
                want = t.budget_s * (1 - e.tokenizer_share) if e.tokenizer else t.budget_s  # a two-stage row splits it
                assert cfg["train"]["time_budget"] == want and cfg["train"]["seed"] == 0


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--out", str(out), "--budget", "2", "--seeds", "0", "--smoke"]
    for t, rows in TWO_PER_TRACK.items():
        args += ["--track", t]
        for r in rows:
            args += ["--only", f"{t}/{r}"]  # TRACK/ROW: a plain ROW would pick that model on every chosen track
    assert main(args) == 0
    return out, args


def test_tiny_bench_writes_one_cell_per_model_with_its_provenance(tiny_bench):
    out, _ = tiny_bench
    for t, rows in TWO_PER_TRACK.items():
        for r in rows:
            rec = json.loads((out / "cells" / t / f"{r}-s0.json").read_text())
            assert rec["format"] == H.CELL_FORMAT and rec["off_protocol"] is True
            for k in ("genzoo_version", "commit", "budget_s", "steps", "parameters", "images_per_s", "precision", "machine",
                      "torch", "date", "command", "fingerprint"):
                assert k in rec, (r, k)
            assert rec["machine"]["isa"] and rec["machine"]["cores"] >= 1
            assert rec["steps"] > 0 and rec["parameters"] > 0 and rec["budget_s"] == 2
            if t != "text":
                assert (out / "cells" / t / rec["grid"]).is_file()
            if t in ("binary", "grey") and r not in ("gan",):
                assert rec["nll"]["examples"] == SMOKE_PROTOCOL["nll_examples"] and rec["nll"]["nats"] > 0
            if t in ("binary", "grey"):
                s = rec["samples"]
                assert s["n_samples"] == SMOKE_PROTOCOL["n_samples"] == s["n_real"] and s["fid"] > s["fid_floor"] >= 0
                assert 0 <= s["precision"] <= 1 and s["seconds_per_1000_samples"] > 0
            if t == "vector":
                n = rec["nll"]
                assert abs(n["kl_nats"] - (n["nats"] - n["entropy_nats"])) < 1e-9 and n["entropy_nats"] > 2.5
                assert "modes" in rec
            if t == "text":
                assert 1.0 < rec["nll"]["bits_per_dim"] < 8.0 and rec["split"] == "valid"


def test_a_rerun_skips_finished_cells(tiny_bench, capsys):
    out, args = tiny_bench
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/*.json")}
    assert main(args) == 0
    o = capsys.readouterr().out
    assert f"cells: {len(before)} done" in o
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/*.json")} == before


def test_a_changed_recipe_makes_a_cell_stale_and_it_is_not_ranked(tiny_bench, monkeypatch, tmp_path):
    import shutil

    from genzoo.bench import report

    out, _ = tiny_bench
    work = tmp_path / "lb"
    shutil.copytree(out / "cells", work / "cells")
    t = TRACKS["binary"]
    e = next(x for x in t.entries if x.name == "nade")
    assert H.cell_status(work, t, e, 0, 2.0, {**H.PROTOCOL, **SMOKE_PROTOCOL}) == "done"
    changed = Entry(e.name, e.recipe, e.family, e.overrides + ("train.lr=0.0123",), nll=e.nll, protocol=e.protocol)
    t2 = Track(t.name, t.title, t.data, t.data_cfg, t.budget_s, tuple(changed if x is e else x for x in t.entries), t.unit)
    assert H.cell_status(work, t2, changed, 0, 2.0, {**H.PROTOCOL, **SMOKE_PROTOCOL}) == "stale"
    monkeypatch.setitem(TRACKS, "binary", t2)
    rec = json.loads((work / "cells/binary/nade-s0.json").read_text())
    rec["off_protocol"] = False  # rank it as a protocol cell would be
    (work / "cells/binary/nade-s0.json").write_text(json.dumps(rec))
    rows, notes = report.track_rows(work, t2, report.load_cells(work))
    assert "binary/nade-s0" in notes["stale"] and all(r["model"] != "nade" for r in rows)
    # the bench itself says so and does not train it without --rerun-stale
    res = H.run_bench(work, [t2], only=["nade"], seeds=[0], budget=2, protocol=SMOKE_PROTOCOL, log=lambda m: None)
    assert res == [{"cell": "binary/nade-s0", "status": "stale"}]


def test_report_writes_markdown_csv_plots_and_html(tiny_bench):
    from genzoo.bench.report import write_report

    out, _ = tiny_bench
    paths = write_report(out, with_membership=False, include_off=True)
    names = {p.name for p in paths}
    assert {"leaderboard.md", "leaderboard.csv", "index.html", "grey.html", "binary.html", "text.html", "vector.html"} <= names
    assert any(n.endswith("_quality_vs_cost.png") for n in names) and any(n.endswith("_likelihood.png") for n in names)
    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert len(rows) == sum(len(v) for v in TWO_PER_TRACK.values())
    assert {r["status"] for r in rows} == {"off-protocol"}
    html = (out / "report" / "grey.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing from the network
    md = (out / "leaderboard.md").read_text()
    assert "## Grey: 8-bit MNIST" in md and "Off-protocol cells included" in md
    assert "| gan |" in md and "| realnvp |" in md


def test_off_protocol_cells_are_listed_not_ranked(tiny_bench):
    from genzoo.bench import report

    out, _ = tiny_bench
    rows, notes = report.track_rows(out, TRACKS["grey"], report.load_cells(out))
    assert rows == [] and "grey/gan-s0" in notes["off_protocol"]


KILL_SCRIPT = r"""
import sys
from genzoo.bench import harness as H
from genzoo.bench.tracks import Entry, Track
e = Entry("nice", "nice", "flows", ("data.name=mnist", "data.dequantize=uniform", "train.ckpt_every=5",
                                    "train.batch_size=16", "train.sample_every=0"), nll="exact")
t = Track("grey", "t", "d", {"name": "mnist", "binarize": "none"}, 1.0, (e,), "bits/dim")
H.run_bench(sys.argv[1], [t], seeds=[0], budget=float(sys.argv[2]), protocol=dict(n_samples=100, nll_examples=50,
            min_set=50, grid=4, eval_cap_s=60), log=print)
"""


def test_a_killed_bench_resumes_the_cell_in_progress(tmp_path):
    out = tmp_path / "lb"
    script = tmp_path / "k.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), "12"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ck = out / "runs" / "grey" / "nice-s0" / "checkpoints"
    cell = out / "cells" / "grey" / "nice-s0.json"
    t0 = time.time()
    # kill at the first complete checkpoint (step 5: a step-* folder appears only once written in full), not
    # later: on a loaded machine the 12 s budget may end before a second one (CI of 2026-12-04, beside other jobs)
    while time.time() - t0 < 120 and not cell.exists() and not (ck.is_dir() and any(p.name.startswith("step") for p in ck.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ck.is_dir(), "no checkpoint appeared before the kill"
    assert not cell.exists(), "the cell finished before its first checkpoint was seen"
    r = subprocess.run([sys.executable, str(script), str(out), "12"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming its training" in r.stdout, r.stdout[-2000:]
    rec = json.loads((out / "cells" / "grey" / "nice-s0.json").read_text())
    assert rec["steps"] > 5 and 11.0 <= rec["train_s"] <= 16.0, rec["train_s"]  # the budget counts the time before the kill


def test_bench_cli_refuses_bad_input_in_one_line(capsys, tmp_path):
    for argv, needle in ((["--track", "colour"], "unknown track"), (["--only", "nosuch"], "no row 'nosuch'"),
                         (["--seeds", "a,b"], "--seeds takes"), (["--budget", "-1"], "--budget must be positive")):
        assert main(["bench", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert needle.split()[0] in err and err.count("\n") == 1, err


def test_report_html_in_headless_chromium(tiny_bench, tmp_path):
    """The static report in a real browser: no console errors, every image loads, a header click sorts the rows."""
    import shutil

    from genzoo.bench.report import write_report

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.common.by import By
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium; apt-get install chromium chromium-driver)")
    if not (browser and driver):
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    import shutil as sh

    out = tmp_path / "lb"
    sh.copytree(tiny_bench[0] / "cells", out / "cells")
    write_report(out, with_membership=False, include_off=True)
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        for page in ("index.html", "grey.html", "vector.html"):
            d.get((out / "report" / page).as_uri())
            errors = [m for m in d.get_log("browser") if m["level"] == "SEVERE"]
            assert not errors, errors
            broken = d.execute_script("return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            assert broken == [], broken
        d.get((out / "report" / "grey.html").as_uri())
        models = lambda: [td.text for td in d.find_elements(By.CSS_SELECTOR, "#t-grey tbody tr td:first-child")]  # noqa: E731
        first = models()
        assert len(first) == 2
        d.find_element(By.XPATH, "//table[@id='t-grey']//th[1]").click()
        a = models()
        d.find_element(By.XPATH, "//table[@id='t-grey']//th[1]").click()
        b = models()
        assert a == sorted(first) and b == sorted(first, reverse=True), (first, a, b)
    finally:
        d.quit()


def test_fid_against_nfe_sweep_stores_each_point_and_skips_finished_ones(tmp_path, monkeypatch):
    e = Entry("fm", "flow_matching", "diffusion", ("data.name=mnist", "data.dequantize=uniform", "train.sample_every=0",
                                                    "train.batch_size=8", "model.channels=8"))
    t = Track("grey", "t", "d", {"name": "mnist", "binarize": "none"}, 1.0, (e,), "bits/dim")
    proto = dict(n_samples=100, nll_examples=50, min_set=50, grid=4, eval_cap_s=60)
    res = H.run_bench(tmp_path, [t], seeds=[0], budget=1.0, protocol=proto, log=lambda m: None)
    assert res[0]["status"] == "ran", res
    monkeypatch.setattr(H, "NFE_GRID", (1, 2))
    monkeypatch.setitem(TRACKS, "grey", t)
    assert H.nfe_sweep(tmp_path, ["grey"], protocol=proto, log=lambda m: None) == ["grey/fm-s0"]
    rec = json.loads((tmp_path / "cells/grey/fm-s0.json").read_text())
    assert [q["nfe"] for q in rec["nfe_sweep"]] == [1, 2]
    assert all(q["options"]["sampler"] == "euler" and q["n_samples"] == 100 and q["fid"] > q["fid_floor"] for q in rec["nfe_sweep"])
    assert H.nfe_sweep(tmp_path, ["grey"], protocol=proto, log=lambda m: None) == ["grey/fm-s0"]
    assert len(json.loads((tmp_path / "cells/grey/fm-s0.json").read_text())["nfe_sweep"]) == 2  # nothing redone


def test_the_readme_excerpt_is_generated_from_the_committed_cells(tmp_path):
    """README.md's leaderboard block equals what `genzoo bench report --readme` makes of benchmarks/leaderboard/cells."""
    from genzoo.bench.report import EXCERPT_END, EXCERPT_START, load_cells, readme_excerpt, update_readme
    from genzoo.errors import ConfigError

    root = Path(__file__).resolve().parents[1]
    out = root / "benchmarks" / "leaderboard"
    want = readme_excerpt(out, load_cells(out))
    readme = (root / "README.md").read_text()
    start = readme.index(EXCERPT_START.split(" (")[0])
    got = readme[start: readme.index(EXCERPT_END) + len(EXCERPT_END)]
    assert got == want, "README's leaderboard block is stale: genzoo bench report --out benchmarks/leaderboard --readme README.md"
    # and the update is idempotent, refuses a file without markers
    copy = tmp_path / "README.md"
    copy.write_text(readme)
    assert update_readme(copy, want) is False
    (tmp_path / "plain.md").write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="no leaderboard excerpt block"):
        update_readme(tmp_path / "plain.md", want)


def test_two_stage_vq_row_trains_tokenizer_then_prior(tmp_path):
    """Issue 31 (the VQ rows were missing): a two-stage cell trains its tokenizer for its share of the budget, then
    the prior over its codes for the rest, evaluates the prior's decoded samples and records the tokenizer's
    reconstructions; the fingerprint covers both stages."""
    from dataclasses import replace

    t = TRACKS["grey"]
    e = next(x for x in t.entries if x.name == "vqvae")
    assert e.tokenizer == "vqvae" and H.cell_config(t, e, 0, 10.0, stage="tokenizer")["train"]["time_budget"] == 5.0
    assert H.cell_config(t, e, 0, 10.0)["model_args"]["tokenizer"] == H.TOKENIZER_RUN
    assert H._fingerprint_of(t, e, 0, 10.0, SMOKE_PROTOCOL) != H._fingerprint_of(
        t, replace(e, tokenizer_share=0.25), 0, 10.0, SMOKE_PROTOCOL)
    rec = H.run_cell(tmp_path, t, e, 0, 2.0, {**H.PROTOCOL, **SMOKE_PROTOCOL}, log=lambda *a: None)
    assert rec["registered_model"] == "vq_prior" and rec["samples"]["n_samples"] == SMOKE_PROTOCOL["n_samples"]
    tok = rec["tokenizer"]
    assert tok["model"] == "VQVAE" and tok["steps"] > 0 and tok["recon"]["n"] == SMOKE_PROTOCOL["n_samples"]
    assert 0 < tok["recon"]["usage"] <= 1 and tok["recon"]["mse"] > 0
    assert (tmp_path / "runs" / "grey" / "vqvae-s0-tokenizer" / "train_summary.json").is_file()
    from genzoo.bench.report import _tokenizer_note

    assert _tokenizer_note(rec).startswith("tokenizer VQVAE (")
