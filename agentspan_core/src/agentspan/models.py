"""Model names: ``"provider/model"`` strings parsed in one place, and a price table."""

from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple

KNOWN_PROVIDERS = frozenset(
    {"openai", "anthropic", "google", "gemini", "groq", "mistral", "ollama", "azure", "litellm",
     "bedrock", "deepseek", "xai", "together", "openrouter", "scripted"}
)
"""Provider prefixes recognised in ``"provider/model"`` names."""

# USD per million tokens (input, output). Public list prices; update as providers change them.
PRICES_PER_MTOK: dict[tuple[str, str], tuple[float, float]] = {
    ("openai", "gpt-4o"): (2.50, 10.00),
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-4.1"): (2.00, 8.00),
    ("openai", "gpt-4.1-mini"): (0.40, 1.60),
    ("openai", "gpt-4.1-nano"): (0.10, 0.40),
    ("openai", "o3-mini"): (1.10, 4.40),
    ("openai", "o4-mini"): (1.10, 4.40),
    ("openai", "gpt-5"): (1.25, 10.00),
    ("openai", "gpt-5-mini"): (0.25, 2.00),
    ("openai", "gpt-5-nano"): (0.05, 0.40),
    ("anthropic", "claude-sonnet-4-5"): (3.00, 15.00),
    ("anthropic", "claude-haiku-4-5"): (1.00, 5.00),
    ("anthropic", "claude-opus-4-1"): (15.00, 75.00),
    ("google", "gemini-2.5-flash"): (0.30, 2.50),
    ("google", "gemini-2.5-flash-lite"): (0.10, 0.40),
    ("google", "gemini-2.5-pro"): (1.25, 10.00),
    ("groq", "llama-3.3-70b-versatile"): (0.59, 0.79),
    ("mistral", "mistral-large-latest"): (2.00, 6.00),
}


class ModelId(NamedTuple):
    """A parsed model name."""

    provider: str
    model: str


def parse_model_id(name: str, *, default_provider: str = "openai") -> ModelId:
    """Splits ``"provider/model"`` (or ``"provider:model"``) into its parts.

    A name without a known provider prefix belongs to ``default_provider``
    (``"gpt-4o-mini"`` → ``openai/gpt-4o-mini``).
    """
    for sep in ("/", ":"):
        head, found, tail = name.partition(sep)
        if found and head.lower() in KNOWN_PROVIDERS and tail:
            provider = "google" if head.lower() == "gemini" else head.lower()
            return ModelId(provider, tail)
    return ModelId(default_provider, name)


_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)")
"""What a dated snapshot or alias adds to its family's name: ``-2024-07-18`` (OpenAI),
``-20250929`` (Anthropic), ``-0125``, ``-latest``. Anything else (``-mini``, ``-lite``) names
another model, priced only by its own row."""


@cache
def _prices(provider: str, model: str) -> tuple[float, float] | None:
    prices = PRICES_PER_MTOK.get((provider, model))
    if prices is not None:
        return prices
    # a dated snapshot ("gpt-4o-mini-2024-07-18") prices as its family ("gpt-4o-mini", not "gpt-4o")
    for (p, family), candidate in PRICES_PER_MTOK.items():
        if p == provider and model.startswith(family) and _SNAPSHOT.fullmatch(model, len(family)):
            return candidate
    return None


def price_usd(provider: str | None, model: str | None, input_tokens: int | None,
              output_tokens: int | None) -> float | None:
    """Prices one model call from the table; None when the model is not in it, or the call's
    tokens are not known."""
    if provider is None or model is None or (input_tokens is None and output_tokens is None):
        return None
    prices = _prices(provider, model)
    if prices is None:
        return None
    return ((input_tokens or 0) * prices[0] + (output_tokens or 0) * prices[1]) / 1_000_000
