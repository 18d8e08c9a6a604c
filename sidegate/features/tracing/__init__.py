"""tracing: Sidegate's own OpenTelemetry spans (a root per request, its gateway stages and provider
tries) with the GenAI semantic conventions, exported off the request path (docs/observability.md,
"Traces")."""
