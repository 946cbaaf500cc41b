"""What `iclsel serve` and `iclsel worker` share: common options, logging, settings with overrides."""

from __future__ import annotations

import argparse
import logging

from iclsel.settings import Settings, get_settings


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="default: $REDIS_URL")
    parser.add_argument("--model", help="default: $ICLSEL_MODEL")
    parser.add_argument("--log-level", default="info")


def start(args: argparse.Namespace) -> Settings:
    """Configure logging; the settings from the environment with the options given on the command line."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {key: value for key, value in (("redis_url", args.redis_url), ("model", args.model)) if value}
    return get_settings().model_copy(update=overrides)
