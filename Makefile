# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: run smoke test lint bootstrap

bootstrap:
	@scripts/bootstrap

run: bootstrap
	uv run sessiongate run

smoke: bootstrap
	uv run sessiongate smoke

lint: bootstrap
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy

test: lint
	uv run pytest
