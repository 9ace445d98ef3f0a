"""Personal data in texts: e-mail addresses, phone numbers, meter and account numbers (and any
pattern the operator adds) replaced by ``[EMAIL]``-style tags. Logs always see masked text; the
model does too when ``mask_inputs`` is on."""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    # meter/account numbers first: they are digit runs a phone pattern would also take
    "meter": r"(?i)\b(?:meter|nmi|mpan|mprn|esi\s*id)\s*(?:no\.?|number|#|:)?\s*[A-Z0-9-]{6,}\b",
    "account": r"(?i)\b(?:account|acct|customer)\s*(?:no\.?|number|#|:)?\s*[A-Z0-9-]{5,}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){3,7}\b",
    "card": r"\b(?:\d[ -]?){13,19}\b",
    # 8-15 digits in groups, optionally with a country code and an area code in brackets
    "phone": r"(?<![\w+(])[+(]?\d(?:[\s.()-]{0,2}\d){7,14}(?!\w)",
}


class Masker:
    """Applies the patterns in order; extra patterns run before the defaults (an operator's
    meter format is more specific than the generic ones)."""

    def __init__(self, extra: Mapping[str, str] | None = None) -> None:
        patterns = {**dict(extra or {}), **DEFAULT_PATTERNS}
        self.patterns = [(name.upper(), re.compile(rx)) for name, rx in patterns.items()]

    def scan(self, text: str) -> tuple[str, list[str]]:
        """(the masked text, the kinds of personal data it held: for logs, never the values)."""
        kinds = []
        for tag, rx in self.patterns:
            text, n = rx.subn(f"[{tag}]", text)
            if n:
                kinds.append(tag.lower())
        return text, kinds
