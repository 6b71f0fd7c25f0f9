"""Property-based tests (hypothesis) of issue 28's promise: whatever a user throws at the CLI
(random override strings, random run.json / config.yaml, truncated or bit-flipped checkpoint
files), genzoo exits 0 or 2 with no traceback, touches nothing outside the run folder, and the
last good checkpoint still loads. Bounded (max_examples) so the suite stays fast."""
import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genzoo.cli import main

TOY = ["vae", "data.name=digits", "data.binarize=dynamic", "model.hidden=16", "model.latent_dim=2",
       "train.batch_size=32", "train.num_samples=4", "train.ckpt_every=5", "--no-progress"]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])  # an uncaught exception here fails the test: that is a traceback
    assert code in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    return code, err.getvalue()


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("prop") / "run"
    assert cli("train", *TOY, "train.steps=10", "--run-dir", d)[0] == 0
    return d


@contextlib.contextmanager
def copy_of(run):
    root = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(run, root / "run")
        yield root, root / "run"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def listing(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "run" != p.relative_to(root).parts[0]}


keys = st.one_of(st.sampled_from(["train.lr", "train.steps", "train.time_budget", "train.batch_size", "model.hidden",
                                  "data.binarize", "train.ema_decay", "latent_dim", "train", "model", "x.y", ".", "=",
                                  "train.keep_checkpoints", "train.precision", "eval.metrics"]),
                 st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12))
values = st.one_of(st.text(max_size=12), st.integers(-10**4, 10**4).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["", "[", "{a: 1}", "[1, 2]", "null", "true", "nan", "-inf", "1e400", "!!python/object:os.system"]))


@settings(max_examples=40, **SETTINGS)
@given(key=keys, value=values)
def test_random_overrides_exit_0_or_2(key, value):
    root = Path(tempfile.mkdtemp())
    try:
        # train.steps=1 last (the last override wins): a random override that is valid trains one step
        cli("train", *TOY, f"{key}={value}", "train.steps=1", "--run-dir", root / "run")
        assert listing(root) == set()  # nothing written beside the run folder
    finally:
        shutil.rmtree(root, ignore_errors=True)


json_like = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)


@settings(max_examples=25, **SETTINGS)
@given(name=st.sampled_from(["run.json", "config.yaml"]), doc=json_like, raw=st.booleans(), junk=st.binary(max_size=40))
def test_random_run_files_exit_0_or_2(good_run, name, doc, raw, junk):
    with copy_of(good_run) as (root, run):
        (run / name).write_bytes(junk if raw else json.dumps(doc).encode())
        cli("sample", run, "--n", "4", "--out", run / "s.npy")
        cli("eval", run, "--metrics", "nll", "--limit", "5", "--out", run / "m.json")
        assert listing(root) == set()


@settings(max_examples=25, **SETTINGS)
@given(name=st.sampled_from(["model.safetensors", "state.safetensors", "state.json", "ema.safetensors", "LATEST"]),
       mode=st.sampled_from(["truncate", "flip"]), where=st.floats(0, 1), n=st.integers(1, 64))
def test_damaged_checkpoint_exit_0_or_2_and_the_older_one_still_loads(good_run, name, mode, where, n):
    from genzoo.train.checkpoint import load_checkpoint

    with copy_of(good_run) as (root, run):
        ck = run / "checkpoints"
        f = ck / "LATEST" if name == "LATEST" else ck / "step-0000010" / name
        if not f.exists():
            return
        b = bytearray(f.read_bytes())
        i = int(where * max(len(b) - 1, 0))
        if mode == "truncate":
            b = b[:i]
        else:
            for j in range(i, min(len(b), i + n)):
                b[j] ^= 0xFF
        f.write_bytes(bytes(b))
        code, err = cli("sample", run, "--n", "4", "--out", run / "s.npy")
        if name != "LATEST" and mode == "flip" and n > 0 and len(b) > 0:
            assert code == 2, "a flipped byte went unnoticed"
        resumed, _ = cli("train", "--resume", run, "train.steps=12")
        if resumed == 2:  # refused: the older checkpoint is intact and loads
            assert load_checkpoint(ck / "step-0000005")["step"] == 5
        else:  # the damage was harmless (a LATEST without its newline): the run went on
            from genzoo.train.checkpoint import latest_checkpoint

            assert load_checkpoint(latest_checkpoint(run))["step"] == 12
        assert listing(root) == set()
