"""The headers of the HTML pages people meet: the waiting room (queue server), the shop page
(gate) and the operator dashboard (shop). One policy for the three, written once here.

What each header is for:

- ``Content-Security-Policy``: the browser runs only the scripts and applies only the styles
  that are files of this origin. No inline ``<script>``, no ``style=`` or ``<style>``, no
  ``eval``: a name an operator typed, or anything else that slips into the HTML, stays text
  even where escaping failed. Each page asks only its own origin (``connect-src 'self'``):
  the waiting room polls the queue API beside it, the shop page calls the order API through
  the gate that served it, the dashboard the admin API of the shop that served it. The
  waiting room's move to the shop page on the gate is a navigation, which no directive that
  browsers implement governs, so no other origin is named. No page submits a form itself
  (every form is the script's), so ``form-action 'none'``: a form sent before the script runs
  (Enter in the card field of a slow page) goes nowhere, instead of into a URL. Nobody may
  frame the pages (``frame-ancestors 'none'``): a waiting room or a Buy button inside another
  site is a clickjacking target. ``data:`` images are the pages' empty favicon.
- ``X-Frame-Options: DENY``: the same refusal for browsers that predate frame-ancestors.
- ``Referrer-Policy: no-referrer``: the shop page is reached with ``?token=`` once; no URL of
  these pages, with or without it, is ever sent on to another site.
- ``X-Content-Type-Options: nosniff``: an answer is taken for what its Content-Type says.
- ``Cache-Control: no-store``: no cache, shared or the browser's own, keeps a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

CSP_DIRECTIVES: Mapping[str, str] = MappingProxyType(
    {
        # Everything not named below is refused: frames, fonts, workers, media, manifests.
        "default-src": "'none'",
        "script-src": "'self'",
        # Styles set through the CSSOM (el.style.width, uPlot's layout) are not governed by
        # style-src; only style attributes and <style> elements are, and no page has one.
        "style-src": "'self'",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "form-action": "'none'",
        "base-uri": "'none'",
        "object-src": "'none'",
        "frame-ancestors": "'none'",
    }
)
CONTENT_SECURITY_POLICY = "; ".join(f"{name} {value}" for name, value in CSP_DIRECTIVES.items())

PAGE_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        # Each page for its own reason: the waiting room carries the sale's state of this
        # moment, the shop page a visitor's access, and a stale dashboard outlives an upgrade.
        "Cache-Control": "no-store",
    }
)
