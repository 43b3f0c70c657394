"""The studio driven as a person would, in headless Chromium: write a rhymed 5x4 poem, then interpolate; write
with a theme and a keyword, and restyle a poem; the page in 繁體, 简体 and English, with its output-script switch;
the latent map and the style controls of a model without a dataset or attribute models.
Needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; CI installs them);
skipped, saying so, where they are absent, unless TEXTVAE_BROWSER_TEST=required (CI sets it once apt has
installed them), where their absence fails."""

import os
import re
import shutil

import httpx
import opencc
import pytest
from studio import POEMS, Server, make_model_and_data

from textvae.attributes import THEMES
from textvae.poetry import form_of, poem_rhymes, split_lines

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("TEXTVAE_BROWSER_TEST") == "required"
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (CHROMIUM and DRIVER) and not REQUIRED,
                                 reason="needs Chromium and its driver: apt-get install chromium chromium-driver")]


def test_chromium_and_its_driver_are_found():
    assert CHROMIUM and DRIVER, "TEXTVAE_BROWSER_TEST=required, but chromium or chromedriver is not on PATH"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(*make_model_and_data(tmp_path_factory.mktemp("browser")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """The studio started without a dataset, over a model without attribute models: no latent map, no style."""
    server = Server(make_model_and_data(tmp_path_factory.mktemp("bare"), attributes=False)[0], None)
    yield server
    server.stop()


def wait_for(browser, css: str, count: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, css)) >= count)
    return browser.find_elements(By.CSS_SELECTOR, css)


def type_into(browser, **values: str) -> None:
    """Replace the text of each field (by id) with its value."""
    from selenium.webdriver.common.by import By
    for field, value in values.items():
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)


def test_write_a_rhymed_5x4_poem_then_interpolate(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    browser.get(server.url)
    wait_for(browser, "#model option", 1)
    prior = Select(browser.find_element(By.ID, "prior"))
    assert [o.get_attribute("value") for o in prior.options] == ["auto", "standard"]  # no learned prior fitted
    assert prior.first_selected_option.text == "自動（標準正態 N(0, I)）"
    prior.select_by_value("standard")
    Select(browser.find_element(By.ID, "form")).select_by_value("5x4")
    browser.find_element(By.ID, "rhyme").click()
    count = browser.find_element(By.ID, "count")
    count.clear()
    count.send_keys("3")
    browser.find_element(By.ID, "write-button").click()
    poems = wait_for(browser, "#poems .poem", 3)
    for poem in poems:
        lines = [line.text for line in poem.find_elements(By.CLASS_NAME, "line")]
        assert len(lines) == 4 and all(len(line) == 6 and line[-1] in "，。" for line in lines), lines
        assert form_of(split_lines("".join(lines))) == "5x4" and poem_rhymes(split_lines("".join(lines)))
    assert not browser.find_element(By.ID, "error").is_displayed()

    browser.find_element(By.CSS_SELECTOR, '.tab[data-tab="interpolate"]').click()
    type_into(browser, **{"poem-a": POEMS[0], "poem-b": POEMS[1]})
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("4")
    kinds = [option.get_attribute("value") for option in
             browser.find_element(By.ID, "path-kind").find_elements(By.TAG_NAME, "option")]
    assert kinds == ["crossings", "linear", "slerp"]  # the model has no flow or diffusion prior to walk
    Select(browser.find_element(By.ID, "path-kind")).select_by_value("slerp")
    browser.find_element(By.ID, "interpolate-button").click()
    path = wait_for(browser, "#path .step", 4)
    assert len(path) == 4
    assert all(form_of(split_lines("".join(line.text for line in step.find_elements(By.CLASS_NAME, "line")))) == "5x4"
               for step in path)


def poem_texts(browser, css: str) -> list[str]:
    from selenium.webdriver.common.by import By
    return ["".join(line.text for line in poem.find_elements(By.CLASS_NAME, "line"))
            for poem in browser.find_elements(By.CSS_SELECTOR, css)]


def test_write_with_a_theme_and_a_keyword(browser, server):
    from selenium.webdriver.common.by import By
    fresh_page(browser, server.url)
    assert browser.find_element(By.ID, "style").is_displayed()  # the model has attribute models
    theme = browser.find_element(By.ID, "theme")
    assert [o.get_attribute("value") for o in theme.find_elements(By.TAG_NAME, "option")] == ["", *THEMES]
    assert texts(browser, "#theme option")[:3] == ["不限", "送別", "秋"]
    choose(browser, "theme", "moon")
    choose(browser, "form", "5x4")
    browser.find_element(By.ID, "keywords").send_keys("江")
    type_into(browser, count="3", seed="5")
    browser.find_element(By.ID, "write-button").click()
    wait_for(browser, "#poems .poem", 3)
    shown = poem_texts(browser, "#poems .poem")
    body = dict(form="5x4", n=3, seed=5, theme="moon", keywords="江", strength=5)
    assert shown == httpx.post(f"{server.url}/api/sample", json=body).json()["poems"]
    assert all("江" in poem and form_of(split_lines(poem)) == "5x4" for poem in shown), shown


def test_restyle_a_poem_toward_a_poet_and_an_era(browser, server):
    from selenium.webdriver.common.by import By
    fresh_page(browser, server.url)
    browser.find_element(By.CSS_SELECTOR, '.tab[data-tab="restyle"]').click()
    browser.find_element(By.ID, "restyle-like").send_keys("杜甫")
    choose(browser, "restyle-era", "tang")
    browser.find_element(By.ID, "restyle-button").click()
    wait_for(browser, "#restyled .poem", 1)
    [restyled] = poem_texts(browser, "#restyled .poem")
    body = dict(text=POEMS[0], like="杜甫", era="tang", seed=0)
    assert restyled == httpx.post(f"{server.url}/api/restyle", json=body).json()["restyled"]
    assert poem_texts(browser, "#restyle-input .poem") == [POEMS[0]] and form_of(split_lines(restyled)) == "5x4"
    assert re.fullmatch(r"原位保留：\d+ %", browser.find_element(By.ID, "kept-line").text)
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_a_model_without_attribute_models_hides_the_style_but_keeps_keywords(browser, bare_server):
    from selenium.webdriver.common.by import By
    fresh_page(browser, bare_server.url)
    assert not browser.find_element(By.ID, "style").is_displayed()
    assert browser.find_element(By.ID, "keywords").is_displayed()
    browser.find_element(By.CSS_SELECTOR, '.tab[data-tab="restyle"]').click()
    assert "textvae fit-attributes" in browser.find_element(By.ID, "restyle-note").text
    assert not browser.find_element(By.ID, "restyle-button").is_enabled()


def test_a_bad_input_shows_a_message_on_the_page(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(server.url)
    wait_for(browser, "#model option", 1)
    acrostic = browser.find_element(By.ID, "acrostic")
    acrostic.send_keys("春夏秋")  # three characters: neither 4 nor 8 lines
    browser.find_element(By.ID, "write-button").click()
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 60).until(lambda b: error.is_displayed())
    assert "acrostic" in error.text and "Traceback" not in error.text


def texts(browser, css: str) -> list[str]:
    from selenium.webdriver.common.by import By
    return [el.text for el in browser.find_elements(By.CSS_SELECTOR, css)]


def fresh_page(browser, url: str) -> None:
    """The page as a first visit sees it: no remembered language or script."""
    browser.get(url)
    browser.execute_script("localStorage.clear()")
    browser.get(url)
    wait_for(browser, "#model option", 1)


def choose(browser, select_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element(By.ID, select_id)).select_by_value(value)


def test_the_page_speaks_traditional_then_simplified_chinese_then_english(browser, server):
    fresh_page(browser, server.url)
    assert texts(browser, ".tab") == ["作詩", "重構・變化", "風格改寫", "插值", "隱空間圖", "模型卡"]
    assert "體裁" in texts(browser, "#write-form label")[0] and browser.find_element("id", "seed").get_attribute(
        "placeholder") == "隨機"
    choose(browser, "language", "zh-Hans")
    assert texts(browser, ".tab") == ["作诗", "重构・变化", "风格改写", "插值", "隐空间图", "模型卡"]
    assert browser.find_element("id", "script").get_attribute("value") == "simplified"  # follows the language
    choose(browser, "language", "en")
    assert texts(browser, ".tab") == ["Write", "Reconstruct / Vary", "Restyle", "Interpolate", "Latent map",
                                      "Model card"]
    browser.get(server.url)  # the choice is remembered
    wait_for(browser, "#model option", 1)
    assert texts(browser, ".tab")[0] == "Write"


def test_the_script_switch_writes_the_same_poems_in_simplified_characters(browser, server):
    from selenium.webdriver.common.by import By
    fresh_page(browser, server.url)
    choose(browser, "script", "simplified")
    choose(browser, "form", "5x4")
    type_into(browser, count="4", seed="11")
    browser.find_element(By.ID, "write-button").click()
    wait_for(browser, "#poems .poem", 4)
    shown = poem_texts(browser, "#poems .poem")
    native = httpx.post(f"{server.url}/api/sample", json=dict(form="5x4", n=4, seed=11)).json()["poems"]
    to_simplified = opencc.OpenCC("t2s").convert
    assert shown == [to_simplified(p) for p in native] and shown != native


def test_an_error_clears_when_the_tab_changes(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(server.url)
    wait_for(browser, "#model option", 1)
    browser.find_element(By.ID, "acrostic").send_keys("春夏秋")
    browser.find_element(By.ID, "write-button").click()
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 60).until(lambda b: error.is_displayed())
    browser.find_element(By.CSS_SELECTOR, '.tab[data-tab="interpolate"]').click()
    assert not error.is_displayed()


def test_without_a_dataset_the_latent_map_says_once_what_it_needs(browser, bare_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    fresh_page(browser, bare_server.url)
    browser.find_element(By.CSS_SELECTOR, '.tab[data-tab="map"]').click()
    note = browser.find_element(By.ID, "map-note")
    WebDriverWait(browser, 30).until(lambda b: note.text)
    assert "textvae prepare poems" in note.text and not browser.find_element(By.ID, "error").is_displayed()
    assert not browser.find_element(By.ID, "place-button").is_enabled()


def test_the_latent_map_s_legend_names_forms_and_dynasties_in_the_page_s_language(browser, server):
    from selenium.webdriver.common.by import By
    fresh_page(browser, server.url)
    browser.find_element(By.CSS_SELECTOR, '.tab[data-tab="map"]').click()
    wait_for(browser, "#map-plot circle", 3)
    assert texts(browser, "#map-plot text") == ["五言絕句", "五言律詩", "七言絕句"]
    choose(browser, "colour", "dynasty")
    assert sorted(texts(browser, "#map-plot text")) == ["唐", "宋"]
    choose(browser, "language", "en")
    assert sorted(texts(browser, "#map-plot text")) == ["Song", "Tang"]
