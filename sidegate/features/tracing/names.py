"""The span and attribute names Sidegate's spans use: the OpenTelemetry semantic conventions' own
(GenAI, HTTP, error) wherever one exists, `sidegate.*` for the gateway's facts they have no name for.
Spelled here once (the semconv package marks its GenAI constants as moved out of it)."""

from __future__ import annotations

from sidegate.config import ProviderConfig
from sidegate.core.intake import EMBEDDINGS
from sidegate.errors import Api

# GenAI (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/)
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_write.input_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
CONTENT_EVENT = "gen_ai.client.inference.operation.details"
"""The semconv's event for captured content (opt-in): input, output and system messages."""
# HTTP, server and errors (stable)
HTTP_STATUS = "http.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
# The gateway's own
TENANT = "sidegate.tenant"
REQUEST_ID = "sidegate.request_id"
CLIENT_API = "sidegate.api"
CACHE = "sidegate.cache"
"""The cache's verdict (hit, miss, bypass, skip, error), as in the ledger."""
LANE = "sidegate.lane"
ATTEMPT = "sidegate.attempt"
"""A try span's attempt number (1 = the first provider of the chain)."""
ATTEMPTS = "sidegate.attempts"
"""The root's number of provider tries (0: the gateway answered itself)."""
FALLBACK = "sidegate.fallback"
"""The root's answer came from a later provider of the model's chain."""
SIDEGATE_PROVIDER = "sidegate.provider"
"""The provider as the config names it (gen_ai.provider.name is the semconv's kind of provider)."""
STAGE = "sidegate.stage"
FIRST_TOKEN_EVENT = "sidegate.first_token"
"""The moment a streamed try's first client-visible bytes went out (its TTFT)."""

CHAT = "chat"
GENERATE_CONTENT = "generate_content"
"""A Gemini API client's completion (`models/{model}:generateContent`): the semconv's own name."""


def operation(endpoint: object, api: object) -> str:
    """gen_ai.operation.name of a request, as the metrics name it: `embeddings`, `generate_content`
    for Gemini API clients, `chat` for chat completions, Messages and Responses."""
    if endpoint == EMBEDDINGS:
        return "embeddings"
    return GENERATE_CONTENT if api == Api.GEMINI.value else CHAT


def provider_name(p: ProviderConfig | None) -> str:
    """gen_ai.provider.name of a configured provider: the semconv's well-known values by API and
    host platform (a provider of another vendor's OpenAI-compatible API is `openai`: its wire format)."""
    if p is None:
        return "unknown"
    if p.api is Api.BEDROCK:
        return "aws.bedrock"
    if p.vertex is not None:
        return "gcp.vertex_ai"
    if p.api is Api.GEMINI:
        return "gcp.gemini"
    if p.api is Api.ANTHROPIC:
        return "anthropic"
    if p.azure is not None or ".azure.com" in p.base_url:
        return "azure.ai.openai"
    return "openai"
