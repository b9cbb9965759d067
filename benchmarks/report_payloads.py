"""report.html stays inert in a real browser, whatever the model, the user or a hub put in it.

Builds a store whose responses, prompts, model, dataset and condition names are HTML/JS payloads
(each one, if it ran, marks the page), writes report.html through ``safestress results --out``, loads
it in headless Chromium and reads the DOM back after scripts had their chance to run. A control
page with the same payloads inserted unescaped must be marked, so that a clean result means the
payloads were inert, not that the check is blind.

    apt-get install chromium      # Debian's package
    python benchmarks/report_payloads.py [--browser chromium]

Prints one line per page and exits non-zero if the report was marked or the control was not.
Figures: docs/store.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MARK = "data-pwned"
# Each payload sets an attribute on <html> if it executes; none needs a click.
_JS = f"document.documentElement.setAttribute('{MARK}','1')"
PAYLOADS = [
    f"<script>{_JS}</script>",
    f'<img src=x onerror="{_JS}">',
    f'<svg onload="{_JS}"></svg>',
    f"<svg><script>{_JS}</script></svg>",
    f'<body onload="{_JS}">',
    f'<iframe srcdoc="<script>parent.{_JS}</script>"></iframe>',
    f'<details open ontoggle="{_JS}">',
    f'<video><source onerror="{_JS}"></video>',
    f'<audio src=x onerror="{_JS}">',
    f'<input autofocus onfocus="{_JS}">',
    f'<marquee onstart="{_JS}">x</marquee>',
    f'<object data="javascript:{_JS}"></object>',
    f'<embed src="javascript:{_JS}">',
    f'<math><mtext><table><mglyph><style><img src=x onerror="{_JS}">',
    f"</pre><script>{_JS}</script><pre>",
    f"</td></tr></table><script>{_JS}</script>",
    f"</textarea><script>{_JS}</script>",
    f"</title><script>{_JS}</script>",
    f"</style><script>{_JS}</script>",
    f"--><script>{_JS}</script><!--",
    f'"><script>{_JS}</script>',
    f'\'><img src=x onerror="{_JS}">',
    f'<meta http-equiv="refresh" content="0;url=javascript:{_JS}">',
    f'<base href="javascript:{_JS}//">',
]


def build_store(path: Path) -> None:
    """A store of one clean and one perturbed condition whose every text field is a payload."""
    from safestress.judges.base import Verdict
    from safestress.store import GenerationRow, Store, content_hash, row_key

    with Store(path) as store:
        for i, payload in enumerate(PAYLOADS):
            model, dataset = f"model{payload}", f"data{payload}"
            specs = [
                {"model_name": model, "label": "clean", "perturbation": {"name": "identity"}, "strength": 0.0},
                {
                    "model_name": model,
                    "label": f"noise{payload}",
                    "perturbation": {"name": "gaussian"},
                    "strength": 0.5,
                    "site_pattern": payload,
                },
            ]
            for n, spec in enumerate(specs):
                h = content_hash(spec)
                rows, verdicts = [], []
                for item in range(4):
                    key = row_key(h, dataset, str(item), f"prompt {payload}", 0)
                    response = f"{'Sure' if (item + n) % 2 else 'I cannot'} {payload}"
                    rows.append(
                        GenerationRow(key, h, model, dataset, str(item), 0, f"prompt {payload}", response, 8, True)
                    )
                    refused = response.startswith("I cannot")
                    label = "refusal" if refused else "compliance"
                    verdicts += [
                        (key, "refusal@9", Verdict(float(not refused), label, not refused)),
                        (key, "other@1", Verdict(float(i % 2), label, bool(i % 2))),
                    ]
                store.put_batch(rows, verdicts, [spec])


def dom_after_load(browser: str, page: Path) -> str:
    """The DOM as Chromium has it after load, with time for handlers, in a 1280 px window."""
    dom = subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    if not dom.strip():
        raise SystemExit(f"{browser} returned no DOM for {page}")
    return dom


def marked(browser: str, page: Path) -> bool:
    """Whether any payload ran."""
    return f'{MARK}="1"' in dom_after_load(browser, page)


def page_width(browser: str, page: Path) -> tuple[int, int]:
    """The page's scroll width and the window's width (a copy with a probe script appended)."""
    probe = page.with_name("probe.html")
    root = "document.documentElement"
    script = f"<script>{root}.setAttribute('data-width', {root}.scrollWidth + '/' + window.innerWidth)</script>"
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    match = re.search(r'data-width="(\d+)/(\d+)"', dom_after_load(browser, probe))
    return (int(match.group(1)), int(match.group(2))) if match else (-1, -1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser") or "")
    args = parser.parse_args()
    if not args.browser:
        raise SystemExit("no Chromium found: apt-get install chromium, or pass --browser")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_store(folder / "s.db")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "safestress.cli",
                "results",
                "--store",
                str(folder / "s.db"),
                "--out",
                str(folder / "out"),
                "--examples",
                "5",
            ],
            check=True,
            capture_output=True,
        )
        report = folder / "out" / "report.html"
        control = folder / "control.html"
        control.write_text("<html><body>" + "".join(f"<div>{p}</div>" for p in PAYLOADS) + "</body></html>")
        report_marked, control_marked = marked(args.browser, report), marked(args.browser, control)
        text = report.read_text()
        print(f"payloads: {len(PAYLOADS)} in responses, prompts, model, dataset and condition names")
        print(f"report.html ({len(text)} bytes): {'EXECUTED a payload' if report_marked else 'inert'}")
        print(f"control page (unescaped): {'executed a payload (the check sees it)' if control_marked else 'inert'}")
        width, window = page_width(args.browser, report)
        print(f"report.html in a {window} px window: page {width} px wide (wide tables scroll in their own box)")
        unboxed = report.with_name("unboxed.html")
        unboxed.write_text(text.replace(".wide{max-width:100%;overflow-x:auto}", ""))
        control_width, _ = page_width(args.browser, unboxed)
        print(f"control page (the same without the scroll box): {control_width} px wide")
        md = (folder / "out" / "summary.md").read_text()
        raw = [p for p in PAYLOADS if p in md]
        print(f"summary.md: {len(raw)} payloads left raw")
        return 0 if (not report_marked and control_marked and not raw and 0 < width <= window < control_width) else 1


if __name__ == "__main__":
    sys.exit(main())
