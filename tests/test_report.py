"""`snakemake --report`: a self-contained HTML report whose plots and pages show what the run made.

The report is opened in headless Chromium (Debian's, driven by its chromedriver) the way a user clicks through
it; plots are checked from screenshots: bars drawn, one per category, lengths in proportion to the counts.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, require_service, snakemake
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from cellquery.query.artifacts import MANIFEST_COLUMNS
from cellquery.query.census_route import query_filter
from cellquery.query.report import BAR_COLOR, MAX_BARS, bar_chart, datasets_page, top_counts, validation_page
from cellquery.query.runfiles import read_query

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1400,1000",
]
TOTALS = [
    *["h5ad_cells", "h5ad_cells_census_rules", "census_cells", "h5ad_genes", "census_genes"],
    *["matched_cells", "genes_compared"],
]
FIGURES = {
    "cells per dataset": "dataset_id",
    "cells per cell type": "cell_type",
    "cells per tissue": "tissue",
}


def browser_missing() -> str | None:
    missing = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
    return f"not installed: {', '.join(missing)} (Debian chromium, chromium-driver)" if missing else None


@pytest.fixture(scope="module")
def run(demo, tmp_path_factory):
    """The kidney query run under a fresh name, then its report."""
    name = f"report-kidney-{time.time_ns() % 10**8}"
    spec = tmp_path_factory.mktemp("report") / "spec.yaml"
    query = yaml.safe_load((REPO / "config" / "queries" / "kidney-immune.yaml").read_text())
    spec.write_text(yaml.safe_dump(query | {"name": name}))
    results = demo.project / "results" / name
    snakemake(demo.project, "--config", f"query={spec}")
    snakemake(demo.project, "--report", f"results/{name}/report.html", "--config", f"query={spec}")
    return results


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_service(browser_missing())
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def click(browser, xpath: str):
    """Click the element once it is shown, as a click event on that element: the report's menu moves while
    it renders, so a click at the element's position can land on its neighbour."""
    element = WebDriverWait(browser, 30).until(ec.visibility_of_element_located(("xpath", xpath)))
    browser.execute_script("arguments[0].click();", element)
    return element


def open_result(browser, report, category: str, label: str) -> None:
    """From the report's start page: the category in the menu, then the result's view button."""
    browser.get(report.as_uri())
    click(browser, f"//a[span[text()='{category}']]")
    click(browser, f"(//tr[td[text()='{label}']]//a)[1]")  # the row's view button, then its info button


def shown_plot(browser) -> np.ndarray:
    """The plot in the content pane, as RGB pixels taken from a screenshot."""
    image = WebDriverWait(browser, 30).until(
        ec.visibility_of_element_located(("xpath", "//div[@class='p-3']/img"))
    )
    return np.asarray(Image.open(io.BytesIO(image.screenshot_as_png)).convert("RGB"))


def shown_page(browser) -> str:
    """The text of the HTML page in the content pane's frame."""
    WebDriverWait(browser, 30).until(ec.frame_to_be_available_and_switch_to_it(("xpath", "//iframe")))
    text = WebDriverWait(browser, 30).until(lambda frame: frame.find_element("tag name", "body").text)
    browser.switch_to.default_content()
    return text


def bar_lengths(pixels: np.ndarray) -> list[int]:
    """Lengths in pixels of the horizontal bars drawn in the bar colour, top to bottom."""
    rgb = np.array([int(BAR_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    is_bar = (np.abs(pixels.astype(int) - rgb).sum(axis=2) < 30).sum(axis=1)
    rows = is_bar > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rows.astype(int), [0]])))
    return [
        int(is_bar[start:stop].max())
        for start, stop in zip(edges[::2], edges[1::2], strict=True)
        if stop - start > 4
    ]


@pytest.mark.slow
def test_report_is_one_self_contained_file(run):
    text = (run / "report.html").read_text()
    assert "Snakemake Report" in text
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(https?:)?//", text)  # nothing fetched
    for name in ("cells-per-dataset.svg", "lineage.html", "validation.html", "spec.html", "datasets.html"):
        assert name in text  # every figure and page is embedded


@pytest.mark.slow
@pytest.mark.parametrize("label", FIGURES)
def test_plots_are_drawn_with_one_bar_per_category(run, browser, label):
    counts = expected_counts(run, FIGURES[label])
    open_result(browser, run / "report.html", "Cells", label)
    pixels = shown_plot(browser)
    assert pixels.shape[0] > 150 and pixels.shape[1] > 400
    assert pixels.reshape(-1, 3).std(axis=0).max() > 20  # not a blank image
    lengths = bar_lengths(pixels)
    assert len(lengths) == len(counts)  # one bar per category
    drawn = np.array(lengths) / max(lengths)
    expected = np.sort(counts.to_numpy())[::-1] / counts.max()
    assert np.allclose(drawn, expected, atol=0.02)  # largest on top, lengths in proportion


def expected_counts(results, column: str) -> pd.Series:
    from cellquery.files.h5ad import read_frame

    obs = read_frame(results / f"{results.name}.h5ad", "obs")
    counts = obs[column].value_counts()
    return counts[counts > 0]


@pytest.mark.slow
def test_pages_show_validation_spec_datasets_and_lineage(run, browser):
    report = run / "report.html"
    validation = json.loads((run / "validation.json").read_text())
    receipt = json.loads((run / "receipt.json").read_text())
    manifest = pd.read_csv(run / "manifest.tsv", sep="\t")

    open_result(browser, report, "Validation", "h5ad route against census route")
    page = shown_page(browser)
    assert "Status: passed" in page
    assert f"{validation['totals']['matched_cells']:,} cells matched" in page

    open_result(browser, report, "Registry", "artifact and lineage")
    page = shown_page(browser)
    assert receipt["artifact_uid"] in page and receipt["key"] in page
    assert all(uid in page for uid in receipt["inputs"])  # every input, the census store among them
    assert "cellquery/register" in page and receipt["spec_digest"] in page

    open_result(browser, report, "Query", "spec and census filter")
    page = shown_page(browser)
    query = read_query(run / "query.json")
    assert yaml.safe_dump(query["spec"]["cells"], sort_keys=False).splitlines()[0] in page
    assert query_filter(query) in page

    open_result(browser, report, "Query", "datasets matched")
    page = shown_page(browser)
    assert all(dataset in page for dataset in manifest["dataset_id"])
    assert all(title in page for title in manifest["title"])  # a dataset by its title too


@pytest.mark.slow
def test_the_start_page_of_a_folder_build_names_its_specs_without_a_warning(demo, browser, tmp_path):
    """A build of a folder of specs (no `query`): the start page names the folder, and docutils finds nothing
    to warn about (an empty inline literal used to render a warning block)."""
    folder, stamp = tmp_path / "specs", time.time_ns() % 10**8
    folder.mkdir()
    for source in ("kidney-immune", "t-cells"):
        query, name = (
            yaml.safe_load((REPO / "config" / "queries" / f"{source}.yaml").read_text()),
            f"{source}-{stamp}",
        )
        output = query.get("output", {}) | {"key": f"cellquery/{name}.h5ad"}  # not the shipped query's key
        (folder / f"{source}.yaml").write_text(yaml.safe_dump(query | {"name": name, "output": output}))
    report = tmp_path / "report.html"
    snakemake(demo.project, "--config", f"queries=[{folder}]")
    snakemake(demo.project, "--report", str(report), "--config", f"queries=[{folder}]")
    browser.get(report.as_uri())
    text = WebDriverWait(browser, 30).until(lambda page: page.find_element("tag name", "body").text)
    assert f"The run resolved each spec of {folder} against a LaminDB collection" in text
    assert not re.search(r"System Message|WARNING|ERROR|Docutils|``", text)


def test_many_categories_fold_into_one_other_bar():
    counts = pd.Series({f"type {i}": 100 + i for i in range(40)})
    shown = top_counts(counts)
    assert len(shown) == MAX_BARS and shown.index[-1] == "other (11)"
    assert shown.sum() == counts.sum() and shown.iloc[0] == 139  # largest first, no cell lost


def test_an_empty_result_and_a_missing_column_still_make_every_page(tmp_path):
    manifest = pd.DataFrame(columns=MANIFEST_COLUMNS)
    empty = {"per_dataset": [], "status": "passed", "totals": dict.fromkeys(TOTALS, 0)}
    assert "0 datasets matched (0 with selected cells), 0.0 MB" in datasets_page(manifest, empty)
    assert 'Status: <span class="passed">passed</span>. 0 cells matched' in validation_page(empty)
    bar_chart(pd.Series(dtype=int), "Cells per tissue", tmp_path / "tissue.svg", empty="tissue is missing")
    assert "tissue is missing" in (tmp_path / "tissue.svg").read_text()
