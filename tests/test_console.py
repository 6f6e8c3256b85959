"""The web console in a real headless browser (Debian's chromium through chromium-driver and
Selenium) against a real `zoo serve` process: each page shows the server's values, a small
fine-tune job's page follows it live over server-sent events, cancel asks for the token once,
and the browser logs no errors. Screenshots (1280x800 and 400 px wide) are saved to
``$ZOO_SCREENSHOTS`` (else a temporary folder) for a person to look at."""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TOKEN
from helpers import needed
from test_http import zip_folder

PHOTO = Path(__file__).resolve().parent.parent / "zoo" / "data" / "photos" / "chelsea.jpg"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 60  # for a page to show what the server has (generous: a shared, busy machine)
JOB_WAIT_S = 600  # for a fine-tune job to end
# Seconds of work, not minutes: VGG16 without weights on 32-px digits (tests/helpers.py).
FINETUNE_PARAMS = {
    "epochs": 4,
    "fine_tune_epochs": 2,
    "learning_rate": 1e-2,
    "batch_size": 16,
    "image_size": 32,
    "unfreeze": 2,
    "weights": "none",
}


@pytest.fixture(scope="module")
def console_server(
    served_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A server with a token and one worker over a copy of the served models (the fine-tune
    jobs publish into it)."""
    from serving import start_server

    workdir = tmp_path_factory.mktemp("console")
    repository = workdir / "repository"
    for model in ("mobilenetv2", "tiny-f32"):
        shutil.copytree(served_repository / model, repository / model)
    running = start_server(
        repository,
        workdir,
        "--token",
        TOKEN,
        env={"ZOO_DATA_DIR": str(workdir / "data"), "ZOO_EAGER_MODELS": "mobilenetv2"},
    )
    running.repository = repository  # type: ignore[attr-defined]
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("ZOO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = needed(
        "chromium", "the headless browser the console tests drive; apt-get install chromium"
    )
    driver_path = needed("chromedriver", "WebDriver for chromium; apt-get install chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,800", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver: Any, width: int, height: int = 800) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """``check()``'s first truthy answer; a failure naming ``what`` after ``timeout``."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = check()
        except StaleElementReferenceException:  # the page redrew between find and read
            answer = None
        except WebDriverException as e:
            answer, last = None, e
        if answer:
            return answer
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


def console_errors(driver: Any) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
def page(browser: Any, console_server: Any) -> Iterator[Any]:
    """The browser at 1280x800, its log emptied; after the test, no errors may be in it."""
    viewport(browser, 1280)
    browser.get_log("browser")
    yield browser
    assert console_errors(browser) == []


def open_page(driver: Any, server: Any, route: str) -> None:
    driver.get(f"{server.http_url}/#/{route}")


def shoot(driver: Any, folder: Path, name: str) -> None:
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)  # a frame for the layout after scrolling
    assert driver.save_screenshot(str(folder / f"{name}.png"))


def assert_fits(driver: Any, width: int) -> None:
    """Nothing sticks out sideways: wide tables scroll inside their own box."""
    wide = driver.execute_script(
        """return [...document.querySelectorAll('body *')]
             .filter((e) => e.getBoundingClientRect().right > arguments[0] + 1
                            && !e.closest('.scroll'))
             .slice(0, 5).map((e) => `${e.tagName}#${e.id}.${e.className}`
                                     + ` ${Math.round(e.getBoundingClientRect().right)}`)""",
        width,
    )
    page_width = driver.execute_script("return document.documentElement.scrollWidth")
    assert page_width <= width and not wide, f"{page_width} px wide; sticking out: {wide}"


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def rows(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def tags(driver: Any, css: str) -> list[str]:
    """The labels shown as tags inside ``css``."""
    return [str(t.get_attribute("data-label")) for t in rows(driver, f"{css} [data-label]")]


def fixed(x: float, digits: int) -> str:
    """``x.toFixed(digits)`` as JavaScript writes it: the float's exact value, halves up."""
    from decimal import ROUND_HALF_UP, Decimal

    return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def cells(row: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [str(c.text) for c in row.find_elements(By.CSS_SELECTOR, "th, td")]


def assert_report(driver: Any, evaluation: dict) -> None:
    """The page's test report (#report) shows ``evaluation`` as the API gave it."""
    report = "#report"
    assert text_of(driver, f'{report} dd[data-key="accuracy"]') == (
        fixed(100 * evaluation["accuracy"], 1) + " %"
    )
    top5 = evaluation["top5_accuracy"]
    assert text_of(driver, f'{report} dd[data-key="top-5 accuracy"]') == (
        "\u2014 (5 classes or fewer)" if top5 is None else fixed(100 * top5, 1) + " %"
    )
    assert text_of(driver, f'{report} dd[data-key="test images"]') == f"{evaluation['images']:,}"

    def metric_row(name: str, m: dict) -> list[str]:
        figures = [fixed(m[k], 3) for k in ("precision", "recall", "f1")]
        return [name, *figures, f"{m['support']:,}"]

    shown = [cells(r) for r in rows(driver, "#report-classes tbody tr, #report-classes tfoot tr")]
    assert shown == [
        *(metric_row(c["name"], c) for c in evaluation["classes"]),
        metric_row("macro average", evaluation["macro"]),
        metric_row("weighted average", evaluation["weighted"]),
    ]
    matrix = [[int(x) for x in cells(r)[1:]] for r in rows(driver, "#report-confusion tbody tr")]
    assert matrix == evaluation["confusion_matrix"]
    pairs = [cells(r) for r in rows(driver, "#report-pairs tbody tr")]
    assert pairs == [
        [p["true_label"], p["predicted_label"], str(p["count"])]
        for p in evaluation["most_confused"]
    ]
    mistakes = [cells(r) for r in rows(driver, "#report-mistakes tbody tr")]
    assert mistakes == [
        [m["path"], m["true_label"], m["predicted_label"], fixed(100 * m["confidence"], 1) + " %"]
        for m in evaluation["worst_mistakes"]
    ]


# -- pages ----------------------------------------------------------------------------------


def test_console_is_served_with_its_vendored_chart_library(console_server: Any) -> None:
    with httpx.Client(base_url=console_server.http_url, timeout=30) as http:
        index = http.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert "script-src" not in index.headers["content-security-policy"]  # default-src 'self'
        assert "default-src 'self'" in index.headers["content-security-policy"]
        for asset in ("/console/app.js", "/console/vendor/uPlot.iife.min.js",
                      "/console/vendor/uPlot.LICENSE", "/console/console.css"):  # fmt: skip
            answer = http.get(asset)
            assert answer.status_code == 200, asset
        script = http.get("/console/app.js")
        assert "javascript" in script.headers["content-type"]
        assert script.headers["cache-control"] == "no-cache" and script.headers["etag"]
        missing = http.get("/console/../../pyproject.toml")
        assert missing.status_code == 404
        about = http.get("/v1/console").json()
        assert about["token_required"] is True
        weights = http.get("/v1/weights").json()["models"]
        assert weights["MobileNetV2"] == {"top": False, "notop": False}  # an empty Keras home


def test_catalog_page(page: Any, console_server: Any, screenshots: Path) -> None:
    from selenium.webdriver.common.by import By

    with httpx.Client(base_url=console_server.http_url, timeout=30) as http:
        catalog = {m["name"]: m for m in http.get("/v1/catalog").json()["models"]}
    open_page(page, console_server, "catalog")
    wait_for(lambda: len(rows(page, "#catalog-table tbody tr")) == len(catalog), "every model")
    row = '#catalog-table tr[data-name="ResNet50"]'
    assert (
        text_of(page, f'{row} td[data-key="parameters"]')
        == f"{catalog['ResNet50']['parameters']:,}"
    )
    assert text_of(page, f'{row} td[data-key="depth"]') == str(catalog["ResNet50"]["depth"])
    assert (
        text_of(page, f'{row} td[data-key="input"]') == "224\u00d7224\u00d73"
    )  # x: the multiplication sign
    assert text_of(page, f'{row} td[data-key="weights"]') == "no"
    served = '#catalog-table tr[data-name="mobilenetv2"]'
    assert text_of(page, f'{served} td[data-key="exported"]') == "v1"
    assert text_of(page, f'{served} td[data-key="served"]') == "v1"  # eager: loaded at start
    shoot(page, screenshots, "catalog")
    viewport(page, 400)
    assert_fits(page, 400)
    shoot(page, screenshots, "catalog-narrow")
    viewport(page, 1280)

    # sorted by parameters, largest first (a numeric column starts descending)
    page.find_element(By.CSS_SELECTOR, 'th[data-key="parameters"] button').click()
    shown = [r.get_attribute("data-name") for r in rows(page, "#catalog-table tbody tr")]
    by_size = sorted(
        catalog, key=lambda n: (catalog[n]["parameters"] is None, -(catalog[n]["parameters"] or 0))
    )
    assert [catalog[n]["parameters"] for n in shown] == [catalog[n]["parameters"] for n in by_size]
    page.find_element(By.ID, "catalog-filter").send_keys("efficientnetv2")
    names = [r.get_attribute("data-name") for r in rows(page, "#catalog-table tbody tr")]
    assert names and all("efficientnetv2" in n.lower() for n in names)
    assert len(names) == sum("efficientnetv2" in n.lower() for n in catalog)


def test_models_page(page: Any, console_server: Any, screenshots: Path) -> None:
    with httpx.Client(base_url=console_server.http_url, timeout=30) as http:
        for _ in range(3):
            answer = http.post("/v1/models/mobilenetv2/classify", content=PHOTO.read_bytes())
            assert answer.status_code == 200, answer.text
        stats = http.get("/v2/models/mobilenetv2/versions/1/stats").json()["model_stats"][0]
    open_page(page, console_server, "models")
    card = '.card[data-model="mobilenetv2"]'
    count = f'{card} tr[data-version="1"] td[data-key="requests"]'
    wait_for(lambda: text_of(page, count) == str(stats["inference_count"]), "the request count")
    assert stats["inference_count"] >= 3
    assert text_of(page, f'{card} tr[data-version="1"]').startswith("v1 READY")
    assert "CPUExecutionProvider" in text_of(page, card)
    assert "image UINT8 [-1, 64, 64, 3]" in text_of(page, f"{card} .io")
    assert "probabilities FP32 [-1, 1000]" in text_of(page, f"{card} .io")
    latency = text_of(page, f'{card} tr[data-version="1"] td[data-key="latency"]')
    success = stats["inference_stats"]["success"]
    assert latency == f"{success['ns'] / success['count'] / 1e6:.2f} ms"
    assert "loads on its first request" in text_of(page, '.card[data-model="tiny-f32"]')
    shoot(page, screenshots, "models")
    viewport(page, 400)
    assert_fits(page, 400)
    viewport(page, 1280)


def test_models_page_promotes_and_rolls_back_with_the_token(
    page: Any, console_server: Any, screenshots: Path
) -> None:
    """Labels on the models page; promote and roll back ask for the token once, and what the
    page then shows is what the API says."""
    from selenium.webdriver.common.by import By

    model = console_server.repository / "tiny-f32"
    if not (model / "2").exists():  # a second version, renamed into place whole
        shutil.copytree(model / "1", model / "staged-2")
        (model / "staged-2").rename(model / "2")
    http = httpx.Client(base_url=console_server.http_url, timeout=30)

    def labels() -> dict:
        return dict(http.get("/v1/models/tiny-f32/labels").json()["labels"])

    assert labels() == {}
    open_page(page, console_server, "models/tiny-f32")
    page.execute_script("sessionStorage.clear()")
    card = '.card[data-model="tiny-f32"]'
    row = card + ' tr[data-version="{}"]'
    wait_for(lambda: rows(page, row.format(2)), "version 2")
    wait_for(lambda: rows(page, "#report"), "the report box")
    assert text_of(page, "#report") == (
        "v2 (served by default) has no test report (it was not made by a fine-tune job)"
    )
    note = f"{card} .label-note"

    def click(css: str) -> None:
        button = wait_for(lambda: rows(page, css) and rows(page, css)[0], css)
        wait_for(lambda: button.is_enabled(), f"{css} enabled")
        button.click()

    click(row.format(1) + " button.promote")
    dialog = page.find_element(By.ID, "token-dialog")
    wait_for(lambda: dialog.is_displayed(), "the token prompt")
    page.find_element(By.ID, "token-input").send_keys(TOKEN)
    page.find_element(By.ID, "token-ok").click()
    wait_for(lambda: "stable is version 1" in text_of(page, note), "the promote answer")
    assert labels() == {"stable": 1}
    shown = f'{row.format(1)} td[data-key="labels"]'
    wait_for(lambda: text_of(page, shown) == "stable", "the stable tag on v1")

    click(row.format(2) + " button.promote")  # the token is kept: no second prompt
    wait_for(lambda: "stable is version 2" in text_of(page, note), "the second promote")
    assert not dialog.is_displayed()
    assert labels() == {"stable": 2}

    field = page.find_element(By.CSS_SELECTOR, f"{card} .label-input")
    field.clear()
    field.send_keys("candidate")
    click(row.format(1) + " button.promote")
    wait_for(lambda: "candidate is version 1" in text_of(page, note), "the candidate")
    assert labels() == {"candidate": 1, "stable": 2}
    wait_for(lambda: text_of(page, shown) == "candidate", "the candidate tag on v1")
    assert text_of(page, f'{row.format(2)} td[data-key="labels"]') == "stable"
    shoot(page, screenshots, "models-labels")

    field = page.find_element(By.CSS_SELECTOR, f"{card} .label-input")
    field.clear()
    field.send_keys("stable")
    click(f"{card} button.rollback")
    wait_for(lambda: "stable is version 1" in text_of(page, note), "the rollback")
    state = http.get("/v1/models/tiny-f32/labels").json()
    assert state["labels"] == {"candidate": 1, "stable": 1} and state["default_version"] == 1
    assert [(c["action"], c["label"], c["version"]) for c in state["history"]] == [
        ("promote", "stable", 1), ("promote", "stable", 2), ("promote", "candidate", 1),
        ("rollback", "stable", 1),
    ]  # fmt: skip
    wait_for(lambda: tags(page, shown) == ["candidate", "stable"], "both tags on v1")
    # a refused action says why, on the page
    click(f"{card} button.rollback")
    wait_for(lambda: "no earlier version" in text_of(page, note), "the refusal")
    # the browser logs the refused request (400) as a network error: that one, and no other
    refused = [e["message"] for e in console_errors(page)]
    assert len(refused) == 1 and "/v1/models/tiny-f32/rollback" in refused[0]
    assert "400 (Bad Request)" in refused[0]
    http.close()


def test_classify_page(page: Any, console_server: Any, screenshots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    with httpx.Client(base_url=console_server.http_url, timeout=30) as http:
        expected = http.post("/v1/models/mobilenetv2/classify", content=PHOTO.read_bytes(),
                             params={"top_k": 5}).json()["results"][0]  # fmt: skip
    open_page(page, console_server, "classify")
    wait_for(lambda: rows(page, "#classify-model option"), "the model list")
    Select(page.find_element(By.ID, "classify-model")).select_by_value("mobilenetv2")
    page.find_element(By.ID, "classify-file").send_keys(str(PHOTO))
    top = wait_for(lambda: rows(page, "table.top5 tbody tr"), "the top five")
    assert len(top) == 5
    labels = [r.find_element(By.CSS_SELECTOR, "td.label").text for r in top]
    assert labels == [p["label"] for p in expected]
    assert (
        top[0].find_element(By.CSS_SELECTOR, "td.score").text
        == f"{100 * expected[0]['score']:.2f} %"
    )
    shoot(page, screenshots, "classify")

    # dropped rather than chosen: a DragEvent carrying the file, as a drag from a desktop does
    coffee = PHOTO.with_name("coffee.jpg").read_bytes()
    with httpx.Client(base_url=console_server.http_url, timeout=30) as http:
        wanted = http.post("/v1/models/mobilenetv2/classify", content=coffee).json()["results"][0]
    assert [p["label"] for p in wanted] != labels  # so the table must change
    page.execute_script(
        """const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
           const data = new DataTransfer();
           data.items.add(new File([bytes], "coffee.jpg", { type: "image/jpeg" }));
           document.getElementById("classify-drop").dispatchEvent(
             new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));""",
        base64.b64encode(coffee).decode(),
    )
    wait_for(
        lambda: [r.text for r in rows(page, "table.top5 td.label")] == [p["label"] for p in wanted],
        "the dropped image's top five",
    )
    viewport(page, 400)
    assert_fits(page, 400)
    shoot(page, screenshots, "classify-narrow")
    viewport(page, 1280)


@pytest.fixture(scope="module")
def dataset_id(console_server: Any, digits: tuple[Path, Any]) -> str:
    folder, _ = digits
    with httpx.Client(base_url=console_server.http_url, timeout=60, headers=AUTH) as http:
        answer = http.post("/v1/datasets", content=zip_folder(folder))
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def create_job(server: Any, dataset_id: str, output: str, **params: Any) -> dict:
    body = {"base_model": "VGG16", "dataset_id": dataset_id, "output_model": output,
            "params": {**FINETUNE_PARAMS, **params}}  # fmt: skip
    with httpx.Client(base_url=server.http_url, timeout=60, headers=AUTH) as http:
        answer = http.post("/v1/jobs/finetune", json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


def get_job(server: Any, job_id: str) -> dict:
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        return dict(http.get(f"/v1/jobs/{job_id}").json())


def test_finetune_job_page_follows_the_job_live(
    page: Any, console_server: Any, dataset_id: str, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By

    job = create_job(console_server, dataset_id, "digits-console")
    open_page(page, console_server, f"jobs/{job['id']}")
    main = page.find_element(By.ID, "main")
    first = wait_for(lambda: main.get_attribute("data-first-state"), "the job")
    assert first in ("QUEUED", "RUNNING")  # the page was there before the job ended
    page.execute_script("window.notReloaded = true")
    seen: list[int] = []  # epochs shown, as the page showed them
    bars: list[int] = []
    note = page.find_element(By.ID, "job-epochs")

    def ended() -> bool:
        seen.append(int(note.get_attribute("data-epochs") or 0))
        running = text_of(page, 'dd[data-key="state"]') == "RUNNING"
        if running and seen[-1] >= 2 and not (screenshots / "job-running.png").exists():
            shoot(page, screenshots, "job-running")  # mid-run: progress, ETA, curves so far
        for bar in rows(page, "#job-progress .progress"):
            bars.append(int(bar.get_attribute("aria-valuenow")))
        return text_of(page, 'dd[data-key="state"]') in ("SUCCEEDED", "FAILED", "CANCELLED")

    wait_for(ended, "the job to end", JOB_WAIT_S)
    done = get_job(console_server, job["id"])
    assert done["state"] == "SUCCEEDED", done["error"]
    assert page.execute_script("return window.notReloaded") is True
    with (
        httpx.Client(base_url=console_server.http_url, timeout=60) as http,
        http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream,
    ):
        epochs = [line for line in stream.iter_lines() if line == "event: epoch"]
    final = wait_for(
        lambda: int(note.get_attribute("data-epochs") or 0) == len(epochs) and len(epochs),
        "every epoch",
    )
    assert final and len(epochs) >= 2
    assert seen[0] < len(epochs) and max(seen) == len(epochs)  # the curve grew while shown
    assert bars and bars[-1] == 100 and min(bars) < 100  # the bar moved on the page
    # the charts: uPlot drew a legend row per series and a canvas
    assert rows(page, "#chart-loss canvas") and rows(page, "#chart-accuracy canvas")
    assert "train, phase 2" in text_of(page, "#chart-loss")

    result = done["result"]
    matrix = wait_for(lambda: rows(page, "#confusion tbody tr"), "the confusion matrix")
    shown = [[int(td.text) for td in r.find_elements(By.TAG_NAME, "td")] for r in matrix]
    assert shown == result["confusion_matrix"]
    heads = [th.text for th in page.find_elements(By.CSS_SELECTOR, "#confusion thead th")][1:]
    assert heads == result["class_names"]
    made = page.find_element(By.CSS_SELECTOR, "#job-model a")
    assert made.text == f"{result['model']} v{result['version']}"
    assert made.get_attribute("href").endswith(f"#/models/{result['model']}")
    assert "phase 2: fine-tuning" in text_of(page, "#job-log")
    assert not page.find_element(By.ID, "cancel-job").is_enabled()
    evaluation = result["evaluation"]
    assert evaluation and evaluation["images"] > 0 and len(evaluation["classes"]) == 4
    assert_report(page, evaluation)
    shoot(page, screenshots, "job")
    page.find_element(By.ID, "report").location_once_scrolled_into_view  # noqa: B018
    time.sleep(0.3)
    assert page.save_screenshot(str(screenshots / "job-report.png"))

    viewport(page, 400)
    time.sleep(0.5)  # the charts resize on the window's resize event
    assert_fits(page, 400)
    shoot(page, screenshots, "job-narrow")
    viewport(page, 1280)

    made.click()  # the version it made, on the models page, with its labels and report
    wait_for(
        lambda: rows(page, f'.card[data-model="{result["model"]}"] tr[data-version]'), "the model"
    )
    wait_for(lambda: rows(page, "#report-classes"), "the served version's report")
    with httpx.Client(base_url=console_server.http_url, timeout=30) as http:
        served = http.get(f"/v1/models/{result['model']}").json()
    assert served["evaluated_version"] == result["version"]
    assert served["evaluation"] == evaluation  # the job's report is the version's
    assert_report(page, served["evaluation"])
    version_row = f'.card[data-model="{result["model"]}"] tr[data-version="{result["version"]}"]'
    labels = tags(page, f'{version_row} td[data-key="labels"]')
    assert labels == sorted(result["labels"]) == sorted(served["labels"])
    assert text_of(page, "#report h2") == "Test report of v1 (served by default)"
    shoot(page, screenshots, "model-report")
    open_page(page, console_server, "jobs")
    row = f'#jobs-table tr[data-job="{job["id"]}"]'
    wait_for(lambda: rows(page, row), "the job in the list")
    assert text_of(page, f'{row} td[data-key="state"]') == "SUCCEEDED"
    assert text_of(page, f'{row} td[data-key="progress"]') == "100 %"
    shoot(page, screenshots, "jobs")


def test_jobs_list_follows_progress_and_cancel_asks_for_the_token_once(
    page: Any, console_server: Any, dataset_id: str, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By

    # long enough to be cancelled while it runs: 1000 head epochs, no early stop
    job = create_job(console_server, dataset_id, "digits-cancelled", epochs=1000, patience=1000)
    open_page(page, console_server, "jobs")
    page.execute_script("window.notReloaded = true")
    row = f'#jobs-table tr[data-job="{job["id"]}"]'
    shown: list[int] = []  # the row's progress, as the page showed it

    def progressed() -> bool:
        bars = rows(page, f"{row} .progress")
        if bars:
            shown.append(int(bars[0].get_attribute("aria-valuenow")))
        return len({p for p in shown if p > 0}) >= 2

    wait_for(progressed, "the list's progress bar to move", JOB_WAIT_S)
    assert text_of(page, f'{row} td[data-key="state"]') == "RUNNING"
    assert text_of(page, f'{row} td[data-key="eta"]').endswith(" s")  # e.g. "1 min 40 s"
    assert page.execute_script("return window.notReloaded") is True
    shoot(page, screenshots, "jobs-running")

    page.find_element(By.CSS_SELECTOR, f"{row} a").click()
    page.execute_script("sessionStorage.clear()")
    button = page.find_element(By.ID, "cancel-job")
    wait_for(lambda: button.is_enabled(), "the cancel button")
    button.click()
    dialog = page.find_element(By.ID, "token-dialog")
    wait_for(lambda: dialog.is_displayed(), "the token prompt")
    page.find_element(By.ID, "token-input").send_keys(TOKEN)
    page.find_element(By.ID, "token-ok").click()
    wait_for(lambda: "asked" in text_of(page, "#cancel-note"), "the cancel answer")
    assert page.execute_script("return sessionStorage.getItem('zoo-token')") == TOKEN
    wait_for(lambda: text_of(page, 'dd[data-key="state"]') == "CANCELLED", "CANCELLED", JOB_WAIT_S)
    assert get_job(console_server, job["id"])["state"] == "CANCELLED"
    assert "state: CANCELLED" in text_of(page, "#job-log")


def test_strings_from_data_are_shown_as_text(page: Any, console_server: Any) -> None:
    """Labels that look like markup are shown as those characters, never parsed as HTML."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    source = console_server.repository / "mobilenetv2"
    target = console_server.repository / "hostile-labels"
    shutil.copytree(source, target)
    manifest = target / "1" / "zoo.json"
    data = json.loads(manifest.read_text())
    data["labels"] = [f'<img src=x onerror="window.pwned=1"><b>{i}</b>' for i in range(1000)]
    manifest.write_text(json.dumps(data))

    open_page(page, console_server, "classify")
    wait_for(lambda: rows(page, '#classify-model option[value="hostile-labels"]'), "the model")
    Select(page.find_element(By.ID, "classify-model")).select_by_value("hostile-labels")
    page.find_element(By.ID, "classify-file").send_keys(str(PHOTO))
    top = wait_for(lambda: rows(page, "table.top5 tbody td.label"), "the top five")
    assert top[0].text.startswith('<img src=x onerror="window.pwned=1"><b>')
    assert page.find_elements(By.CSS_SELECTOR, "#classify-result img, #classify-result b") == []
    assert page.execute_script("return window.pwned") is None


def test_http_requests_are_counted_by_route(console_server: Any) -> None:
    """Prometheus counters for HTTP beside the gRPC ones: the route template, not the path."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with httpx.Client(base_url=console_server.http_url, timeout=30) as http:
        assert http.get("/v1/models/mobilenetv2").status_code == 200
        assert http.get("/v1/models/no-such-model").status_code == 404
        assert http.get("/no/such/page").status_code == 404
    url = f"http://127.0.0.1:{console_server.metrics_port}/metrics"
    wanted = [("GET", "/v1/models/{name}", "200"), ("GET", "/v1/models/{name}", "404"),
              ("GET", "unmatched", "404")]  # fmt: skip

    def scrape() -> tuple[dict, dict] | None:
        # a request is counted once its handler has returned, just after the client has
        # its answer: the scrape may come first
        text = urllib.request.urlopen(url, timeout=30).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        counts = {
            (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
            for s in families["zoo_http_requests"].samples
            if s.name == "zoo_http_requests_total"
        }
        return (families, counts) if all(key in counts for key in wanted) else None

    families, counts = wait_for(scrape, "the three requests in the metrics")
    assert counts[("GET", "/v1/models/{name}", "200")] >= 1
    assert counts[("GET", "/v1/models/{name}", "404")] >= 1
    assert counts[("GET", "unmatched", "404")] >= 1
    assert not [key for key in counts if "mobilenetv2" in key[1]]  # names are not labels
    durations = families["zoo_http_request_duration_seconds"].samples
    assert any(s.labels.get("route") == "/v1/models/{name}" for s in durations)


def test_cancel_on_a_server_without_a_token_asks_nothing(
    browser: Any, served_repository: Path, tmp_path: Path, digits: tuple[Path, Any]
) -> None:
    from selenium.webdriver.common.by import By
    from serving import start_server

    running = start_server(
        served_repository,
        tmp_path,
        env={"ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_WORKERS": "0"},
    )  # no worker: the job stays queued until cancelled
    try:
        with httpx.Client(base_url=running.http_url, timeout=60) as http:
            assert http.get("/v1/console").json()["token_required"] is False
            dataset = http.post("/v1/datasets", content=zip_folder(digits[0])).json()
        job = create_job(running, dataset["id"], "digits-queued")
        viewport(browser, 1280)
        browser.get_log("browser")
        open_page(browser, running, f"jobs/{job['id']}")
        browser.execute_script("sessionStorage.clear()")
        button = browser.find_element(By.ID, "cancel-job")
        wait_for(lambda: button.is_enabled(), "the cancel button")
        button.click()
        wait_for(lambda: text_of(browser, 'dd[data-key="state"]') == "CANCELLED", "CANCELLED")
        assert not browser.find_element(By.ID, "token-dialog").is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('zoo-token')") is None
        assert console_errors(browser) == []
    finally:
        assert running.stop() == 0, running.log.read_text()[-3000:]
