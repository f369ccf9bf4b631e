"""Configuration: the one `BridgeConfig` (`schema`), how it is loaded from defaults, a TOML file,
the environment and flags (`load`), its value parsers (`parsers`) and key material (`tokens`).

Receives raw text from the command line, the environment and files; hands every other part a
frozen, validated `BridgeConfig`. Must not exit the process, open sockets or print a token.
"""

from .load import ENV_PREFIX, add_config_arguments, fields_of, load_config
from .schema import COMMANDS, BridgeConfig
from .tokens import NamedToken

__all__ = ["COMMANDS", "ENV_PREFIX", "BridgeConfig", "NamedToken", "add_config_arguments", "fields_of", "load_config"]
