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
    # the first gpt-4o snapshot lists at twice the family's price (and no cached price): its own
    # row, which the exact lookup finds before the family rule would price it as "gpt-4o"
    ("openai", "gpt-4o-2024-05-13"): (5.00, 15.00),
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-4.1"): (2.00, 8.00),
    ("openai", "gpt-4.1-mini"): (0.40, 1.60),
    ("openai", "gpt-4.1-nano"): (0.10, 0.40),
    ("openai", "o3-mini"): (1.10, 4.40),
    ("openai", "o4-mini"): (1.10, 4.40),
    ("openai", "gpt-5"): (1.25, 10.00),
    ("openai", "gpt-5-mini"): (0.25, 2.00),
    ("openai", "gpt-5-nano"): (0.05, 0.40),
    ("anthropic", "claude-sonnet-4"): (3.00, 15.00),
    ("anthropic", "claude-sonnet-4-5"): (3.00, 15.00),
    ("anthropic", "claude-haiku-4-5"): (1.00, 5.00),
    ("anthropic", "claude-opus-4-1"): (15.00, 75.00),
    ("google", "gemini-2.5-flash"): (0.30, 2.50),
    ("google", "gemini-2.5-flash-lite"): (0.10, 0.40),
    ("google", "gemini-2.5-pro"): (1.25, 10.00),
    ("groq", "llama-3.3-70b-versatile"): (0.59, 0.79),
    ("mistral", "mistral-large-latest"): (2.00, 6.00),
}

# USD per million input tokens read from the provider's prompt cache, and written to it where the
# provider bills that apart (None: as ordinary input): (read, write, 1-hour write). Anthropic bills
# a write to its 5-minute cache at 1.25x the input price and one to its 1-hour cache at 2x (a
# 1-hour price of None: as the write price). Public list prices, as the table above; a model
# missing here prices its cached tokens as ordinary input (never less than it was billed).
CACHE_PRICES_PER_MTOK: dict[tuple[str, str], tuple[float | None, float | None, float | None]] = {
    ("openai", "gpt-4o"): (1.25, None, None),
    ("openai", "gpt-4o-mini"): (0.075, None, None),
    ("openai", "gpt-4.1"): (0.50, None, None),
    ("openai", "gpt-4.1-mini"): (0.10, None, None),
    ("openai", "gpt-4.1-nano"): (0.025, None, None),
    ("openai", "o3-mini"): (0.55, None, None),
    ("openai", "o4-mini"): (0.275, None, None),
    ("openai", "gpt-5"): (0.125, None, None),
    ("openai", "gpt-5-mini"): (0.025, None, None),
    ("openai", "gpt-5-nano"): (0.005, None, None),
    ("anthropic", "claude-sonnet-4"): (0.30, 3.75, 6.00),
    ("anthropic", "claude-sonnet-4-5"): (0.30, 3.75, 6.00),
    ("anthropic", "claude-haiku-4-5"): (0.10, 1.25, 2.00),
    ("anthropic", "claude-opus-4-1"): (1.50, 18.75, 30.00),
    ("google", "gemini-2.5-flash"): (0.075, None, None),
    ("google", "gemini-2.5-flash-lite"): (0.025, None, None),
    ("google", "gemini-2.5-pro"): (0.31, None, None),
}

# Long-context tier: (prompt tokens above which it applies, input, output), USD per million tokens.
# A call whose prompt (every input token, those read from or written to the prompt cache included:
# `price_usd`'s ``input_tokens``, which is how Anthropic counts its 200K threshold and Google its
# "prompts > 200k tokens") is over the threshold is billed at these prices for all its tokens,
# output included. Its cache prices scale with the input price: Anthropic applies its cache
# multipliers (0.1x read, 1.25x / 2x write) to the long-context input price, and Google lists the
# long tier's cached price at the same fraction of its input price as the short tier's. Public list
# prices, as the tables above.
LONG_CONTEXT_PRICES_PER_MTOK: dict[tuple[str, str], tuple[int, float, float]] = {
    ("anthropic", "claude-sonnet-4"): (200_000, 6.00, 22.50),
    ("anthropic", "claude-sonnet-4-5"): (200_000, 6.00, 22.50),
    ("google", "gemini-2.5-pro"): (200_000, 2.50, 15.00),
}


OPENAI_COMPATIBLE_HOSTS: dict[str, str] = {
    "api.groq.com": "groq", "api.mistral.ai": "mistral", "api.deepseek.com": "deepseek",
    "generativelanguage.googleapis.com": "google", "api.together.xyz": "together",
    "openrouter.ai": "openrouter", "api.x.ai": "xai", "api.anthropic.com": "anthropic",
}
"""Hosts of other providers' OpenAI-compatible APIs, and the provider each bills for: an OpenAI
client (openai-agents' OpenAI model classes, LangChain's ``ChatOpenAI``) pointed at one by its
``base_url`` is that provider's call (`provider_of_host`)."""


def provider_of_host(host: str) -> str:
    """The provider an OpenAI client reaching ``host`` calls: another provider's OpenAI-compatible
    API (`OPENAI_COMPATIBLE_HOSTS`), Azure OpenAI (``*.openai.azure.com``), else ``openai`` (OpenAI's
    API, a local or an unknown OpenAI-compatible server).

    Args:
        host: The client's base URL's host name, any case.
    """
    host = host.lower()
    if host.endswith(".openai.azure.com"):
        return "azure"
    return OPENAI_COMPATIBLE_HOSTS.get(host, "openai")


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


def explicit_model_id(text: str) -> ModelId:
    """Splits a ``"provider/model"`` label a user gave a model (``agentspan_model_id``) into its
    parts, whatever the provider is.

    Unlike `parse_model_id`, which reads a model's own name and so takes only a known provider's
    prefix as one (``"meta-llama/llama-4"`` is a name), the part before the first ``/`` is the
    provider here: the user chose it (``"custom/local-llm"`` → ``custom/local-llm``, not
    ``openai/custom/local-llm``). A known provider is spelled as `parse_model_id` spells it
    (``"Gemini/gemini-2.5-pro"`` → ``google/gemini-2.5-pro``), so the price table finds it.
    A label without ``/`` (or with nothing on one side of it) is a ``custom`` model's name,
    unless it is a known provider's ``"provider:model"``.

    Args:
        text: The label, ``"provider/model"``.

    Returns:
        The provider and the model's name.
    """
    head, found, tail = text.partition("/")
    if found and head and tail:
        known = head.lower()
        if known in KNOWN_PROVIDERS:
            return ModelId("google" if known == "gemini" else known, tail)
        return ModelId(head, tail)
    return parse_model_id(text, default_provider="custom")


_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)")
"""What a dated snapshot or alias adds to its family's name: ``-2024-07-18`` (OpenAI),
``-20250929`` (Anthropic), ``-0125``, ``-latest``. Anything else (``-mini``, ``-lite``) names
another model, priced only by its own row."""


class Prices(NamedTuple):
    """A model's list prices, USD per million tokens."""

    input: float
    output: float
    cached_input: float
    """An input token read from the provider's prompt cache (the input price where the table has none)."""
    cache_write: float
    """An input token written to the provider's prompt cache, where billed apart (Anthropic's
    5-minute cache; the input price elsewhere)."""
    cache_write_1h: float
    """An input token written to Anthropic's 1-hour prompt cache (the write price elsewhere)."""
    long_context_above: int = 0
    """The prompt size (tokens) above which `long_context` applies (where there is one)."""
    long_context: Prices | None = None
    """The prices of a call whose prompt is over `long_context_above` tokens (None: no such tier)."""


@cache
def _prices(provider: str, model: str) -> Prices | None:
    key = (provider, model)
    if key not in PRICES_PER_MTOK:
        # a dated snapshot ("gpt-4o-mini-2024-07-18") prices as its family ("gpt-4o-mini", not "gpt-4o")
        key = next(((p, family) for p, family in PRICES_PER_MTOK
                    if p == provider and model.startswith(family) and _SNAPSHOT.fullmatch(model, len(family))), key)
    prices = PRICES_PER_MTOK.get(key)
    if prices is None:
        return None
    cached, written, written_1h = CACHE_PRICES_PER_MTOK.get(key, (None, None, None))
    write = prices[0] if written is None else written
    base = Prices(prices[0], prices[1], prices[0] if cached is None else cached, write,
                  write if written_1h is None else written_1h)
    tier = LONG_CONTEXT_PRICES_PER_MTOK.get(key)
    if tier is None:
        return base
    above, long_input, long_output = tier
    scale = long_input / base.input  # the cache prices scale as the input price (see the table)
    long = Prices(long_input, long_output, base.cached_input * scale, base.cache_write * scale,
                  base.cache_write_1h * scale)
    return base._replace(long_context_above=above, long_context=long)


def price_usd(provider: str | None, model: str | None, input_tokens: int | None, output_tokens: int | None,
              cached_input_tokens: int | None = None, cache_write_tokens: int | None = None,
              cache_write_1h_tokens: int | None = None) -> float | None:
    """Prices one model call from the table; None when the model is not in it, or the call's
    tokens are not known.

    Args:
        provider: The provider the call was billed by.
        model: The model's name there.
        input_tokens: Every input token of the call, those read from or written to the
            provider's prompt cache included (as OpenAI, Gemini and LangChain count them): the
            prompt whose size picks a model's long-context prices
            (`LONG_CONTEXT_PRICES_PER_MTOK`).
        output_tokens: The output tokens (reasoning included).
        cached_input_tokens: Of ``input_tokens``, those read from the prompt cache (billed at the
            cached price: 10-50% of the input price).
        cache_write_tokens: Of ``input_tokens``, those written to the prompt cache, where the
            provider bills them apart (Anthropic: 125% of the input price for its 5-minute cache).
        cache_write_1h_tokens: Of ``cache_write_tokens``, those written to Anthropic's 1-hour
            cache (200% of the input price).
    """
    if provider is None or model is None or (input_tokens is None and output_tokens is None):
        return None
    prices = _prices(provider, model)
    if prices is None:
        return None
    total = input_tokens or 0  # (a report of more cached tokens than input ones bills no more than the input)
    if prices.long_context is not None and total > prices.long_context_above:
        prices = prices.long_context  # a long prompt: every token of the call at the long tier's prices
    cached = min(max(cached_input_tokens or 0, 0), total)
    written = min(max(cache_write_tokens or 0, 0), total - cached)
    one_hour = min(max(cache_write_1h_tokens or 0, 0), written)  # (of the writes: never more than them)
    uncached = total - cached - written
    return (uncached * prices.input + cached * prices.cached_input + (written - one_hour) * prices.cache_write
            + one_hour * prices.cache_write_1h + (output_tokens or 0) * prices.output) / 1_000_000
