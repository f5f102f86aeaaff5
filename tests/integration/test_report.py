"""``write_report`` on a real (small) XPCS run directory: PNGs, one self-contained HTML page,
and the page rendered by headless Chromium (``-m browser``), whose screenshot shows the plots."""

import json
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

import shardmc
from shardmc import xpcs
from shardmc.workflow.html_report import make_plots, shard_constrained_moments, write_report
from shardmc.xpcs.plots import plot_c2_fit, plot_corner, plot_divergences, plot_shard_forest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("c2_angle_0.png", "c2_angle_1.png", "corner.png", "shard_forest.png",
         "divergences.png")
INTERVAL = 0.9
#: Headless Chromium window (px); the screenshot has exactly this size.
WINDOW = (1280, 4000)
CHROMIUM_TIMEOUT_S = 60
#: A pixel is "colourful" when max - min over its RGB channels exceeds this (plots are
#: viridis / RdBu heat maps and coloured markers; text, rules and tables are grey).
CHROMA_MIN = 0.15
SCREENSHOT_COPY = Path("/tmp/report_screenshot.png")


def _summary_rows(post, names, truth):
    rows = []
    for name in names:
        x = post.samples[name]
        lo, hi = np.quantile(x, [(1 - INTERVAL) / 2, 1 - (1 - INTERVAL) / 2])
        t = float(truth[name])
        rows.append({"parameter": name, "mean": float(x.mean()), "sd": float(x.std(ddof=1)),
                     "lower": float(lo), "upper": float(hi), "truth": t,
                     "covered": bool(lo <= t <= hi)})
    return rows


def _write_run_dir(run, post, model, data, truth, points):
    post.save(run / "posterior.nc")
    names = list(model.parameter_names)
    prov = post.provenance
    (run / "summary.json").write_text(json.dumps({
        "physics": "static", "num_points": int(points["c2"].shape[0]), "num_shards": 2,
        "seconds": 12.5, "interval": INTERVAL,
        "parameters": _summary_rows(post, names, truth),
        "warnings": post.warnings(), "diagnosis": post.diagnose().messages("warning")}))
    medians = {k: np.median(v, axis=0) for k, v in post.samples.items()}
    fitted = xpcs.fitted_c2(model, medians, data)
    np.savez(run / "fit.npz", c2=data.c2, fitted=fitted, residual=data.c2 - fitted, t=data.t,
             phi=data.phi, q=np.float64(data.q))
    (run / "manifest.json").write_text(json.dumps({
        "shardmc_version": shardmc.__version__, "versions": prov["versions"], "seed": 0,
        "num_shards": 2, "num_points": int(points["c2"].shape[0]),
        "shard_sizes": prov["shard_sizes"],
        "state": "finished", "shards": [
            {"index": i, "of": 2, "status": "ok", "seconds": s["total_time"],
             "num_points": prov["shard_sizes"][i], "divergence_rate": s["divergence_rate"]}
            for i, s in enumerate(prov["shard_stats"])],
        "config_hash": "c0ffee", "data_hash": "da7a", "started": "2026-01-01T00:00:00",
        "finished": "2026-01-01T00:00:12"}))
    (run / "config.yaml").write_text("physics: static\nshards: 2\nnote: <b>&amp</b>\n")
    (run / "truth.json").write_text(json.dumps({k: float(truth[k]) for k in names}))
    (run / "shards").mkdir()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    shardmc.enable_x64()
    data, truth = xpcs.simulate("static", n_angles=2, n_t=30, seed=0)
    model = xpcs.XPCSModel.create("static", data.n_phi)
    points, kwargs = xpcs.prepare(model, data)
    start = xpcs.warm_start(model, data, seed=0, laplace=False)  # as shardmc run (docs/xpcs.md)
    post = shardmc.fit(model, points, 2, model_kwargs=kwargs, sharding="stratified",
                       strata=points["phi_idx"], num_chains=1, num_warmup=100,
                       num_samples=100, seed=0, init_strategy="value",
                       init_values=start.init_values)
    run = tmp_path_factory.mktemp("run")
    _write_run_dir(run, post, model, data, truth, points)
    write_report(run)
    return run


def test_every_plot_is_a_png(run_dir):
    for name in PLOTS:
        path = run_dir / "plots" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        img = mpimg.imread(path)
        assert img.ndim == 3 and min(img.shape[:2]) > 100, (name, img.shape)


def test_plot_c2_fit_keeps_its_xpcs_data_signature(tmp_path):
    data, _ = xpcs.simulate("static", n_angles=2, n_t=12, seed=1)
    paths = plot_c2_fit(data, data.c2, tmp_path)  # a perfect fit: zero residual
    assert [p.name for p in paths] == ["c2_angle_0.png", "c2_angle_1.png"]
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in paths)


def test_corner_plot_of_draws_pinned_at_a_bound(tmp_path):
    rng = np.random.default_rng(0)  # alpha sat at its bound 2.0 in a resumed tiny run
    samples = {"alpha": 2.0 - 1e-15 * rng.random(300), "D0": rng.normal(1e4, 50, 300)}
    path = plot_corner(samples, ["D0", "alpha"], tmp_path / "corner.png", {"alpha": 2.0})
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_forest_and_divergence_plots_scale_to_many_shards(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"p{i}" for i in range(7)]
    combined = {n: rng.normal(size=400) for n in names}
    forest = plot_shard_forest(names, rng.normal(size=(64, 7)), np.ones((64, 7)), combined,
                               tmp_path / "forest.png", truth={"p0": 0.0})
    bars = plot_divergences(rng.integers(0, 40, size=200), 200, tmp_path / "div.png",
                            labels=list(range(1, 201)))
    for path in (forest, bars):
        img = mpimg.imread(path)
        assert path.read_bytes()[:8] == PNG_SIGNATURE and max(img.shape[:2]) < 4000


def test_report_is_one_self_contained_page(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "<link" not in page and "<script" not in page
    assert 'src="http' not in page and "href=" not in page and "url(" not in page
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    for name in ("D0", "alpha", "D_offset"):
        assert f"<td class=\"l\">{name}</td>" in page
    assert "90% interval" in page and "covered" in page
    assert "&lt;b&gt;&amp;amp&lt;/b&gt;" in page  # config.yaml, escaped, in <details>
    assert "<details><summary>config.yaml</summary>" in page
    assert "All 2 shards:" in page and "divergent transitions" in page
    assert "heterogeneity" in page and ("consistent" in page or "disagree" in page)


def test_forest_moments_are_per_shard_constrained_values(run_dir):
    post = shardmc.load(run_dir / "posterior.nc")
    kept, means, sds = shard_constrained_moments(post, ["D0", "alpha", "D_offset", "nope"])
    assert kept == ["D0", "alpha", "D_offset"] and means.shape == sds.shape == (2, 3)
    derived = post.provenance["shard_deterministic"]  # the rate block's physical values
    j = derived["names"].index("alpha")
    np.testing.assert_allclose(means[:, 1], derived["means"][j], rtol=1e-12)
    assert np.all(np.isfinite(sds)) and np.all(sds > 0)
    assert np.all((means[:, 0] > 100.0) & (means[:, 0] < 1e5))
    assert np.all(np.abs(means[:, 1] - post.samples["alpha"].mean()) < 4 * sds[:, 1])


def test_posterior_alone_is_enough(run_dir, tmp_path):
    """No fit.npz, summary, manifest, truth or config: c2 maps skipped with a note, the
    summary table computed from the posterior, the shard table from its provenance."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for name in ("fit.npz", "summary.json", "manifest.json", "truth.json", "config.yaml"):
        (copy / name).unlink()
    paths = make_plots(copy)
    assert sorted(p.name for p in paths) == ["corner.png", "divergences.png",
                                             "shard_forest.png"]
    assert not list((copy / "plots").glob("c2_angle_*.png"))  # stale maps removed
    page = write_report(copy).read_text()
    assert "fit.npz is missing" in page and "No config.yaml" in page
    for name in ("D0", "alpha", "D_offset"):
        assert f"<td class=\"l\">{name}</td>" in page
    assert "covered" not in page and page.count("data:image/png;base64,") == 3


def test_missing_posterior_names_file_and_resume(tmp_path):
    with pytest.raises(shardmc.ShardMCInputError, match="expected an existing directory"):
        write_report(tmp_path / "nope")
    manifest = {"num_shards": 3, "state": "running",
                "shards": [{"index": 0, "of": 3, "status": "ok"},
                           {"index": 1, "of": 3, "status": "failed"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(shardmc.ShardMCInputError, match=r"posterior\.nc.*2 shard\(s\) "
                       r"unfinished \(1, 2\): finish the run with `shardmc resume"):
        write_report(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(shardmc.ShardMCInputError, match=r"manifest\.json: expected a JSON"):
        write_report(tmp_path)


def test_shard_table_lists_manifest_shards(run_dir):
    page = (run_dir / "report.html").read_text()
    table = page[page.index("<h2>Shards</h2>"):page.index("<h2>Configuration</h2>")]
    assert table.count("<tr>") == 3 and table.count("<td class=\"l\">ok</td>") == 2
    sizes = [s["num_points"] for s in json.loads((run_dir / "manifest.json").read_text())
             ["shards"]]
    assert sum(sizes) == 2 * 30 * 29 // 2  # 2 angles' upper triangles of 30 frames
    assert "1/2" in table and "%)" in table
    assert all(f"<td>{n}</td>" in table for n in sizes)


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _screenshot(browser: str, page: Path, out: Path) -> np.ndarray:
    shot = out / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={out / 'profile'}",
                    f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}",
                    page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=CHROMIUM_TIMEOUT_S)
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    return mpimg.imread(shot)


def _colourful_fraction(img: np.ndarray) -> float:
    rgb = img[..., :3]
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > CHROMA_MIN).mean())


@pytest.mark.browser
def test_report_renders_with_plots_in_headless_chromium(run_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    page = run_dir / "report.html"
    with_plots = _screenshot(browser, page, tmp_path / "with")
    shutil.copy(tmp_path / "with" / "shot.png", SCREENSHOT_COPY)
    assert with_plots.shape[:2] == (WINDOW[1], WINDOW[0])
    bare = tmp_path / "bare.html"
    html = page.read_text()
    while "<img " in html:
        start = html.index("<img ")
        html = html[:start] + html[html.index(">", start) + 1:]
    bare.write_text(html)
    without = _screenshot(browser, bare, tmp_path / "without")
    colourful, baseline = _colourful_fraction(with_plots), _colourful_fraction(without)
    assert colourful > 0.05, colourful  # heat maps, markers and bands are drawn
    assert baseline < 0.2 * colourful, (baseline, colourful)
    non_white = float((with_plots[..., :3].min(axis=-1) < 0.9).mean())
    assert non_white > 0.1, non_white
