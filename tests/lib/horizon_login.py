"""Log in to Horizon with a real browser: headless Chromium driven by Selenium (Debian's
chromium and chromium-driver, ``tools/setup-host --e2e``).

Run as a script inside the test's network namespace (``ip netns exec NS python
horizon_login.py URL SCREENSHOT``), the admin password on stdin (never in argv); prints
one JSON line: the login page's title, where the browser landed after logging in, and
whether the page shows the logged-in user.  :func:`login` runs it from a test.
"""

import json
import subprocess
import sys
from pathlib import Path


def main(url, screenshot, password):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-proxy-server"):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(180)
        driver.get(url)
        wait = WebDriverWait(driver, 180)
        wait.until(ec.presence_of_element_located((By.ID, "id_username")))
        title = driver.title
        driver.find_element(By.ID, "id_username").send_keys("admin")
        driver.find_element(By.ID, "id_password").send_keys(password)
        driver.find_element(By.ID, "loginBtn").click()
        wait.until(lambda d: "/auth/login" not in d.current_url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".navbar")))
        driver.save_screenshot(screenshot)
        return {"title": title, "landed": driver.current_url,
                "logged_in": "admin" in driver.page_source and "Sign Out" in driver.page_source}
    finally:
        driver.quit()


def login(netns, url, password, screenshot, timeout=600):
    """Run this script in ``netns``; its JSON result (raises with its output if it failed)."""
    res = subprocess.run(["ip", "netns", "exec", netns, sys.executable, __file__, url,
                          str(screenshot)], input=password, capture_output=True, text=True,
                         timeout=timeout)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        raise AssertionError("Horizon login in a browser failed:\n%s%s"
                             % (res.stdout[-2000:], res.stderr[-3000:]))
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.stdin.read().strip())))
    Path(sys.argv[2]).chmod(0o644)
