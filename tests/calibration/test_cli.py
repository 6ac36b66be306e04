"""``calibration.cli.main``: calibrate then eval on synthetic data (fake encoder), and bad input refused."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibration.cli import main
from calibration.eval_command import ood_axis
from calibration.fit import FitConfig
from router.artifact import Artifact
from router.policy import Policy
from tests.calibration.conftest import FakeEncoder, synthetic_rows, write_jsonl


def run(argv: list[str], encoder: FakeEncoder) -> int:
    return main(argv, encoder=encoder)


def test_calibrate_then_eval(tmp_path: Path, synthetic_file: Path, fake_encoder: FakeEncoder) -> None:
    art, rep, cache = tmp_path / "art", tmp_path / "rep", tmp_path / "cache"
    assert (
        run(
            [
                "calibrate",
                "--data",
                str(synthetic_file),
                "--out",
                str(art),
                "--cache-dir",
                str(cache),
                "--generalist",
                "general",
                "--no-progress",
            ],
            fake_encoder,
        )
        == 0
    )
    artifact = Artifact.load(art, embedder_name="fake-encoder", embedder_dim=16)
    manifest = artifact.manifest
    assert manifest["data"]["sha256"] and manifest["data"]["train_rows"] == 240 and manifest["created_at"]
    assert (art / "report.md").exists() and (art / "clusters.png").stat().st_size > 10_000
    assert artifact.cliff[:, artifact.models.index("mathy")].any()
    calls = fake_encoder.calls
    assert (
        run(
            [
                "eval",
                "--artifact",
                str(art),
                "--data",
                str(synthetic_file),
                "--out",
                str(rep),
                "--cache-dir",
                str(cache),
                "--no-progress",
            ],
            fake_encoder,
        )
        == 0
    )
    assert fake_encoder.calls == calls + 1  # train embeddings came from the cache; only test rows were new
    report = json.loads((rep / "report.json").read_text())
    assert list(report) == ["n", "has_cost", "triage", "avengers", "single", "oracle", "random", "best_single", "best",
                            "cheapest_knob_matching_best_single", "knob1_minus_best_single",
                            "knob1_minus_best_single_se", "triage_frontier", "aiq", "domain_router", "per_domain",
                            "info"]  # no held-out rows and no refine tier: no "ood", no "refined_rate"
    assert [p["knob"] for p in report["triage"]] == [round(0.1 * i, 1) for i in range(11)]
    knob1 = report["triage"][-1]["accuracy"]
    assert knob1 > max(v["accuracy"] for v in report["single"].values())  # routing beats every single model
    assert knob1 <= report["oracle"]["accuracy"]
    assert report["triage"][0]["cost"] <= report["triage"][-1]["cost"]
    # "mathy" is 35-50 points below the generalist outside math: past its cliff there at every candidate margin,
    # so no knob may send history or code to it, however cheap it is. ("cheap", uniformly weaker, is a slope the
    # margin chosen on validation may leave to the knob.)
    policy = Policy(artifact)
    mathy = artifact.models.index("mathy")
    for domain in ("history", "code"):
        texts = [r["query"] for r in synthetic_rows() if r["domain"] == domain and r["split"] == "test"]
        est = policy.estimate(fake_encoder.encode(texts))
        assert artifact.cliff[est.cluster, mathy].all(), domain
        for knob in (0.0, 0.5, 1.0):
            chosen, _ = policy.choose(est, np.full(len(texts), knob))
            assert mathy not in chosen, (domain, knob)
    assert any(p["share"]["mathy"] > 0 for p in report["triage"])  # it does answer math
    assert 0 < report["aiq"]["triage"] <= knob1 and 0 < report["aiq"]["avengers"] <= 1
    # the uncertainty of both comparisons over these test rows, in report.json and report.md
    lo, hi = report["aiq"]["difference_interval_95"]
    assert lo <= report["aiq"]["triage"] - report["aiq"]["avengers"] <= hi and hi - lo < 0.2
    assert 0 < report["knob1_minus_best_single_se"] < 0.05
    assert "95 % paired bootstrap interval" in (rep / "report.md").read_text()
    assert "paired standard error" in (rep / "report.md").read_text()
    for png in ("frontier.png", "cluster_accuracy.png", "cliff.png"):
        assert (rep / png).stat().st_size > 10_000
    assert "AIQ" in (rep / "report.md").read_text()
    # The domain router is told each test row's domain and takes that domain's best model on the train rows.
    rows_all = synthetic_rows()
    test_rows = [r for r in rows_all if r["split"] == "test"]
    best = {}
    for domain in ("math", "history", "code"):
        train = [r for r in rows_all if r["domain"] == domain and r["split"] == "train"]
        best[domain] = max(artifact.models, key=lambda m: sum(r["scores"][m] for r in train))
    assert best["math"] == "mathy" and best["history"] == "general"  # ACCURACY in conftest
    expected = np.mean([r["scores"][best[r["domain"]]] for r in test_rows])
    assert report["domain_router"]["accuracy"] == pytest.approx(expected)
    per = {r["domain"]: r for r in report["per_domain"]}
    assert {d: r["train_best"] for d, r in per.items()} == best
    assert sum(r["n"] for r in per.values()) == report["n"] == len(test_rows)
    for domain, r in per.items():
        rows = [t for t in test_rows if t["domain"] == domain]
        assert r["train_best_accuracy"] == pytest.approx(np.mean([t["scores"][best[domain]] for t in rows]))
    # Triage's knob-1 accuracy is the n-weighted mean of its per-domain accuracies.
    assert sum(r["triage_knob1"] * r["n"] for r in per.values()) / report["n"] == pytest.approx(knob1)
    assert "## Per domain, knob 1" in (rep / "report.md").read_text()


def test_holdout_domain_is_flagged_ood(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    rows = synthetic_rows(n_per_domain=90)
    data = write_jsonl(tmp_path / "s.jsonl", rows)
    art, rep = tmp_path / "art", tmp_path / "rep"
    assert (
        run(
            [
                "calibrate",
                "--data",
                str(data),
                "--out",
                str(art),
                "--holdout-domains",
                "code",
                "--generalist",
                "general",
                "--cache-dir",
                str(tmp_path / "c"),
                "--no-progress",
            ],
            fake_encoder,
        )
        == 0
    )
    assert (
        run(
            [
                "eval",
                "--artifact",
                str(art),
                "--data",
                str(data),
                "--out",
                str(rep),
                "--cache-dir",
                str(tmp_path / "c"),
                "--no-progress",
            ],
            fake_encoder,
        )
        == 0
    )
    ood = json.loads((rep / "report.json").read_text())["ood"]
    assert ood["auroc"] > 0.95 and ood["flagged_rate"] > 0.9
    assert ood["routed_accuracy_knob1"] == pytest.approx(ood["generalist_accuracy"], abs=0.05)


def broken(rows: list[dict[str, Any]], index: int, change: Any) -> list[dict[str, Any]]:
    rows = [json.loads(json.dumps(r)) for r in rows]
    change(rows[index])
    return rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["scores"].pop("mathy"), "line 6 (id 'math-5'): field 'scores.mathy' is missing"),
        (lambda r: r["scores"].update(gpt9=1.0), "field 'scores.gpt9': unknown model"),
        (lambda r: r.update(query="  "), "line 6 (id 'math-5'): field 'query' is missing or empty"),
        (lambda r: r["cost"].update(mathy=math.nan), "field 'cost.mathy' must be a finite number"),
        (lambda r: r["scores"].update(cheap="yes"), "field 'scores.cheap' must be a finite number"),
    ],
)
def test_bad_rows_exit_2_and_write_nothing(
    tmp_path: Path, fake_encoder: FakeEncoder, capsys: Any, change: Any, message: str
) -> None:
    data = write_jsonl(tmp_path / "bad.jsonl", broken(synthetic_rows(n_per_domain=30), 5, change))
    out = tmp_path / "art"
    code = run(
        ["calibrate", "--data", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "c")],
        fake_encoder,
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and fake_encoder.calls == 0
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]


def test_unknown_generalist_and_bad_k(
    tmp_path: Path, synthetic_file: Path, fake_encoder: FakeEncoder, capsys: Any
) -> None:
    base = ["calibrate", "--data", str(synthetic_file), "--out", str(tmp_path / "a")]
    assert run([*base, "--generalist", "nobody"], fake_encoder) == 2
    assert "'nobody' is not one of the models" in capsys.readouterr().err
    assert run([*base, "--clusters", "many"], fake_encoder) == 2
    assert run(["calibrate", "--out", str(tmp_path / "a")], fake_encoder) == 2
    assert not (tmp_path / "a").exists()


def test_eval_refuses_artifact_of_another_embedder(
    tmp_path: Path, synthetic_file: Path, fake_encoder: FakeEncoder, capsys: Any
) -> None:
    art = tmp_path / "art"
    assert (
        run(
            [
                "calibrate",
                "--data",
                str(synthetic_file),
                "--out",
                str(art),
                "--cache-dir",
                str(tmp_path / "c"),
                "--no-progress",
            ],
            fake_encoder,
        )
        == 0
    )
    other = FakeEncoder()
    other.name = "another-model"
    assert (
        run(
            ["eval", "--artifact", str(art), "--data", str(synthetic_file), "--out", str(tmp_path / "r")],
            other,
        )
        == 2
    )
    assert "embedder mismatch" in capsys.readouterr().err


def test_a_quantised_encoders_weights_are_recorded_and_another_copy_is_refused(
    tmp_path: Path, synthetic_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quantised = FakeEncoder()
    quantised.weights = "a1b2c3d4e5f6"  # type: ignore[attr-defined]  # what OnnxEmbedder has for an int8 copy
    art = tmp_path / "art"
    argv = ["calibrate", "--data", str(synthetic_file), "--out", str(art), "--generalist", "general",
            "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert run(argv, quantised) == 0
    assert json.loads((art / "manifest.json").read_text())["embedder"]["weights"] == "a1b2c3d4e5f6"
    evaluate = ["eval", "--artifact", str(art), "--data", str(synthetic_file), "--out", str(tmp_path / "r"),
                "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert run(evaluate, FakeEncoder()) == 2  # same name, the unquantised weights
    assert "quantised copy 'a1b2c3d4e5f6'" in capsys.readouterr().err
    assert run(evaluate, quantised) == 0


def test_recalibrate_replaces_atomically(
    tmp_path: Path, synthetic_file: Path, fake_encoder: FakeEncoder
) -> None:
    art = tmp_path / "art"
    for clusters in ("3", "5"):
        assert (
            run(
                [
                    "calibrate",
                    "--data",
                    str(synthetic_file),
                    "--out",
                    str(art),
                    "--clusters",
                    clusters,
                    "--cache-dir",
                    str(tmp_path / "c"),
                    "--no-progress",
                ],
                fake_encoder,
            )
            == 0
        )
    assert Artifact.load(art).k == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "c", "scores.jsonl"]  # no temp dirs left


def test_leave_one_domain_out(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    data = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(n_per_domain=90))
    out = tmp_path / "lodo"
    assert (
        main(
            [
                "eval",
                "--leave-one-domain-out",
                "--data",
                str(data),
                "--out",
                str(out),
                "--generalist",
                "general",
                "--min-test",
                "20",
                "--cache-dir",
                str(tmp_path / "c"),
                "--no-progress",
            ],
            encoder=fake_encoder,
        )
        == 0
    )
    report = json.loads((out / "lodo.json").read_text())
    assert set(report["domains"]) == {"math", "history", "code"}
    for r in report["domains"].values():
        assert r["n"] == 30 and r["flagged_ood"] > 0.9 and r["auroc"] > 0.95
        # An unseen domain is flagged and handed to the generalist: no worse than it.
        assert r["routed_accuracy"] >= r["generalist_accuracy"] - 0.05
        assert r["domain_weight"] in FitConfig().domain_weights  # each fit's own choice, recorded
    assert "| math |" in (out / "lodo.md").read_text() and "| domain weight |" in (out / "lodo.md").read_text()
    # each delta with its paired standard error over the held-out rows
    assert all(r["delta_se"] >= 0 for r in report["domains"].values())
    assert "delta pts (SE)" in (out / "lodo.md").read_text()
    common = ["eval", "--leave-one-domain-out", "--data", str(data), "--generalist", "general", "--min-test", "20",
              "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "five"), "--selection-folds", "5"], encoder=fake_encoder) == 0
    assert set(json.loads((tmp_path / "five" / "lodo.json").read_text())["domains"]) == {"math", "history", "code"}
    assert main([*common, "--out", str(tmp_path / "bad"), "--selection-folds", "0"], encoder=fake_encoder) == 2
    assert not (tmp_path / "bad").exists()
    # Every fold with the same fixed domain weight, as calibrate --domain-weight fixes it; out of range: refused.
    assert main([*common, "--out", str(tmp_path / "w1"), "--domain-weight", "1"], encoder=fake_encoder) == 0
    fixed = json.loads((tmp_path / "w1" / "lodo.json").read_text())["domains"]
    # (a fold too small for a validation slice fits without a domain level: weight 0, the kNN detector)
    assert {r["domain_weight"] for r in fixed.values() if r["ood_method"] == "domains"} == {1.0}
    assert main([*common, "--out", str(tmp_path / "bad"), "--domain-weight", "2"], encoder=fake_encoder) == 2
    assert not (tmp_path / "bad").exists()


def test_query_with_unicode_line_separator_is_one_row(tmp_path: Path) -> None:
    from calibration.data import load_scores

    rows = synthetic_rows(n_per_domain=3)
    rows[0]["query"] = "math: functional structures help to create\x85... (NEL inside the text)"
    data = load_scores(write_jsonl(tmp_path / "s.jsonl", rows))
    assert len(data) == 9 and "\x85" in data.queries[0]


def test_embedding_cache_merges_concurrent_writers(tmp_path: Path) -> None:
    from calibration.embeddings import EmbeddingCache

    first, second = EmbeddingCache(FakeEncoder(), tmp_path), EmbeddingCache(FakeEncoder(), tmp_path)
    first.embed(["a: one"], progress=False)
    second.embed(["b: two"], progress=False)  # must not drop "a: one"
    reader = EmbeddingCache(FakeEncoder(), tmp_path)
    reader.embed(["a: one", "b: two"], progress=False)
    assert isinstance(reader.encoder, FakeEncoder) and reader.encoder.calls == 0


class BlurredEncoder(FakeEncoder):
    """math and history share one topic centre and differ only along a weak direction: k-means mixes them, a
    domain classifier does not."""

    name = "blurred-encoder"

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = super().encode([t.replace("history:", "math:", 1) for t in texts], batch_size, progress)
        out[:, -1] += np.array([0.2 if t.startswith("history:") else 0.0 for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_domain_level_is_written_used_and_can_be_turned_off(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(n_per_domain=300))
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    enc = BlurredEncoder()
    # Weight fixed: here every domain is its own cluster, so selection finds the weights within 0.2 points and may
    # keep the clusters alone (test_fit has data where it must choose the domain level).
    assert run(["calibrate", "--out", str(tmp_path / "art"), "--generalist", "general", "--domain-weight", "0.6",
                *common], enc) == 0
    art = Artifact.load(tmp_path / "art")
    assert art.manifest["format_version"] == 5 and art.normalisation == "global" and art.domains is not None
    # per-(domain, cluster) cells by default (format 5), recorded in domains.json and the report
    assert art.domains.cell_estimate is not None and art.domains.cell_estimate.shape == (3, art.k, len(art.models))
    assert json.loads((tmp_path / "art" / "domains.json").read_text())["cells"]["strength"] == 40
    assert "per domain and cluster (cell strength 40)" in (tmp_path / "art" / "report.md").read_text()
    assert art.ood_detector is not None and art.ood_threshold == 1.0
    detector = art.ood_detector
    assert (detector.margin_at_line, detector.margin_from, detector.margin_score) == (0.1, 0.5, "energy")  # defaults
    assert art.manifest["ood_margin"] == {"at_line": 0.1, "from": 0.5, "score": "energy"}
    assert sorted(art.domains.names) == ["code", "history", "math"] and art.domains.weight > 0
    assert "domain level: weight" in (tmp_path / "art" / "report.md").read_text()
    assert run(["eval", "--artifact", str(tmp_path / "art"), "--out", str(tmp_path / "rep"), *common], enc) == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["triage"][-1]["accuracy"] > 0.6
    texts = [f"{d}: question {i}" for d in ("math", "history", "code") for i in range(250, 300)]
    decided = [d.domain for d in Policy(art).decide(enc.encode(texts), 1.0)]
    assert np.mean([d == t.split(":")[0] for d, t in zip(decided, texts, strict=True)]) > 0.9
    plain_args = ["calibrate", "--out", str(tmp_path / "plain"), "--generalist", "general", "--no-domains"]
    assert run([*plain_args, *common], enc) == 0
    plain = Artifact.load(tmp_path / "plain")
    assert plain.manifest["format_version"] == 5 and plain.domains is None and plain.ood_detector is None
    assert not (tmp_path / "plain" / "domains.json").exists()
    assert "domain level: off (--no-domains)" in (tmp_path / "plain" / "report.md").read_text()
    assert {d.domain for d in Policy(plain).decide(enc.encode(texts[:3]), 1.0)} == {""}


def test_domain_weight_fixed_or_refused(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    data = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(n_per_domain=90))
    common = ["--data", str(data), "--generalist", "general", "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert run(["calibrate", "--out", str(tmp_path / "a"), "--domain-weight", "0.3", *common], fake_encoder) == 0
    art = Artifact.load(tmp_path / "a")
    assert art.domains is not None and art.domains.weight == 0.3
    assert run(["calibrate", "--out", str(tmp_path / "z"), "--domain-weight", "0", *common], fake_encoder) == 0
    zero = Artifact.load(tmp_path / "z")  # the classifier is kept for the OOD detector, with no share in the blend
    assert zero.domains is not None and zero.domains.weight == 0 and zero.ood_detector is not None
    for bad in ("1.5", "nan", "heavy"):
        assert run(["calibrate", "--out", str(tmp_path / "b"), "--domain-weight", bad, *common], fake_encoder) == 2
    # --domain-cells 0: the per-domain rows alone (no domain_cells.npy); below 0 or not a number: refused
    assert run(["calibrate", "--out", str(tmp_path / "r"), "--domain-weight", "1", "--domain-cells", "0", *common],
               fake_encoder) == 0
    rows = Artifact.load(tmp_path / "r")
    assert rows.domains is not None and rows.domains.cell_estimate is None
    assert not (tmp_path / "r" / "domain_cells.npy").exists() and (tmp_path / "a" / "domain_cells.npy").exists()
    for bad in ("-1", "nan", "inf"):
        assert run(["calibrate", "--out", str(tmp_path / "b"), "--domain-cells", bad, *common], fake_encoder) == 2
    assert not (tmp_path / "b").exists()


def test_selection_folds_recorded_or_refused(tmp_path: Path, fake_encoder: FakeEncoder, capsys: Any) -> None:
    data = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(n_per_domain=90))
    common = ["--data", str(data), "--generalist", "general", "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert run(["calibrate", "--out", str(tmp_path / "a"), "--selection-folds", "5", *common], fake_encoder) == 0
    assert Artifact.load(tmp_path / "a").manifest["selection_folds"] == 5
    assert "chosen on 5 folds of the train rows" in (tmp_path / "a" / "report.md").read_text()
    assert run(["calibrate", "--out", str(tmp_path / "one"), *common], fake_encoder) == 0  # the default: one slice
    assert Artifact.load(tmp_path / "one").manifest["selection_folds"] == 1
    assert "on a validation slice (20 %" in (tmp_path / "one" / "report.md").read_text()
    capsys.readouterr()
    assert run(["calibrate", "--out", str(tmp_path / "b"), "--selection-folds", "0", *common], fake_encoder) == 2
    assert "--selection-folds must be an integer from 1 to 20" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_ood_method_chosen_recorded_or_refused(tmp_path: Path, fake_encoder: FakeEncoder, capsys: Any) -> None:
    data = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(n_per_domain=90))
    common = ["--data", str(data), "--generalist", "general", "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert run(["calibrate", "--out", str(tmp_path / "d"), *common], fake_encoder) == 0  # auto: three domains
    ood = json.loads((tmp_path / "d" / "ood.json").read_text())
    assert ood["method"] == "domain_mahalanobis_energy" and (tmp_path / "d" / "ood_precision.npy").exists()
    assert Artifact.load(tmp_path / "d").manifest["ood_method"] == "auto"
    assert "OOD: domain detector" in (tmp_path / "d" / "report.md").read_text()
    assert run(["calibrate", "--out", str(tmp_path / "k"), "--ood-method", "knn", *common], fake_encoder) == 0
    assert json.loads((tmp_path / "k" / "ood.json").read_text())["method"] == "knn_cosine_distance"
    # The cliff plot's x-axis names the units its scores are in, and its line the artifact's threshold.
    detector_axis, knn_axis = ood_axis(Artifact.load(tmp_path / "d")), ood_axis(Artifact.load(tmp_path / "k"))
    assert detector_axis.label.startswith("out-of-domain score: domain detector") and detector_axis.threshold == 1.0
    assert "threshold units" in detector_axis.label and "cosine" not in detector_axis.label
    assert knn_axis.label.startswith("out-of-domain score: mean cosine distance to the")
    assert knn_axis.threshold == Artifact.load(tmp_path / "k").ood_threshold
    assert not (tmp_path / "k" / "ood_means.npy").exists() and Artifact.load(tmp_path / "k").ood_detector is None
    capsys.readouterr()
    bad = ["calibrate", "--out", str(tmp_path / "b"), "--ood-method", "domains", "--no-domains", *common]
    assert run(bad, fake_encoder) == 2
    assert "needs train rows from at least 2 domains" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    margin = ["--ood-margin", "0.2", "--ood-margin-from", "0.25", "--ood-margin-score", "max"]
    assert run(["calibrate", "--out", str(tmp_path / "m"), *margin, *common], fake_encoder) == 0
    assert json.loads((tmp_path / "m" / "ood.json").read_text())["margin"] == {"at_line": 0.2, "from": 0.25,
                                                                              "score": "max"}
    assert "rising from 0 at score 0.25 to 0.2 at the line (read from the detector score)" in (
        tmp_path / "m" / "report.md").read_text()
    assert run(["calibrate", "--out", str(tmp_path / "b"), "--ood-margin-score", "min", *common], fake_encoder) == 2
    assert "invalid choice: 'min'" in capsys.readouterr().err
    for bad_margin in (["--ood-margin", "1.5"], ["--ood-margin-from", "1"]):
        assert run(["calibrate", "--out", str(tmp_path / "b"), *bad_margin, *common], fake_encoder) == 2
        assert "the OOD margin must lie in" in capsys.readouterr().err
        assert not (tmp_path / "b").exists()


def test_eval_usage_names_leave_one_domain_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--help"]) == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert usage.startswith("usage: triage eval") and "[--leave-one-domain-out]" in usage
    assert main(["eval", "--leave-one-domain-out", "--help"]) == 0
    assert "usage: triage eval --leave-one-domain-out" in capsys.readouterr().out


@pytest.mark.slow
def test_no_progress_draws_no_bar_with_the_real_embedder(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Nothing draws a bar under ``--no-progress``, loading the real model included (transformers' "Loading
    weights")."""
    data = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(n_per_domain=30))
    assert main(["calibrate", "--data", str(data), "--out", str(tmp_path / "a"), "--generalist", "general",
                 "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "it/s]" not in err and "%|" not in err and "Loading weights" not in err, err
