"""The versioned rate card: what one delivered message costs, by category and recipient region.

Pure lookups over data loaded once; billing prices reservations and charges with it, ingest uses
it for its balance pre-check. Amounts are integer micros of the card's currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

RATE_CARD_DIR = Path(__file__).with_name("rate_cards")
CURRENT_VERSION = "2026-10-01"


@dataclass(frozen=True)
class RateCard:
    version: str
    currency: str
    # region -> category -> price; "*" is the default market
    prices: dict[str, dict[str, int]]

    def price(self, category: str, region: str) -> int:
        """Price of one delivered message. Unknown categories are data, not errors: Meta adds
        new ones (e.g. marketing_lite), and they are priced as marketing, the dearest."""
        market = self.prices.get(region) or self.prices["*"]
        category = _CATEGORY_ALIASES.get(category, category)
        if category in market:
            return market[category]
        if category == "authentication_international":
            return market["authentication"]
        if category == "service":  # charged at the utility rate since 2026-10-01
            return market["utility"]
        return market["marketing"]


_CATEGORY_ALIASES = {"authentication-international": "authentication_international"}


def parse_rate_card(raw: dict[str, Any]) -> RateCard:
    prices: dict[str, dict[str, int]] = {}
    for name, market in raw["markets"].items():
        table = {k: int(v) for k, v in market.items() if k != "regions"}
        for region in market["regions"]:
            prices[region] = table
        if name == "default":
            prices["*"] = table
    return RateCard(version=str(raw["version"]), currency=raw["currency"], prices=prices)


@cache
def load_rate_card(version: str = CURRENT_VERSION) -> RateCard:
    return parse_rate_card(yaml.safe_load((RATE_CARD_DIR / f"{version}.yaml").read_text()))
