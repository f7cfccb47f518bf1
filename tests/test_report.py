"""report.html: every run folder gets one self-contained page with every section, built from whatever the
folder holds; `deepclust report` rebuilds it; text is escaped; the comparison page of `evaluate`; and the
page opens in headless Chromium without console errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepclust.cli import main
from deepclust.config import RunConfig
from deepclust.pipeline.run import run
from deepclust.report.page import (
    COMPARISON_SECTIONS,
    RUN_SECTIONS,
    write_comparison_report,
    write_report,
)
from deepclust.report.plots import plot_history_columns, plot_k_selection, plot_metric_bars, tile_images

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
RUN_IDS = [sid for sid, _ in RUN_SECTIONS]


# ------------------------------------------------------------------------------------------ helpers
class _Page(HTMLParser):
    """Sections (id -> text and tags inside), every src/href, and whether there is any script."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.sources: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = {"text": "", "imgs": 0, "headings": []}
        if "src" in attrs:
            self.sources.append(attrs["src"])
        if "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "img" and self.current:
            self.sections[self.current]["imgs"] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.sections[self.current]["text"] += data + " "  # a space between cells and elements


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def assert_self_contained(page: _Page) -> None:
    """Images are inline PNGs that decode; links only jump within the page; no script, no stylesheet."""
    assert page.sources, "no images at all"
    for src in page.sources:
        assert src.startswith("data:image/png;base64,"), src[:80]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
    assert all(link.startswith("#") for link in page.links), page.links
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}


def section_text(page: _Page, sid: str) -> str:
    return " ".join(page.sections[sid]["text"].split())


def copy_run(run_dir: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoints", "model"))
    (target / "report.html").unlink()
    return target


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def kmeans_dir(tmp_path_factory) -> Path:
    return run(RunConfig(out=str(tmp_path_factory.mktemp("runs")), progress=False)).paths.root


@pytest.fixture(scope="module")
def deep_dir(tmp_path_factory) -> Path:
    config = RunConfig(out=str(tmp_path_factory.mktemp("runs")), method="ae-kmeans", pretrain_epochs=1,
                       progress=False)
    return run(config).paths.root


# ------------------------------------------------------------------------------------- run reports
def test_every_run_folder_gets_a_report_with_every_section(kmeans_dir, deep_dir):
    for run_dir in (kmeans_dir, deep_dir):
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "complete" and "report_error" not in status
        page = parse(run_dir / "report.html")
        assert list(page.sections) == RUN_IDS
        for sid, heading in RUN_SECTIONS:
            assert section_text(page, sid).startswith(heading)
        assert_self_contained(page)


def test_kmeans_report_says_what_does_not_apply(kmeans_dir):
    page = parse(kmeans_dir / "report.html")
    assert "No training history" in section_text(page, "curves")
    assert page.sections["curves"]["imgs"] == 0
    assert "given (or taken from the labels), not chosen" in section_text(page, "k-selection")
    assert "input features" in section_text(page, "latent-space")
    assert page.sections["latent-space"]["imgs"] == 1 and page.sections["confusion-matrix"]["imgs"] == 1
    clusters = section_text(page, "clusters")
    assert "distance to the cluster centre in the input space" in clusters
    assert "No class_mappings.json" in clusters
    # each of the 10 clusters: a row of its most confident and one of its least confident images
    assert page.sections["clusters"]["imgs"] == 20
    metrics = json.loads((kmeans_dir / "metrics.json").read_text())
    assert f"{metrics['acc']:.4f}" in section_text(page, "metrics")


def test_deep_report_has_curves_embedding_and_cluster_images(deep_dir):
    page = parse(deep_dir / "report.html")
    # the pretraining loss; ACC/NMI were logged once (k-means on the embedding), which is no curve
    assert page.sections["curves"]["imgs"] == 1 and "loss per training stage" in section_text(page, "curves")
    assert "learned embedding" in section_text(page, "latent-space")
    assert "distance to the cluster centre in the embedding" in section_text(page, "clusters")
    assert "auto-dense-1x8x8-d10" in section_text(page, "configuration")
    assert "majority true class" in section_text(page, "clusters")


def test_most_confident_images_are_closest_to_the_centre(kmeans_dir, tmp_path, monkeypatch):
    """The strips show the right images: record what the report tiles and check the ranking."""
    import deepclust.report.plots as plots

    shown: list[np.ndarray] = []
    monkeypatch.setattr(plots, "tile_images", lambda images, **kw: (shown.append(images),
                                                                    tile_images(images, **kw))[1])
    from deepclust.pipeline.inputs import load_inputs

    dataset, X, _ = load_inputs(RunConfig())
    write_report(copy_run(kmeans_dir, tmp_path), dataset=dataset, features=X)
    with open(kmeans_dir / "assignments.csv") as f:
        clusters = np.array([int(r["cluster"]) for r in csv.DictReader(f)])
    centers = np.load(kmeans_dir / "cluster_centers.npy")
    distance = np.linalg.norm(X - centers[clusters], axis=1)
    members = np.flatnonzero(clusters == 0)
    ranked = members[np.argsort(distance[members], kind="stable")]
    assert np.array_equal(shown[0], dataset.images[ranked[:8]])  # cluster 0, most confident first
    assert np.array_equal(shown[1], dataset.images[ranked[::-1][:3]])  # farthest first


def test_deepclust_report_rebuilds_the_page(kmeans_dir, tmp_path, capsys):
    run_dir = copy_run(kmeans_dir, tmp_path)
    assert not (run_dir / "report.html").exists()
    assert main(["report", str(run_dir)]) == 0  # reloads the digits as config.json says
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    page = parse(run_dir / "report.html")
    assert list(page.sections) == RUN_IDS and page.sections["clusters"]["imgs"] == 20
    assert not list(run_dir.glob(".report.html.*"))  # written atomically: no temporary file left
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_text_from_the_run_folder_is_escaped(deep_dir, tmp_path):
    run_dir = copy_run(deep_dir, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["resolved"]["description"] = "<script>alert('x')</script> & more"
    (run_dir / "config.json").write_text(json.dumps(config))
    names = {"rule": "vote", "mapping": {"0": "<b>cat</b>", "1": None},
             "clusters": {"0": {"class": "<b>cat</b>", "votes": 3}, "1": {"class": None, "votes": 0}}}
    (run_dir / "class_mappings.json").write_text(json.dumps(names))
    text = write_report(run_dir).read_text()
    assert "<script>" not in text and "<b>cat</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in text
    clusters = section_text(parse(run_dir / "report.html"), "clusters")
    assert "cluster 0 <b>cat</b> (3 reference votes)" in clusters  # shown (unescaped by the parser)
    assert "cluster 1 (unmapped" in clusters


def test_missing_optional_files_leave_notes_not_errors(deep_dir, tmp_path):
    run_dir = copy_run(deep_dir, tmp_path)
    for name in ("embeddings.npy", "history.csv", "cluster_centers.npy", "metrics.json"):
        (run_dir / name).unlink()
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["dataset"] = str(tmp_path / "gone")  # the data cannot be loaded again either
    (run_dir / "config.json").write_text(json.dumps(config))
    page = parse(write_report(run_dir))
    assert list(page.sections) == RUN_IDS
    assert "metrics.json is missing" in section_text(page, "metrics")
    assert "No training history" in section_text(page, "curves")
    assert "No embedding to draw" in section_text(page, "latent-space")
    assert "could not be loaded again" in section_text(page, "clusters")
    assert page.sections["confusion-matrix"]["imgs"] == 1  # true labels are in assignments.csv


def test_images_come_from_the_paths_in_assignments_when_the_data_set_is_gone(kmeans_dir, tmp_path):
    run_dir = copy_run(kmeans_dir, tmp_path)
    rows = list(csv.DictReader(open(run_dir / "assignments.csv")))
    # Inside the data root config.json names (the report reads no image elsewhere); one class folder, so
    # reloading it gives other labels than the run's and the report falls back to the path column.
    images = tmp_path / "gone" / "one-class"
    images.mkdir(parents=True)
    for i, row in enumerate(rows):
        row["path"] = str(images / f"{i}.png")
    for i in range(len(rows)):  # only the files the report needs must exist; write them all, small
        Image.fromarray(np.full((8, 8), i % 256, np.uint8)).save(rows[i]["path"])
    with open(run_dir / "assignments.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["dataset"] = str(tmp_path / "gone")
    (run_dir / "config.json").write_text(json.dumps(config))
    page = parse(write_report(run_dir))
    assert page.sections["clusters"]["imgs"] == 20
    assert "No images to show" not in section_text(page, "clusters")


@pytest.mark.slow
def test_other_histories_and_k_selection_are_drawn(deep_dir, tmp_path):
    run_dir = copy_run(deep_dir, tmp_path)
    # DeepCluster's columns (no 'loss'), then an unknown layout: both still get curves.
    rows = [{"epoch": e, "k": 10, "clustering_loss": 1.0 / (e + 1), "cross_entropy": 2.0 - 0.1 * e,
             "nmi_prev": 0.5 + 0.04 * e} for e in range(5)]
    _write_csv(run_dir / "history.csv", rows)
    (run_dir / "k_selection.json").write_text(json.dumps(
        {"ks": [2, 3, 4], "scores": [0.2, None, 0.4], "inertias": [3.0, 2.0, 1.0], "best_k": 4,
         "criterion": "silhouette", "space": "the <input>"}))
    page = parse(write_report(run_dir))
    assert page.sections["curves"]["imgs"] == 1 and "DeepCluster" in section_text(page, "curves")
    k_text = section_text(page, "k-selection")
    assert page.sections["k-selection"]["imgs"] == 1 and "Chosen k = 4" in k_text and "the <input>" in k_text
    pretrain = [{"stage": "pretrain", "epoch": e, "loss": 0.5 / e, "iteration": "", "acc": ""}
                for e in (1, 2)]
    cluster = [{"stage": "cluster", "epoch": "", "loss": "", "iteration": i, "acc": 0.5 + 0.1 * i}
               for i in range(3)]
    _write_csv(run_dir / "history.csv", pretrain + cluster)
    page = parse(write_report(run_dir))  # DEC-like: a loss per epoch, then ACC per target update
    assert page.sections["curves"]["imgs"] == 2 and "logged during training" in section_text(page, "curves")
    _write_csv(run_dir / "history.csv", [{"step": i, "foo": i * 0.5, "note": "x"} for i in range(4)])
    page = parse(write_report(run_dir))
    assert page.sections["curves"]["imgs"] == 1 and "every numeric column" in section_text(page, "curves")
    (run_dir / "k_selection.json").write_text("{not json")
    assert "given (or taken from the labels)" in section_text(parse(write_report(run_dir)), "k-selection")


def test_a_collapsed_clustering_still_gets_a_report(deep_dir, tmp_path):
    """Deep methods can put every sample in one cluster; the page must still be built."""
    run_dir = copy_run(deep_dir, tmp_path)
    rows = list(csv.DictReader(open(run_dir / "assignments.csv")))
    _write_csv(run_dir / "assignments.csv", [{**row, "cluster": 0} for row in rows])
    page = parse(write_report(run_dir))
    assert list(page.sections) == RUN_IDS
    assert "1 clusters" in section_text(page, "clusters") and page.sections["clusters"]["imgs"] == 2


def test_a_folder_that_is_no_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a deepclust run folder"):
        write_report(tmp_path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------- comparison report
def comparison_rows() -> list[dict]:
    rows = []
    for fold in range(3):
        rows.append({"method": "kmeans", "split": f"fold {fold}", "fold": fold, "acc": 0.5 + 0.1 * fold,
                     "nmi": 0.4, "ari": 0.3, "silhouette": 0.1, "dunn": None, "seconds": 1.0})
        rows.append({"method": "dec", "split": f"fold {fold}", "fold": fold, "acc": 0.8, "nmi": 0.7,
                     "ari": 0.6, "silhouette": 0.3, "dunn": 0.05, "seconds": 10.0 + fold})
    return rows


def test_comparison_report_has_summary_charts_and_rows(tmp_path):
    path = write_comparison_report(comparison_rows(), tmp_path / "cmp" / "report.html", "MNIST <test>",
                                   "5-fold & stratified")
    page = parse(path)
    assert list(page.sections) == [sid for sid, _ in COMPARISON_SECTIONS]
    assert_self_contained(page)
    summary = section_text(page, "summary")
    assert "kmeans 0.600 ± 0.100 0.400 ± 0.000 " in summary  # ACC mean ± sample std over the 3 folds
    assert "dec 0.800 ± 0.000" in summary and "11.0 ± 1.0" in summary
    assert "–" in summary  # k-means has no Dunn value at all
    assert page.sections["charts"]["imgs"] == 1
    assert section_text(page, "results").count("fold") >= 6
    text = path.read_text()
    assert "MNIST &lt;test&gt;" in text and "5-fold &amp; stratified" in text
    with pytest.raises(ValueError, match="non-empty"):
        write_comparison_report([], tmp_path / "x.html", "t", "p")


def test_deepclust_report_rebuilds_the_comparison_page_of_an_evaluate_folder(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"config": {}, "resolved": {"dataset": "usps"}}))
    (tmp_path / "results.json").write_text(json.dumps({"protocol": "3 folds", "rows": comparison_rows()}))
    assert main(["report", str(tmp_path)]) == 0
    page = parse(tmp_path / "report.html")
    assert list(page.sections) == [sid for sid, _ in COMPARISON_SECTIONS]
    assert "3 folds" in section_text(page, "protocol")
    assert "deepclust evaluate: usps" in (tmp_path / "report.html").read_text()


# ---------------------------------------------------------------------------------- plot helpers
def test_report_plot_helpers_draw_pngs(tmp_path):
    history = [{"stage": "pretrain", "epoch": 1, "loss": 0.5},
               {"stage": "cluster", "iteration": 0, "acc": 0.4},
               {"stage": "cluster", "iteration": 1, "acc": 0.6, "delta_label": 0.1}]
    for path in (plot_history_columns(history, tmp_path / "h.png"),
                 plot_k_selection([2, 3, 4], [0.1, float("nan"), 0.3], tmp_path / "k.png", best_k=4,
                                  inertias=[3, 2, 1]),
                 plot_metric_bars(comparison_rows(), tmp_path / "b.png")):
        with Image.open(path) as image:
            assert image.size[0] > 300 and np.unique(np.asarray(image.convert("L"))).size > 10
    with pytest.raises(ValueError, match="no history columns"):
        plot_history_columns([{"epoch": 1}], tmp_path / "none.png")
    with pytest.raises(ValueError, match="same"):
        plot_k_selection([2, 3], [0.1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no numeric metric"):
        plot_metric_bars([{"method": "a"}], tmp_path / "bad.png")


def test_tile_images_scales_and_pads():
    grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    strip = tile_images(grey, tile=8, pad=2)
    assert strip.shape == (8, 8 + 2 + 8, 1) and strip.dtype == np.uint8
    assert np.array_equal(strip[:2, :2, 0], np.full((2, 2), grey[0, 0, 0]))  # nearest-neighbour x2
    assert (strip[:, 8:10] == 255).all()
    rgb = np.zeros((3, 100, 50, 3), np.float32)
    assert tile_images(rgb, tile=20, pad=0).shape == (20, 30, 3)  # longer side to 20, aspect kept


# ---------------------------------------------------------------------------------------- browser
def _chrome():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver, options, Service(str(CHROMEDRIVER))


@pytest.mark.browser
@pytest.mark.slow
def test_reports_open_in_headless_chromium(deep_dir, tmp_path):
    webdriver, options, service = _chrome()
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    comparison = write_comparison_report(comparison_rows(), tmp_path / "comparison.html", "t", "p")
    pages = [(deep_dir / "report.html", RUN_IDS),
             (comparison, [sid for sid, _ in COMPARISON_SECTIONS])]
    driver = webdriver.Chrome(service=service, options=options)
    try:
        for path, ids in pages:
            driver.get(path.resolve().as_uri())
            sections = driver.find_elements("css selector", "section")
            assert [s.get_attribute("id") for s in sections] == ids
            for section in sections:
                assert section.find_element("css selector", "h2").is_displayed()
            broken = driver.execute_script(
                "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            assert broken == 0
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
            assert errors == []
            shot = tmp_path / f"{path.stem}.png"
            assert driver.save_screenshot(str(shot))
            with Image.open(shot) as image:
                grey = np.asarray(image.convert("L"), dtype=np.float32)
            assert grey.shape[1] == 1280 and grey.shape[0] > 1000
            assert grey.std() > 10 and len(np.unique(grey)) > 50  # text, tables and plots: not blank
    finally:
        driver.quit()
    if os.environ.get("DEEPCLUST_KEEP_SCREENSHOTS"):  # for a person to look at the page
        shutil.copy(tmp_path / "report.png", os.environ["DEEPCLUST_KEEP_SCREENSHOTS"])


def test_page_names_every_section_in_its_navigation(kmeans_dir):
    text = (kmeans_dir / "report.html").read_text()
    assert re.findall(r"<nav>(.*?)</nav>", text)[0].count("<a href='#") == len(RUN_SECTIONS)


def test_embeddings_are_mapped_and_checked(tmp_path):
    """embeddings.npy (millions of rows on a data cache) is mapped, not read whole; a file that is not a
    plain array of numbers is still refused."""
    from deepclust.run_folder import RunFolderError, read_array

    Z = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "z.npy", Z)
    mapped = read_array(tmp_path / "z.npy", finite=False, mapped=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, Z)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "short.npy").write_bytes((tmp_path / "z.npy").read_bytes()[:-8])  # truncated
    for name in ("objects.npy", "short.npy"):
        with pytest.raises(RunFolderError, match=name):
            read_array(tmp_path / name, finite=False, mapped=True)


def test_assignments_are_read_and_written_a_row_at_a_time(tmp_path):
    """The streamed writer (in chunks) and reader round-trip labels, classes and quoted paths."""
    from deepclust.data import ImageDataset
    from deepclust.pipeline.run import write_assignments
    from deepclust.report.page import _read_assignments

    n = 11
    data = ImageDataset("t", np.zeros((n, 2, 2, 1), np.uint8), np.arange(n) % 3, ["a", "b", "c"], "",
                        [f"img {i}, \"x\".png" for i in range(n)])
    labels = (np.arange(n) * 7) % 5
    write_assignments(tmp_path / "assignments.csv", data, labels, chunk=4)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "assignments.csv").read_text(), newline="")))
    assert [int(r["cluster"]) for r in rows] == labels.tolist() and rows[3]["path"] == 'img 3, "x".png'
    clusters, truth, paths = _read_assignments(tmp_path / "assignments.csv")
    np.testing.assert_array_equal(clusters, labels)
    np.testing.assert_array_equal(truth, np.arange(n) % 3)
    assert paths == data.paths
