from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import dmdb
from runs_util import table_counts


def test_create_get_list(db: dmdb.Database) -> None:
    e = db.create_experiment("cifar", n_train=100, n_targets=7, alpha=0.3, sampling="bernoulli", config={"arch": "resnet9"})
    db.create_experiment("digits", n_train=20, n_targets=3)
    got = db.experiment("cifar")
    assert (got.n_train, got.n_targets, got.alpha, got.sampling, got.config) == (100, 7, 0.3, "bernoulli", {"arch": "resnet9"})
    assert db.experiments()["name"].to_list() == ["cifar", "digits"]
    assert e.name == "cifar"


def test_exist_ok_returns_same_and_refuses_other_shape(db: dmdb.Database) -> None:
    db.create_experiment("a", 10, 2)
    assert db.create_experiment("a", 10, 2, exist_ok=True).n_train == 10
    # says what differs (it said 'already exists ...; pick another name', as if exist_ok were not given)
    with pytest.raises(dmdb.DmdbError, match=r"'a' exists with other settings .*: asked for n_train 11 \(it has 10\), "
                                              r"alpha 0.3 \(it has 0.5\); exist_ok \(--exist-ok\) only reuses an identical"):
        db.create_experiment("a", 11, 2, alpha=0.3, exist_ok=True)
    with pytest.raises(dmdb.DmdbError, match="already exists"):
        db.create_experiment("a", 10, 2)


def test_unknown_experiment_names_known_ones(db: dmdb.Database) -> None:
    with pytest.raises(dmdb.UnknownExperimentError, match="no experiments yet"):
        db.experiment("nope")
    db.create_experiment("a", 10, 2)
    with pytest.raises(dmdb.UnknownExperimentError, match="unknown experiment 'nope'.*known: a"):
        db.experiment("nope")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_train=0, n_targets=2), "n_train must be >= 1, got 0"),
        (dict(n_train=20.7, n_targets=2), "n_train must be an integer"),
        (dict(n_train=5, n_targets=True), "n_targets must be an integer"),
        (dict(n_train=5, n_targets=2, alpha="0.5"), "alpha must be a number"),
        (dict(n_train=5, n_targets=2, alpha=1.0), "alpha"),
        (dict(n_train=5, n_targets=2, alpha=0.0), "alpha"),
        (dict(n_train=5, n_targets=2, sampling="poisson"), "sampling"),
        # 'fixed' keeps round(alpha * n_train): 0 or all of them in every run, one subset for all runs
        (dict(n_train=10, n_targets=2, alpha=0.04), r"alpha=0.04 of n_train=10 keeps 0 examples in every run.*"
         r"choose an alpha that keeps between 1 and 9 examples, or use sampling='bernoulli' \(CLI: --sampling bernoulli\)"),
        # no alpha keeps between 1 and 0 examples: the advice was impossible to follow
        (dict(n_train=1, n_targets=2, alpha=0.5), r"keeps 0 examples.*fitted; use sampling='bernoulli' \(CLI"),
        (dict(n_train=3, n_targets=2, alpha=0.9), r"keeps 3 examples in every run"),
        # json.dumps' own TypeError came through
        (dict(n_train=5, n_targets=2, config={"when": object()}), "config must be a JSON-serialisable dict"),
        (dict(n_train=5, n_targets=2, config=[1, 2]), "config must be a dict"),
    ],
)
def test_bad_experiment_arguments(db: dmdb.Database, kwargs: dict, match: str) -> None:
    with pytest.raises(dmdb.BadInputError, match=match):
        db.create_experiment("x", **kwargs)
    assert table_counts(db)["experiments"] == 0


def test_tiny_n_train_plans_varying_subsets() -> None:
    """The smallest experiments 'fixed' sampling allows still plan runs that differ; Bernoulli
    sampling of one example is allowed (its runs differ at random)."""
    with dmdb.open(":memory:") as mem:
        two = mem.create_experiment("two", n_train=2, n_targets=1, alpha=0.5).plan(20, seed=0)
        assert {tuple(r.mask) for r in two} == {(True, False), (False, True)}
        one = mem.create_experiment("one", n_train=1, n_targets=1, alpha=0.5, sampling="bernoulli").plan(20, seed=0)
        assert {bool(r.mask[0]) for r in one} == {True, False}


def test_example_payloads_round_trip(exp: dmdb.Experiment) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 8, 8), dtype=np.uint8)
    exp.set_train_examples(labels=np.arange(37) % 10, images=images, source_ids=[f"img{i}" for i in range(37)])
    texts = [f"target {i}" for i in range(5)]
    exp.set_targets(labels=[1, 2, 3, 4, 5], texts=texts)
    train = exp.train_examples()
    assert train["label"].to_list() == list(np.arange(37) % 10)
    assert train["has_image"].all() and train["source_id"][3] == "img3"
    for i in (0, 17, 36):
        np.testing.assert_array_equal(exp.image("train", i), images[i])
    t = exp.targets()
    assert t["text"].to_list() == texts and not t["has_image"].any()
    assert exp.image("targets", 2) is None
    # a kind or index that is not there is an error, not a KeyError or the None of an example without an image
    for kind, idx, words in (("target", 2, "kind must be 'train' or 'targets', got 'target'"),
                             ("targets", 5, "has no target 5 (it has targets 0-4)"),
                             ("train", -1, "has no train example -1 (it has train examples 0-36)")):
        with pytest.raises(dmdb.BadInputError, match=re.escape(words)):
            exp.image(kind, idx)
    rgb = rng.random((5, 4, 4, 3)).astype(np.float32)
    exp.set_targets(labels=[0] * 5, images=rgb)  # replacing is allowed and whole
    np.testing.assert_array_equal(exp.image("targets", 4), rgb[4])
    assert exp.targets()["text"].null_count() == 5


def test_example_payloads_bad_lengths(exp: dmdb.Experiment) -> None:
    with pytest.raises(dmdb.BadInputError, match="one entry per example \\(37\\)"):
        exp.set_train_examples(labels=[1, 2, 3])
    with pytest.raises(dmdb.BadInputError, match="images"):
        exp.set_targets(images=np.zeros((4, 8, 8)))
    assert table_counts(exp.db)["train_examples"] == 0


def test_ctrl_c_while_masks_are_read_raises_keyboard_interrupt(db_path: Path) -> None:
    """Ctrl-C while exp.masks() streamed the runs reached DuckDB on the main thread: its
    RuntimeError('Query interrupted'), or no answer while a DuckDB worker held the long piece. Now
    its queries run interruptibly: KeyboardInterrupt, and the connection reads on. The runs come
    from a view that DuckDB takes hours to compute (a table of millions of runs, in short)."""
    from ctrl_c import ctrl_c_while_running, slowed

    rng = np.random.default_rng(3)
    masks = rng.random((300, 50)) < 0.5
    with dmdb.open(db_path) as db:
        exp = db.create_experiment("e", n_train=50, n_targets=2)
        exp.record_batch(list(range(300)), masks, rng.normal(size=(300, 2)))
    run = ctrl_c_while_running(
        "import dmdb\n"
        f"db = dmdb.open({str(db_path)!r})\n"
        "exp = db.experiment('e')\n"
        f"db.con.execute({slowed(db_path.stem, 'runs', 'mask')!r})\n"
        "try:\n"
        "    exp.masks()\n"
        "except BaseException as e:\n"
        "    print(type(e).__name__)\n"
        "db.con.execute('DROP VIEW runs')\n"
        f"print(''.join('1' if b else '0' for b in exp.masks().ravel()))\n"
    )
    expected = "".join("1" if b else "0" for b in masks.ravel())
    assert run.stdout.split() == ["KeyboardInterrupt", expected], run.stderr


@pytest.mark.parametrize("call, then", [
    ("exp.record_batch(list(range(300, 310)), masks[:10], margins[:10])", "10 310"),  # runs added, runs held
    ("export(exp, out).runs", "300 300"),  # runs exported, runs held
])
def test_ctrl_c_while_runs_are_recorded_or_exported_raises_keyboard_interrupt(db_path: Path, tmp_path: Path,
                                                                              call: str, then: str) -> None:
    """Ctrl-C in record_batch's read of the runs it may clash with (inside its transaction), or in an
    export's read of the runs: those queries ran on the main thread, so DuckDB raised its
    RuntimeError('Query interrupted') or, while a worker thread held the long piece, never answered.
    Now KeyboardInterrupt; nothing of the batch is written, no export file is left, and the
    connection records and exports on."""
    from ctrl_c import ctrl_c_while_running, slowed

    rng = np.random.default_rng(4)
    masks, margins = rng.random((300, 50)) < 0.5, rng.normal(size=(300, 2))
    np.save(tmp_path / "masks.npy", masks)
    np.save(tmp_path / "margins.npy", margins)
    with dmdb.open(db_path) as db:
        db.create_experiment("e", n_train=50, n_targets=2).record_batch(list(range(300)), masks, margins)
    out = tmp_path / "runs.parquet"
    run = ctrl_c_while_running(
        "import numpy as np, dmdb\n"
        "from pathlib import Path\n"
        "from dmdb.scale.export import export\n"
        f"masks, margins = np.load({str(tmp_path / 'masks.npy')!r}), np.load({str(tmp_path / 'margins.npy')!r})\n"
        f"out = Path({str(out)!r})\n"
        f"db = dmdb.open({str(db_path)!r})\n"
        "exp = db.experiment('e')\n"
        f"db.con.execute({slowed(db_path.stem, 'runs', 'mask')!r})\n"
        "try:\n"
        f"    {call}\n"
        "except BaseException as e:\n"
        "    print(type(e).__name__)\n"
        "db.con.execute('DROP VIEW runs')\n"
        "print(exp.n_runs(), sorted(p.name for p in out.parent.iterdir() if 'runs' in p.name))\n"
        f"print({call}, exp.n_runs())\n"
    )
    assert run.stdout.splitlines() == ["KeyboardInterrupt", "300 []", then], run.stderr
