"""The UI in a real browser (headless Chromium): each page loads and does its job.

A tiny training run started from the form draws its loss curve; the playground answers with
RAG and shows a numbered source; side by side gives two answers; a bad config value is shown
next to its field; the compare page shows a report and starts ``tuneforge compare``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ui_harness import open_page, screenshot, wait_for

from tuneforge.train.config import load_config
from tuneforge.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("browser")


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def fill(driver, element_id: str, text: str) -> None:
    box = by_id(driver, element_id)
    box.clear()
    box.send_keys(text)


def click(driver, element_id: str) -> None:
    driver.execute_script("document.getElementById(arguments[0]).click()", element_id)


def chart_points(driver, chart_id: str) -> int:
    """How many points the chart ``chart_id`` draws (its SVG's data-points)."""
    svg = driver.find_element("css selector", f"#{chart_id} svg")
    return int(svg.get_attribute("data-points") or 0)


def page_errors(driver) -> list[str]:
    return [box.text for box in driver.find_elements("css selector", ".error-box")]


@pytest.mark.parametrize("page", ["data", "train", "playground", "compare"])
def test_each_page_loads_from_the_package_alone(browser, ui_server, page):
    open_page(browser, ui_server, page)
    assert page_errors(browser) == []
    active = browser.find_element("css selector", "header nav a.active")
    assert active.get_attribute("data-page") == page
    # Every script, style and image came from this server (no CDN).
    sources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert sources and all(source.startswith(ui_server.url) for source in sources), sources


def test_data_page_lists_invalid_lines_draws_lengths_and_marks_the_loss(
    browser, ui_server, broken_chat_file
):
    open_page(browser, ui_server, "data")
    fill(browser, "data-path", str(broken_chat_file))
    click(browser, "data-inspect")
    table = wait_for(lambda: by_id(browser, "data-errors"), what="the invalid records")
    rows = table.find_elements("css selector", "td.line")
    assert [row.text for row in rows] == ["3", "6"]
    assert "invalid JSON" in table.text
    assert "invalid records: 2" in table.text.lower()
    bars = by_id(browser, "data-histogram").find_element("css selector", "svg")
    assert int(bars.get_attribute("data-bars")) >= 1
    example = by_id(browser, "data-example-view")
    marked = [span.text for span in example.find_elements("css selector", "span.loss")]
    # The assistant's reply (and its end-of-turn token) carries loss; the user turn does not.
    assert any('"quantity": 1' in text for text in marked), marked
    assert not any("Order 1 lamps" in text for text in marked)
    assert "Order 1 lamps" in example.text
    screenshot(browser, "data")


def test_a_bad_config_value_is_shown_next_to_its_field(browser, ui_server, chat_file):
    open_page(browser, ui_server, "train")
    fill(browser, "f-lr", "-1")
    click(browser, "plan-btn")
    error = wait_for(lambda: by_id(browser, "err-lr").text, what="the lr error")
    assert "'lr' must be a number > 0; got -1" in error
    assert by_id(browser, "err-batch_size").text == ""
    # A data option's error lands next to the data option.
    fill(browser, "f-lr", "2e-4")
    fill(browser, "f-data__max_length", "1")
    click(browser, "plan-btn")
    error = wait_for(lambda: by_id(browser, "err-data__max_length").text, what="the error")
    assert "max_length must be an integer >= 2" in error
    assert by_id(browser, "err-lr").text == ""


def test_a_run_started_from_the_form_draws_its_loss_curve(
    browser, ui_server, chat_file, tiny_model_dir
):
    open_page(browser, ui_server, "train")
    fill(browser, "run-name", "from-form")
    fill(browser, "f-model", str(tiny_model_dir))
    fill(browser, "f-max_steps", "6")
    fill(browser, "f-batch_size", "2")
    fill(browser, "f-data__path", str(chat_file))
    fill(browser, "f-data__max_length", "64")
    fill(browser, "f-data__val_fraction", "0.2")
    click(browser, "start-btn")
    plan = wait_for(lambda: by_id(browser, "plan-table").text, what="the memory plan")
    assert "predicted peak" in plan
    # The curve gets its points while the run goes on (the page polls metrics.jsonl).
    wait_for(lambda: chart_points(browser, "chart-loss") >= 1, timeout=180, what="a loss point")
    wait_for(
        lambda: by_id(browser, "run-status").text == "finished",
        timeout=180,
        what="the run to finish",
    )
    points = chart_points(browser, "chart-loss")
    run = ui_server.runs / "from-form"
    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    # loss + val_loss points, one per metrics line holding either
    assert points == len(steps) + len([r for r in records if "val_loss" in r])
    assert len(steps) == 6
    assert chart_points(browser, "chart-lr") == len(steps)
    # An ordinary run folder: the CLI reads its config back, ready for --resume.
    config = load_config(run / "config.yaml", {"resume": True})
    assert (config.out, config.max_steps, config.data.path) == (str(run), 6, str(chat_file))
    assert (run / "adapter" / "adapter_config.json").is_file()
    row = browser.find_element("css selector", "tr[data-run='from-form']")
    assert "finished" in row.text
    screenshot(browser, "train")


def test_playground_with_rag_shows_numbered_sources(browser, ui_server):
    open_page(browser, ui_server, "playground")
    click(browser, "pane-a-rag")
    fill(browser, "max-tokens", "8")
    fill(browser, "prompt", "How long is the warranty period of the Lumen desk lamp?")
    click(browser, "send")
    wait_for(lambda: by_id(browser, "pane-a-answer").get_attribute("data-done"), what="the answer")
    assert page_errors(browser) == []
    sources = by_id(browser, "pane-a-sources").find_elements("css selector", "li[data-index]")
    assert sources, "no numbered source"
    assert sources[0].text.startswith("[1] ")
    assert "warranty.md" in sources[0].text
    assert "3 years" in sources[0].text


def test_side_by_side_sends_the_prompt_to_two_configurations(browser, ui_server):
    from selenium.webdriver.support.ui import Select

    open_page(browser, ui_server, "playground")
    click(browser, "side-by-side")
    Select(by_id(browser, "pane-a-adapter")).select_by_value("")
    Select(by_id(browser, "pane-b-adapter")).select_by_value("a1")
    click(browser, "pane-b-rag")
    fill(browser, "max-tokens", "6")
    fill(browser, "prompt", "How long is the warranty period of the Lumen desk lamp?")
    click(browser, "send")
    for pane in ("a", "b"):
        wait_for(
            lambda pane=pane: by_id(browser, f"pane-{pane}-answer").get_attribute("data-done"),
            what=f"answer {pane}",
        )
    assert page_errors(browser) == []
    answers = [
        browser.execute_script(f"return document.getElementById('pane-{p}-answer').textContent")
        for p in ("a", "b")
    ]
    assert all(answers) and answers[0] != answers[1], answers
    assert by_id(browser, "pane-a-meta").text.startswith("tiny ·")
    assert by_id(browser, "pane-b-meta").text.startswith("a1 + RAG")
    assert by_id(browser, "pane-a-sources").text == ""
    assert by_id(browser, "pane-b-sources").find_elements("css selector", "li[data-index]")
    screenshot(browser, "playground")


def test_compare_page_shows_a_report_and_runs_compare(browser, ui_server):
    sys.path.insert(0, str(Path(__file__).parents[1] / "evaluate"))
    from eval_fixed_numbers import fixed_comparison

    from tuneforge.evaluate.results import save_comparison

    folder = ui_server.runs / "compare" / "rendered"
    folder.mkdir(parents=True)
    save_comparison(fixed_comparison(), folder / "results.json")
    open_page(browser, ui_server, "compare")
    wait_for(lambda: by_id(browser, "reports-table"), what="the list of comparisons")
    # The button runs `tuneforge compare --out runs/compare/rendered --report-only`.
    fill(browser, "compare-name", "rendered")
    click(browser, "f-report_only")
    click(browser, "compare-start")
    frame = wait_for(lambda: by_id(browser, "report-frame"), timeout=120, what="the report")
    assert frame.get_attribute("src").endswith("/ui/api/compare/rendered/report")
    assert (folder / "report.html").is_file()
    browser.switch_to.frame(frame)
    try:
        assert "RAG" in browser.find_element("tag name", "body").text
    finally:
        browser.switch_to.default_content()
    wait_for(
        lambda: "report ready" in by_id(browser, "reports-table").text,
        timeout=60,
        what="the comparison to end",
    )
    screenshot(browser, "compare")
