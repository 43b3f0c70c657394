"""Screenshots of each tab of the poem studio, for docs/studio.md: the real server over a real model, driven in
headless Chromium (Debian's chromium and chromium-driver) with seeded requests.

    python scripts/studio_screenshots.py                                  # poem, data/poems, in 繁體中文
    python scripts/studio_screenshots.py faithful --tabs edit --text 女子乃知我，明朝變姓名。可憐逃不密，猶迫詔書行。
    python scripts/studio_screenshots.py --language en --out /tmp/shots

Writes OUT/studio-{write,edit,interpolate,map,card}.png (default docs/figures), the tabs asked for.
"""

import argparse
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from textvae import shipped
from textvae.serve.app import create_app

TABS = ("write", "edit", "interpolate", "map", "card")


def start_server(model: str, data_dir: Path) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model_dir = shipped.resolve(model)
    name = shipped.shipped_name(model_dir) or model_dir.resolve().name
    server = uvicorn.Server(uvicorn.Config(create_app({name: model_dir}, data_dir),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,860",
                 "--lang=zh-TW"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def fill(driver, field: str, value: str) -> None:
    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(value)


def wait(driver, css: str) -> None:
    WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))


def tab(driver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'.tab[data-tab="{name}"]').click()


def shoot(driver, out: Path, tabs: list[str], spread: float, text: str | None) -> list[Path]:
    Select(driver.find_element(By.ID, "form")).select_by_value("7x4")
    for box in ("rhyme", "meter"):
        driver.find_element(By.ID, box).click()
    fill(driver, "count", "6")
    fill(driver, "seed", "1")
    driver.find_element(By.ID, "write-button").click()
    wait(driver, "#poems .poem")
    shots = [("write", None), ("edit", "#reconstruction .poem"), ("interpolate", "#path .step"),
             ("map", "#map-plot .placed"), ("card", "#card-table tr")]
    # the Reconstruct / Vary tab is hidden for now: set its fields directly
    driver.execute_script("document.getElementById('spread').value = arguments[0]", str(spread))
    if text:
        driver.execute_script("document.getElementById('source').value = arguments[0]", text)
    written = []
    for name, ready in shots:
        if name != "write":
            tab(driver, name)
        if name == "map":
            wait(driver, "#map-plot circle")  # the map loads first; then the poems are placed on it
        button = {"edit": "reconstruct-button", "interpolate": "interpolate-button", "map": "place-button"}.get(name)
        if button:
            driver.find_element(By.ID, button).click()
        if ready:
            wait(driver, ready)
        time.sleep(0.5)
        if name not in tabs:
            continue
        written.append(out / f"studio-{name}.png")
        driver.save_screenshot(str(written[-1]))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=shipped.DEFAULT, help="a model folder or poem / faithful")
    parser.add_argument("--data", type=Path, default=Path("data/poems"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--language", choices=["zh-Hant", "zh-Hans", "en"], default="zh-Hant")
    parser.add_argument("--tabs", default=",".join(TABS), help="the tabs to shoot, comma-separated")
    parser.add_argument("--spread", type=float, default=0.5, help="the Reconstruct / Vary tab's spread")
    parser.add_argument("--text", help="the poem the Reconstruct / Vary tab reconstructs (default the page's)")
    args = parser.parse_args()
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        sys.exit("error: needs Chromium and its driver: apt-get install chromium chromium-driver")
    if not (args.data / "dataset").is_dir():
        sys.exit(f"error: {args.data} is not a prepared dataset: run `textvae prepare poems` (the latent map needs it)")
    args.out.mkdir(parents=True, exist_ok=True)
    tabs = args.tabs.split(",")
    if not set(tabs) <= set(TABS):
        sys.exit(f"error: --tabs takes some of {','.join(TABS)}, not {args.tabs}")
    server, url = start_server(args.model, args.data)
    driver = browser()
    try:
        driver.get(url)
        driver.execute_script("localStorage.clear(); localStorage.setItem('textvae-language', arguments[0])",
                              args.language)
        driver.get(url)
        wait(driver, "#model option")
        for path in shoot(driver, args.out, tabs, args.spread, args.text):
            print(f"wrote {path}")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
