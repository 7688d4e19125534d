"""pivot plots show/diff: reading Plot outputs in the workspace and at past revisions (from the
cache), the JSON and HTML outputs, clear errors, and the page opened in a real headless chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

from pivot.plots import PlotDataError, parse_table

PIPELINE = '''
import json
import struct
import zlib

from pydantic import BaseModel
from pivot import Plot, stage


class Params(BaseModel):
    rate: float = 0.5


def png(width, height, rgb):
    """A small valid PNG, so the browser really decodes it."""
    raw = b"".join(b"\\x00" + bytes(rgb) * width for _ in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@stage(outs=[Plot("loss.csv", x="epoch", y="loss"), Plot("acc.tsv"), Plot("hist.json", x="bin", y="count"),
             Plot("confusion.png"), Plot("curves")], params=Params)
def train(params: Params):
    with open("loss.csv", "w") as f:
        f.write("epoch,loss\\n")
        for epoch in range(12):
            f.write(f"{epoch},{10 * (1 - params.rate) ** epoch:.4f}\\n")
    with open("acc.tsv", "w") as f:
        f.write("step\\ttrain\\ttest\\tcomment\\n")
        for step in range(6):
            f.write(f"{step}\\t{step * params.rate}\\t{step * params.rate * 0.8}\\tstep {step}\\n")
    with open("hist.json", "w") as f:
        json.dump({"bins": [{"bin": b, "count": round(b * params.rate, 3)} for b in range(5)]}, f)
    with open("confusion.png", "wb") as f:
        f.write(png(24, 16, (int(255 * params.rate), 40, 90)))
    import os
    os.makedirs("curves", exist_ok=True)
    with open("curves/roc.csv", "w") as f:
        f.write("fpr,tpr\\n0,0\\n0.2,%s\\n1,1\\n" % params.rate)
    with open("curves/pr.json", "w") as f:
        json.dump({"recall": [0, 0.5, 1], "precision": [1, params.rate, 0.3]}, f)
    with open("curves/README", "w") as f:
        f.write("not a plot\\n")
'''

# Per plot in the page, in order: loss.csv, acc.tsv, hist.json, curves/pr.json, curves/roc.csv
SERIES_PER_PLOT = [1, 2, 1, 1, 1]
PLOT_PATHS = ["loss.csv", "acc.tsv", "hist.json", "confusion.png", "curves/pr.json", "curves/roc.csv"]


def commit_all(project: Project, message: str) -> str:
    project.git("add", "-A")
    project.git("commit", "-q", "-m", message)
    return project.git("rev-parse", "HEAD").strip()


def edited(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def set_rate(project: Project, rate: float) -> None:
    project.write("params.yaml", f"train:\n  rate: {rate}\n")
    project.pivot("run")


def _build_history(project: Project) -> None:
    project.pipeline(PIPELINE)
    project.pivot("run")
    commit_all(project, "rate 0.5")
    project.git("tag", "first")
    set_rate(project, 0.25)
    commit_all(project, "rate 0.25")
    set_rate(project, 0.1)


@pytest.fixture(scope="module")
def history_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module (three runs take seconds); each test gets its own copy."""
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text("[user]\n\tname = Pivot Tests\n\temail = tests@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        root = tmp_path_factory.mktemp("template") / "proj"
        root.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        project = Project(root)
        project.pivot("init")
        _build_history(project)
    return root


@pytest.fixture
def history(history_template: Path, tmp_path: Path) -> Project:
    """Tag `first` (rate 0.5) and HEAD (rate 0.25) committed with their locks; the workspace at rate 0.1."""
    root = tmp_path / "proj"
    shutil.copytree(history_template, root, symlinks=True)
    return Project(root)


def plots_json(project: Project, *args: str, cwd: Path | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(project.pivot("plots", *args, "--json", cwd=cwd).stdout)
    return data


def version(data: dict[str, Any], path: str, rev: str) -> dict[str, Any]:
    plot = next(p for p in data["plots"] if p["path"] == path)
    return next(v for v in plot["versions"] if v["rev"] == rev)


def series(data: dict[str, Any], path: str, rev: str) -> dict[str, list[Any]]:
    return {s["name"]: s["values"] for s in version(data, path, rev)["series"]}


# -- parsing --------------------------------------------------------------------------------------


def test_csv_defaults_x_first_column_y_every_numeric_column() -> None:
    t = parse_table("m.csv", b"step,train,test,comment\n0,1.5,2,a\n1,,3.5,b\n\n2,nan,4,c\n")
    assert t.x_name == "step" and t.x == (0, 1, 2)
    assert [(s.name, s.values) for s in t.series] == [("train", (1.5, None, None)), ("test", (2, 3.5, 4))]
    assert t.mode == "line"


def test_tsv_and_named_columns_and_scatter_when_x_is_out_of_order() -> None:
    t = parse_table("p.tsv", b"pred\tactual\n3\t2.5\n1\t1.2\n2\t2\n", x="pred", y="actual")
    assert t.x == (3, 1, 2) and t.series[0].values == (2.5, 1.2, 2) and t.mode == "scatter"


def test_single_column_uses_the_row_number_as_x() -> None:
    t = parse_table("loss.csv", b"loss\n0.9\n0.5\n")
    assert t.x_name == "row" and t.x == (0, 1) and t.series[0].name == "loss"
    # y named and first: x falls back to the row number rather than plotting y against itself
    t = parse_table("m.csv", b"loss,acc\n0.9,0.1\n0.5,0.2\n", y="loss")
    assert t.x_name == "row" and [s.name for s in t.series] == ["loss"]


def test_text_x_values_are_kept_as_labels() -> None:
    t = parse_table("d.csv", b"date,value\n2024-01-01,1\n2024-01-02,3\n")
    assert t.x == ("2024-01-01", "2024-01-02") and t.mode == "line"


@pytest.mark.parametrize("data", [
    b'[{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]',
    b'{"train": [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]}',
    b'{"epoch": [0, 1], "loss": [1.0, 0.5]}',
])
def test_json_shapes(data: bytes) -> None:
    t = parse_table("loss.json", data)
    assert t.x_name == "epoch" and t.x == (0, 1) and t.series[0].values == (1.0, 0.5)


@pytest.mark.parametrize(("path", "data", "x", "y", "message"), [
    ("loss.csv", b"step,loss\n1,2\n", "epoch", None,
     "x column 'epoch' not found; its columns are: step, loss"),
    ("loss.csv", b"epoch,loss\n1,2\n", None, "val_loss", "y column 'val_loss' not found; its columns are: epoch, loss"),
    ("loss.csv", b"epoch,loss\n1,0.5\n2,high\n", None, "loss", "y column 'loss' is not numeric: 'high' on line 3"),
    ("loss.json", b'[{"epoch": 1, "loss": [1]}]', None, "loss", "y column 'loss' is not numeric: [1] on record 0"),
    ("loss.csv", b"a,b\n1,2,3\n", None, None, "line 2 has 3 fields but the header has 2"),
    ("loss.csv", b"", None, None, "the file is empty"),
    ("loss.csv", b"epoch,loss\n", None, None, "it has a header but no rows of data"),
    ("loss.csv", b"\x89PNG\x00\xff\xfe", None, None, "not UTF-8 text"),
    ("loss.csv", b"name,kind\na,b\n", None, None, "no numeric column to draw besides x 'name'"),
    ("loss.json", b"[1,", None, None, "not valid JSON"),
    ("loss.json", b'{"a": 1}', None, None, "expected a list of records"),
    ("loss.json", b'{"a": [1, 2], "b": [1]}', None, None, "its columns have different lengths"),
    ("loss.json", b'{"a": [{"x": 1}], "b": [{"x": 2}]}', None, None, "holds several lists of records (a, b)"),
    ("loss.txt", b"1 2\n", None, None, "'.txt' files cannot be plotted; use .csv, .tsv or .json"),
])
def test_parse_errors_say_what_does_not_fit(path: str, data: bytes, x: str | None, y: str | None,
                                            message: str) -> None:
    with pytest.raises(PlotDataError) as info:
        parse_table(path, data, x, y)
    assert message in str(info.value)


# -- the commands -----------------------------------------------------------------------------------


def test_show_reads_the_workspace(history: Project) -> None:
    data = plots_json(history, "show")
    assert data["revisions"] == [{"name": "workspace", "commit": None}]
    assert [p["path"] for p in data["plots"]] == PLOT_PATHS  # README in curves/ is not a plot
    loss = version(data, "loss.csv", "workspace")
    assert loss["x"] == {"name": "epoch", "values": list(range(12))} and loss["mode"] == "line"
    assert series(data, "loss.csv", "workspace")["loss"][:3] == [10.0, 9.0, 8.1]
    assert list(series(data, "acc.tsv", "workspace")) == ["train", "test"]  # 'comment' is text
    assert series(data, "hist.json", "workspace") == {"count": [0.0, 0.1, 0.2, 0.3, 0.4]}
    assert series(data, "curves/roc.csv", "workspace") == {"tpr": [0, 0.1, 1]}
    image = version(data, "confusion.png", "workspace")
    assert image["image"]["type"] == "image/png" and image["source"] == "confusion.png"
    assert all(v["note"] is None for p in data["plots"] for v in p["versions"])


def test_diff_reads_past_revisions_from_the_cache(history: Project) -> None:
    data = plots_json(history, "diff")  # no revision: HEAD and the workspace
    head = history.git("rev-parse", "HEAD").strip()
    assert data["revisions"] == [{"name": "HEAD", "commit": head}, {"name": "workspace", "commit": None}]
    assert series(data, "loss.csv", "HEAD")["loss"][:2] == [10.0, 7.5]
    assert series(data, "loss.csv", "workspace")["loss"][:2] == [10.0, 9.0]
    assert series(data, "curves/pr.json", "HEAD") == {"precision": [1, 0.25, 0.3]}
    assert version(data, "loss.csv", "HEAD")["source"].startswith(str(history.root / ".pivot/cache/files"))

    three = plots_json(history, "diff", "first", "HEAD", "workspace")
    assert [r["name"] for r in three["revisions"]] == ["first", "HEAD", "workspace"]
    assert [series(three, "loss.csv", r)["loss"][1] for r in ("first", "HEAD", "workspace")] == [5.0, 7.5, 9.0]

    one = plots_json(history, "diff", "first")  # one revision: it and the workspace
    assert [r["name"] for r in one["revisions"]] == ["first", "workspace"]

    past = plots_json(history, "show", "first")  # show REV: that revision alone
    assert [r["name"] for r in past["revisions"]] == ["first"]
    assert series(past, "loss.csv", "first")["loss"][1] == 5.0


def test_a_version_missing_from_the_cache_is_a_note_not_a_failure(history: Project) -> None:
    lock = history.git("show", "first:.pivot/stages/train.lock")
    digest = lock.split("path: loss.csv")[0].rsplit("hash: ", 1)[1].split()[0]
    (history.root / ".pivot/cache/files" / digest[:2] / digest[2:]).unlink()
    proc = history.pivot("plots", "diff", "first", "--json")
    assert ("note: loss.csv at first: not in the local cache (object "
            f"{digest[:10]}…); run 'pivot fetch --all-commits' to download it from the remote") in proc.stderr
    data = json.loads(proc.stdout)
    assert version(data, "loss.csv", "first")["note"].startswith("not in the local cache")
    assert series(data, "loss.csv", "workspace")["loss"][1] == 9.0  # the rest is still drawn
    assert series(data, "acc.tsv", "first")


def test_no_commits_yet_says_so(project: Project) -> None:
    project.pipeline(PIPELINE)
    project.pivot("run")
    proc = project.pivot("plots", "diff", "--json", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "this repository has no commits yet" in proc.stderr, proc.stderr


def test_a_revision_without_the_plot_is_a_note(project: Project) -> None:
    project.pipeline(PIPELINE)
    commit_all(project, "pipeline, not run yet")
    project.pivot("run")
    proc = project.pivot("plots", "diff", "--json")
    assert ("note: loss.csv at HEAD: no lock file at HEAD records it "
            "(the stage had not run there, or did not declare this plot)") in proc.stderr
    assert series(json.loads(proc.stdout), "loss.csv", "workspace")


def test_page_is_written_self_contained_and_kept_out_of_git(history: Project, tmp_path: Path) -> None:
    proc = history.pivot("plots", "diff")
    page = history.root / ".pivot/plots/index.html"
    assert f"Wrote 6 plot(s) of HEAD ({history.git('rev-parse', '--short=7', 'HEAD').strip()}) vs workspace " \
           f"to {page} (" in proc.stdout
    text = page.read_text()
    assert "<script src" not in text.replace('<script type="text/javascript">', "")  # nothing to fetch
    assert "Plotly.newPlot" in text and "data:image/png;base64," in text
    assert text.count('class="plot"') == 6
    assert ".pivot/plots" not in history.git("status", "--porcelain", "--untracked-files=all")
    # -o is relative to where the command runs, also below the root
    (history.root / "sub").mkdir()
    history.pivot("plots", "show", "-o", "out/p.html", cwd=history.root / "sub")
    assert (history.root / "sub/out/p.html").read_text().startswith("<!DOCTYPE html>")


def test_open_hands_the_page_to_the_browser(history: Project, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))
    history.pivot("plots", "show", "--open")
    assert opened.read_text().strip() == (history.root / ".pivot/plots/index.html").as_uri()


def test_bad_workspace_plot_is_one_error_line(history: Project) -> None:
    history.write("loss.csv", "step,loss\n0,1\n")
    proc = history.pivot("plots", "show", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == ("error: plot loss.csv (stage 'train'): x column 'epoch' not found; "
                           "its columns are: step, loss\n")
    history.write("loss.csv", "epoch,loss\n0,1\n1,lots\n")
    proc = history.pivot("plots", "diff", "--json", check=False)
    assert proc.stderr == "error: plot loss.csv (stage 'train'): y column 'loss' is not numeric: 'lots' on line 3\n"
    history.write("hist.json", "{not json")
    history.write("loss.csv", "epoch,loss\n0,1\n")
    proc = history.pivot("plots", "show", check=False)
    assert proc.stderr.startswith("error: plot hist.json (stage 'train'): not valid JSON (")


def test_bad_file_in_a_past_revision_is_a_note(history: Project) -> None:
    pipeline = edited(PIPELINE, 'x="epoch", y="loss"', 'x="epoch", y="val_loss"')
    history.pipeline(edited(pipeline, 'epoch,loss', 'epoch,val_loss'))
    history.pivot("run")
    proc = history.pivot("plots", "diff", "--json")
    assert ("note: loss.csv at HEAD: cannot be drawn: y column 'val_loss' not found; "
            "its columns are: epoch, loss") in proc.stderr
    assert series(json.loads(proc.stdout), "loss.csv", "workspace")["val_loss"]


def test_a_plot_the_pipeline_dropped_still_shows_its_past(history: Project) -> None:
    history.pipeline(edited(PIPELINE, 'Plot("hist.json", x="bin", y="count")', '"hist.json"'))
    history.pivot("run")
    data = plots_json(history, "diff")
    plot = next(p for p in data["plots"] if p["path"] == "hist.json")
    assert plot["stage"] == "train" and plot["x"] is None  # today's pipeline no longer says x/y
    assert series(data, "hist.json", "HEAD") == {"count": [0.0, 0.25, 0.5, 0.75, 1.0]}
    assert version(data, "hist.json", "workspace")["note"] == "not a Plot of the current pipeline"


def test_unknown_revision(history: Project) -> None:
    proc = history.pivot("plots", "diff", "nope", check=False)
    assert proc.stderr == ("error: unknown git revision 'nope'; use a branch, tag or commit "
                           "(see 'git log --oneline')\n")


def test_no_plot_outputs(project: Project) -> None:
    project.pipeline('''
        from pivot import stage

        @stage(outs=["a.txt"])
        def a():
            open("a.txt", "w").write("a")
    ''')
    proc = project.pivot("plots", "show")
    assert proc.stdout.startswith("No Plot outputs in the pipeline: declare one in a stage's outs")
    assert not project.exists(".pivot/plots/index.html")
    assert json.loads(project.pivot("plots", "show", "--json").stdout)["plots"] == []


def test_without_plotly_the_page_says_how_to_install_it(history: Project, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    shadow = tmp_path / "no-plotly" / "plotly"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named plotly')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    proc = history.pivot("plots", "show", check=False)
    assert proc.stderr == ("error: drawing plots needs plotly, which is not installed; run: "
                           "pip install 'pivot[plots]' (or use --json to get the data without it)\n")
    assert plots_json(history, "show")["plots"]  # the data needs no plotly


def test_cli_stays_cheap_to_import(project: Project) -> None:
    code = ("import sys, pivot.cli.plots, pivot.plots; "
            "assert not [m for m in sys.modules if m.startswith(('plotly', 'pygit2'))], 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "plots" in project.pivot("--help").stdout
    assert "diff" in project.pivot("plots", "--help").stdout


# -- a real headless browser ------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _unavailable(reason: str) -> None:
    """On CI a missing browser is a failure (.ci/run installs it); locally a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run should have installed it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser: Any, page_file: Path) -> dict[str, Any]:
    """Load the page with the network cut off; report what it drew, its errors and any request
    that left the file."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

    def route(r: Any) -> None:
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    try:
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_function("() => document.querySelectorAll('.plotly-graph-div').length > 0 && "
                               "[...document.querySelectorAll('.plotly-graph-div')]"
                               ".every(d => d.classList.contains('js-plotly-plot'))", timeout=30_000)
        drawn = page.evaluate("""() => ({
            data: [...document.querySelectorAll('.js-plotly-plot')].map(d => (d.data || []).length),
            traces: [...document.querySelectorAll('.js-plotly-plot')]
                .map(d => d.querySelectorAll('.scatterlayer .trace').length),
            legend: [...document.querySelectorAll('.js-plotly-plot')]
                .map(d => [...d.querySelectorAll('.legend .traces')].map(t => t.textContent)),
            images: [...document.querySelectorAll('img')].map(i => i.complete && i.naturalWidth),
        })""")
    finally:
        page.close()
    return {**drawn, "errors": errors, "outside": outside}


def test_page_in_headless_chromium(history: Project, browser: Any) -> None:
    start = time.monotonic()
    history.pivot("plots", "show", "-o", "show.html")
    shown = open_page(browser, history.root / "show.html")
    assert shown["errors"] == [] and shown["outside"] == []
    assert shown["data"] == SERIES_PER_PLOT and shown["traces"] == SERIES_PER_PLOT
    assert shown["images"] == [24]  # confusion.png decoded, 24 px wide

    history.pivot("plots", "diff", "first", "-o", "diff.html")
    diffed = open_page(browser, history.root / "diff.html")
    assert diffed["errors"] == [] and diffed["outside"] == []
    assert diffed["data"] == [2 * n for n in SERIES_PER_PLOT] and diffed["traces"] == diffed["data"]
    assert diffed["legend"][0] == ["first: loss", "workspace: loss"]
    assert diffed["legend"][1] == ["first: train", "first: test", "workspace: train", "workspace: test"]
    assert diffed["images"] == [24, 24]
    print(f"browser checks took {time.monotonic() - start:.1f}s")
