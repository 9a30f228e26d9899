"""The page in a real browser: Debian's Chromium driven by Playwright (no browser download)
against a server on 127.0.0.1. Type a sentence, get the translation, open the attention view
(cells = output x source tokens, weights equal to the API's for the chosen layer and head, the
average of heads), follow a row by hovering, stream a generation, and check that markup typed
by a user is shown as text and never run. A screenshot is kept in the test's temp folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import httpx
import pytest
import torch

from aiayn.serve.settings import ServeSettings
from tests.serve.conftest import serving

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def chromium() -> str | None:
    """The system's Chromium: $AIAYN_CHROMIUM, else chromium on the PATH (apt install chromium)."""
    if os.environ.get("AIAYN_CHROMIUM"):
        return os.environ["AIAYN_CHROMIUM"]
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((path for name in names if (path := shutil.which(name))), None)


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        chromium() is None,
        reason="no Chromium on this machine (apt install chromium, or set AIAYN_CHROMIUM)",
    ),
]
INJECTION = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(models):
    with serving(models, ServeSettings(max_wait_ms=0)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, server, *, bypass_csp: bool = False):
    page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=bypass_csp)
    page.dialogs = []  # every alert/confirm/prompt the page opens
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(server.url + "/")
    page.locator("#model option").nth(1).wait_for(state="attached")
    return page


@pytest.fixture
def page(browser, server):
    """The page under its own Content-Security-Policy (so it must work within it)."""
    page = open_page(browser, server)
    yield page
    page.close()


@pytest.fixture
def page_without_csp(browser, server):
    """The page with its Content-Security-Policy ignored: what stops injected markup must be
    the page's own code (text, never HTML), not the policy."""
    page = open_page(browser, server, bypass_csp=True)
    yield page
    page.close()


def run(page, model: str, text: str) -> None:
    page.select_option("#model", model)
    page.fill("#input", text)
    page.click("#run")  # disables the button until the answer is shown
    page.wait_for_selector("#run:not([disabled])")
    assert page.inner_text("#status") == "", page.inner_text("#status")


def cell_weights(page) -> torch.Tensor:
    rows = page.eval_on_selector_all(
        "#heatmap tr",
        "rows => rows.slice(1).map(r => [...r.querySelectorAll('td.cell')]"
        ".map(c => Number(c.dataset.weight)))",
    )
    return torch.tensor(rows)


def test_translate_then_explore_the_attention(page, server, models, tmp_path):
    run(page, "mt", "der hund läuft\nkatze")
    outputs = page.locator(".result .output").all_inner_texts()
    assert outputs == models["mt"].translate(["der hund läuft", "katze"])  # the run's beam
    page.locator(".show-attention").first.click()
    page.wait_for_selector("#attention:not([hidden]) td.cell")
    beam = models["mt"].config.decode.beam
    body = {"model": "mt", "text": "der hund läuft", "beam": beam, "attention": True}
    expected = httpx.post(server.url + "/v1/translate", json=body).json()["attention"]
    source, output = expected["source_tokens"], expected["output_tokens"]
    cross = torch.tensor(expected["cross"])  # layers, heads, output, source
    # the view opens on the last layer, average of heads
    assert page.locator("#heatmap td.cell").count() == len(source) * len(output)
    torch.testing.assert_close(cell_weights(page), cross[-1].mean(0), atol=1e-3, rtol=0)
    row_labels = page.locator("#heatmap th.row").all_inner_texts()
    assert [label.strip() for label in row_labels] == [t.strip() for t in output]
    page.select_option("#layer", "0")
    page.select_option("#head", "1")
    torch.testing.assert_close(cell_weights(page), cross[0, 1], atol=1e-4, rtol=0)
    page.select_option("#kind", "encoder_self")
    assert page.locator("#heatmap td.cell").count() == len(source) ** 2
    torch.testing.assert_close(
        cell_weights(page), torch.tensor(expected["encoder_self"])[0, 1], atol=1e-4, rtol=0
    )
    page.select_option("#kind", "decoder_self")
    assert page.locator("#heatmap td.cell").count() == len(output) * len(expected["input_tokens"])
    # hovering a cell marks its row and column, headers included
    page.hover("#heatmap td.cell[data-row='1'][data-col='0']")
    marked = page.locator("#heatmap .hl")
    assert marked.count() == 2 + len(expected["input_tokens"]) + len(output) - 1
    assert page.locator("#heatmap th.row.hl").inner_text().strip() == output[1].strip()
    page.screenshot(path=tmp_path / "attention.png", full_page=True)
    assert (tmp_path / "attention.png").stat().st_size > 10_000
    assert page.dialogs == [] and page.errors == []


def test_markup_typed_by_a_user_is_shown_as_text_and_never_run(page_without_csp, tmp_path):
    page = page_without_csp
    run(page, "mt", INJECTION)
    assert page.locator(".result .source").inner_text() == INJECTION
    page.locator(".show-attention").first.click()
    page.wait_for_selector("#attention:not([hidden]) td.cell")
    assert page.inner_text("#attention-sentence").startswith(INJECTION + " → ")
    run(page, "lm", INJECTION)
    assert page.locator(".result .source").inner_text() == INJECTION
    page.wait_for_timeout(300)  # give an injected handler the time to fire
    assert page.locator("img").count() == 0
    assert page.dialogs == [] and page.errors == []
    page.screenshot(path=tmp_path / "injection.png")


def test_generation_streams_into_the_page(page, models):
    page.select_option("#model", "lm")
    page.fill("#temperature", "0")
    page.fill("#max-new-tokens", "30")
    run(page, "lm", "der hund ")
    expected = models["lm"].generate("der hund ", temperature=0, max_new_tokens=30)
    assert page.inner_text(".result .continuation") == expected
    assert page.inner_text(".result .source") == "der hund "
